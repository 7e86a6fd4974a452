"""What a flagged row answers: the refusal text, as tokens in ``sequences`` and in a stream.

Nothing the model generated for a flagged row may reach the caller: its tokens are replaced by the
refusal in the returned sequences, its per-step scores/logits (when ``generate`` was asked for them)
are blanked to NaN, and a streamer is held back until the decision (:class:`HeldStreamer`), then
given either the refusal or exactly what the model streamed.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from sasa.hf import compat


def tokenize_refusal(tokenizer: Any, text: str) -> list[int]:
    """The refusal's token ids followed by EOS (a refusal ends the answer); ``[]`` without a tokenizer."""
    if tokenizer is None:
        return []
    tok = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps its tokenizer
    if not callable(tok):
        raise TypeError(f"tokenizer: expected a tokenizer or processor, got {type(tokenizer).__name__}")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    ids = [int(i) for i in ids]
    eos = getattr(tok, "eos_token_id", None)
    if isinstance(eos, int):
        ids.append(eos)
    return ids


def write_refusals(sequences: Tensor, flagged: Tensor, prompt_width: int, refusal: list[int], pad: int) -> Tensor:
    """``sequences`` with each flagged row's answer replaced by ``refusal`` then ``pad``.

    If the refusal is longer than the generated part, every row is extended with ``pad`` (the caller
    cuts ``refusal`` to the new-token budget, so the width never exceeds what ``generate`` may make).
    """
    if not bool(flagged.any()):
        return sequences
    width = max(sequences.shape[1], prompt_width + len(refusal))
    out = torch.full((sequences.shape[0], width), pad, dtype=sequences.dtype, device=sequences.device)
    out[:, : sequences.shape[1]] = sequences
    rows = flagged.nonzero().flatten().to(sequences.device)
    out[rows, prompt_width:] = pad
    if refusal:
        ids = torch.tensor(refusal, dtype=sequences.dtype, device=sequences.device)
        out[rows, prompt_width : prompt_width + len(refusal)] = ids
    return out


def blank_step_outputs(output: Any, flagged: Tensor) -> None:
    """NaN-fill flagged rows of ``generate``'s per-step ``scores``/``logits`` (they would reveal the answer)."""
    rows = flagged.nonzero().flatten()
    for name in ("scores", "logits"):
        steps = getattr(output, name, None)
        if isinstance(steps, (tuple, list)):
            for step in steps:
                if isinstance(step, Tensor) and step.is_floating_point() and step.shape[0] == flagged.shape[0]:
                    step[rows.to(step.device)] = float("nan")


class HeldStreamer(compat.BaseStreamer):
    """Wraps the caller's streamer (batch size 1) and holds everything until the guard decides.

    ``decision()`` returns ``None`` before the prefill was scored, else whether the row is flagged.
    Until then every ``put`` is buffered. Then a passed row's buffer is released and later puts pass
    straight through (the stream is exactly the unguarded model's); a flagged row streams the prompt
    (so ``skip_prompt`` behaves as usual), then the refusal tokens, and nothing the model made. If
    the stream ends before any decision, the row counts as flagged (fail closed).
    """

    def __init__(self, inner: Any, decision: Callable[[], Optional[bool]], refusal: list[int]):
        self.inner = inner
        self._decision = decision
        self._refusal = refusal
        self._held: list[Tensor] = []
        self._released = False
        self._refused = False
        self._lock = threading.Lock()

    def put(self, value: Tensor) -> None:
        with self._lock:
            if not self._released:
                self._held.append(value)
                flagged = self._decision()
                if flagged is None:
                    return
                self._release(flagged)
                return
            if not self._refused:
                self.inner.put(value)

    def end(self) -> None:
        with self._lock:
            if not self._released:
                flagged = self._decision()
                self._release(True if flagged is None else flagged)
        self.inner.end()

    def _release(self, flagged: bool) -> None:
        self._released = True
        held, self._held = self._held, []
        if not flagged:
            for value in held:
                self.inner.put(value)
            return
        self._refused = True
        if held:
            self.inner.put(held[0])  # the prompt, always the first put
        if self._refusal:
            self.inner.put(torch.tensor([self._refusal], dtype=torch.long))
