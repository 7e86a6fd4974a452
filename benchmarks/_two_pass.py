"""The naive two-pass method, reimplemented here as a series for ``bench_ttft.py`` (the peer that
SASA's guard is compared with; it is not part of the library).

Pass 1 is the normal prefill (hooks keep ``H`` after blocks ``s`` and ``f``); pass 2 runs the
*whole* model again over the prompt with block ``s``'s output replaced by the projection of
``H_s`` onto ``H_f``, and the probe reads the last prompt token's logits. This is the cheapest
honest form of the method: pass 1 *is* ``generate``'s own prefill (so the prompt is not encoded a
third time), and pass 2 runs in a forward hook right after it, before the first token is chosen,
as a guard that decides before answering must. Its probe never fires, so decoding then continues
exactly as ``model.generate`` would.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional

import torch
from _runner import import_sasa_kernels
from torch import nn

from sasa.bench import Series

sk = import_sasa_kernels()

#: What pass 2 re-reads from the generate call's keyword arguments.
PROMPT_KEYS = ("input_ids", "attention_mask", "pixel_values", "image_sizes")


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _with_hidden(output: Any, hidden: torch.Tensor) -> Any:
    return (hidden,) + tuple(output[1:]) if isinstance(output, tuple) else hidden


class TwoPass(Series):
    """Two full forwards per prompt, the second with block ``safety``'s output projected onto
    block ``fused``'s (``sk.project``, mode replace); a logits probe that never fires."""

    def __init__(self, safety: int, fused: int, name: str = "two-pass"):
        self.safety, self.fused, self.name = safety, fused, name
        self.last_logits: Optional[torch.Tensor] = None

    def expected_ttft_ratio(self, base_ttft_ms: float, base_per_token_ms: float) -> float:
        return 2.0  # one more full forward over the prompt

    @contextlib.contextmanager
    def session(self, model: nn.Module) -> Iterator[Callable[..., Any]]:
        layers = model.get_decoder().layers
        vocab = int(model.get_output_embeddings().weight.shape[0])
        device = next(model.parameters()).device
        weight, bias = torch.zeros(vocab, device=device), torch.tensor(-30.0, device=device)

        def generate(**kwargs: Any) -> Any:
            prompt = {k: v for k, v in kwargs.items() if k in PROMPT_KEYS}
            state: dict[Any, Any] = {"prefill_done": False, "in_pass_2": False}
            handles = []

            def keep(index: int) -> Callable[..., None]:
                def hook(module: nn.Module, args: Any, output: Any) -> None:
                    if not state["prefill_done"]:
                        state[index] = _hidden(output)
                return hook

            def pass_2(module: nn.Module, args: Any, output: Any) -> None:
                if state["prefill_done"] or state["in_pass_2"]:
                    return
                state["prefill_done"] = True
                projected = sk.project(state[self.safety], state[self.fused], mode="replace")
                swap = layers[self.safety].register_forward_hook(lambda m, a, o: _with_hidden(o, projected))
                state["in_pass_2"] = True
                try:
                    logits = model(**prompt, use_cache=False, logits_to_keep=1).logits[:, -1].float()
                finally:
                    swap.remove()
                    state["in_pass_2"] = False
                self.last_logits = logits  # what the probe read (tests compare it with the guard's)
                flagged = torch.sigmoid(logits @ weight + bias) >= 0.5
                if bool(flagged.any()):
                    raise RuntimeError("two-pass: its probe fired on a timed row (it must never)")

            try:
                for index in (self.safety, self.fused):
                    handles.append(layers[index].register_forward_hook(keep(index)))
                handles.append(model.register_forward_hook(pass_2))
                return model.generate(**kwargs)
            finally:
                for handle in handles:
                    handle.remove()

        yield generate
