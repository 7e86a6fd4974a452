"""What gets timed: one ``generate`` call, and the *series* (ways of generating) compared.

A series opens a session on a model (set-up, not timed), yields the ``generate`` callable to time,
and closes it (tear-down, not timed). :class:`Unguarded` times the model with no guard applied;
:class:`Guarded` applies :func:`sasa.apply_sasa` for the session and removes it afterwards, so the
unguarded series of the same run never meets a guard. Benchmarks add their own series (for example
a two-pass reference method) by subclassing :class:`Series`.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional

import torch
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList

from sasa.config import SASAConfig

__all__ = ["GenerateTiming", "Guarded", "Series", "TimedRowFlagged", "Unguarded", "passing_probe",
           "time_generate"]

#: The bias of :func:`passing_probe`: sigmoid(-30) is about 1e-13, far below any useful threshold.
PASSING_BIAS = -30.0


@dataclass(frozen=True)
class GenerateTiming:
    """One ``generate`` call.

    Attributes:
        ttft_ms: from the call to the first new token (prefill, the guard's scoring, one token).
        per_token_ms: median gap between consecutive new tokens (one decode step); NaN with one.
        new_tokens: new tokens per row.
    """

    ttft_ms: float
    per_token_ms: float
    new_tokens: int


class _TokenClock(StoppingCriteria):
    """Stamps the time at every new token (``generate`` calls its stopping criteria once per
    token); never stops anything. On CUDA it synchronizes first, so a stamp means the token exists."""

    def __init__(self, device: torch.device):
        self.stamps: list[float] = []
        self._cuda = device.type == "cuda"

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        if self._cuda:
            torch.cuda.synchronize(input_ids.device)
        self.stamps.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def model_device(model: nn.Module) -> torch.device:
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


def generation_kwargs(model: nn.Module, new_tokens: int) -> dict[str, Any]:
    """Greedy, exactly ``new_tokens`` tokens per row (an early end-of-sequence would shorten a
    series' decode and fake its cost), with a pad id so ``generate`` does not warn."""
    kwargs: dict[str, Any] = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None and gen.eos_token_id is not None:
        eos = gen.eos_token_id
        kwargs["pad_token_id"] = eos[0] if isinstance(eos, (list, tuple)) else eos
    return kwargs


def time_generate(generate: Callable[..., Any], inputs: Mapping[str, Any], new_tokens: int,
                  device: torch.device, **gen_kwargs: Any) -> tuple[GenerateTiming, Any]:
    """Call ``generate(**inputs, **gen_kwargs, stopping_criteria=[clock])`` once and time it.

    Returns the timing and what ``generate`` returned. Raises ``RuntimeError`` when a row did not
    produce ``new_tokens`` tokens (the per-token cost would be wrong).
    """
    clock = _TokenClock(device)
    kwargs = dict(inputs)
    kwargs.update(gen_kwargs)
    kwargs["stopping_criteria"] = StoppingCriteriaList([clock])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = generate(**kwargs)
    stamps = clock.stamps
    if len(stamps) != new_tokens:
        raise RuntimeError(f"generate produced {len(stamps)} new token(s), expected {new_tokens}")
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    per_token = statistics.median(gaps) * 1e3 if gaps else float("nan")
    return GenerateTiming((stamps[0] - start) * 1e3, per_token, new_tokens), out


class TimedRowFlagged(RuntimeError):
    """A row of a timed guarded call was flagged: it stopped after one token, so the call's
    per-token cost is not the guard's. Time with a probe that passes every row."""


class Series:
    """A named way of generating. Subclasses implement :meth:`session`.

    ``expected_ttft_ratio`` may return the cost model's time-to-first-token ratio against the
    unguarded series (NaN: no model).
    """

    name: str = "series"

    def session(self, model: nn.Module) -> contextlib.AbstractContextManager[Callable[..., Any]]:
        raise NotImplementedError

    def expected_ttft_ratio(self, base_ttft_ms: float, base_per_token_ms: float) -> float:
        return float("nan")


class Unguarded(Series):
    """``model.generate`` with no guard applied (the baseline)."""

    name = "unguarded"

    @contextlib.contextmanager
    def session(self, model: nn.Module) -> Iterator[Callable[..., Any]]:
        yield model.generate


def passing_probe(model: nn.Module, config: SASAConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``(weight [1, F], bias [1])`` probe for ``config`` that never fires: weight 0, bias -30.

    ``F`` is the output-head width for ``feature="logits"`` and the hidden size for ``"hidden"``.
    The guard does all its work (augmented pass, fold of a logits probe, probe kernel) and every
    row passes, so each timed row generates every token.
    """
    if config.feature == "logits":
        head = model.get_output_embeddings()
        if head is None or getattr(head, "weight", None) is None:
            raise ValueError("config.feature: 'logits' needs an output head; this model has none (use 'hidden')")
        width = int(head.weight.shape[0])
    else:
        width = int(model.config.get_text_config().hidden_size)
    return torch.zeros(1, width), torch.full((1,), PASSING_BIAS)


class Guarded(Series):
    """``guard.generate`` of a guard applied (untimed) for the session and removed afterwards.

    Args:
        config: the settings to time. With ``probe=None`` (the default) the guard gets
            :func:`passing_probe` for this config, and the threshold is set to 0.5 so it cannot fire.
        probe: a real probe instead (a ``SASAProbe``, a saved probe directory or a pair); with a
            ``SASAProbe`` or directory, leave ``config`` as ``None`` to use the probe's own.
        tokenizer: passed to :func:`sasa.apply_sasa` (tokenizes the refusal text).
        require_pass: raise :class:`TimedRowFlagged` when a timed row was flagged (default True).
        name: the series name (default ``"sasa-<scope>"``).
    """

    def __init__(self, config: Optional[SASAConfig] = None, *, probe: Any = None, tokenizer: Any = None,
                 require_pass: bool = True, name: Optional[str] = None):
        if config is None and probe is None:
            raise TypeError("Guarded: give a config (timed with a probe that never fires) or a probe")
        if config is not None and not isinstance(config, SASAConfig):
            raise TypeError(f"config: expected a SASAConfig, got {type(config).__name__}")
        if config is not None and probe is None:
            config = config.replace(threshold=0.5)
        self.config = config
        self.probe = probe
        self.tokenizer = tokenizer
        self.require_pass = require_pass
        scope = config.scope if config is not None else getattr(getattr(probe, "config", None), "scope", "?")
        self.name = name or f"sasa-{scope}"
        self.scope = scope
        self._geometry: Optional[tuple[int, int]] = None  # (blocks L, safety block s), seen in a session

    @contextlib.contextmanager
    def session(self, model: nn.Module) -> Iterator[Callable[..., Any]]:
        from sasa.guard.apply import apply_sasa
        from sasa.probe.sasa_probe import SASAProbe

        if isinstance(self.probe, (str, os.PathLike)):  # load (and fingerprint-check) once
            self.probe = SASAProbe.load(self.probe, model=model)
        probe = self.probe if self.probe is not None else passing_probe(model, self.config)
        config = self.config if self.config is not None else getattr(self.probe, "config", None)
        guard = apply_sasa(model, self.config, probe=probe, tokenizer=self.tokenizer)
        if config is not None:
            self.scope = config.scope
            self._geometry = (int(model.config.get_text_config().num_hidden_layers), config.safety_layer)

        def generate(**kwargs: Any) -> Any:
            out = guard.generate(**kwargs)
            if self.require_pass and bool(out.flagged.any()):
                rows = out.flagged.nonzero().flatten().tolist()
                raise TimedRowFlagged(f"{self.name}: row(s) {rows} were flagged and stopped after one token; "
                                      "time with a probe that passes every row (Guarded's default)")
            return out

        try:
            yield generate
        finally:
            guard.remove()

    def expected_ttft_ratio(self, base_ttft_ms: float, base_per_token_ms: float) -> float:
        """``scope="all"``: ``1 + (L-2-s)/L + 1/L * per_token / ttft`` (blocks ``s+1..L-2`` again
        over the prompt, the last one for one token per row; its key/value projections over the
        prompt are left out). ``scope="last"``: ``1 + (L-1-s)/L * per_token / ttft`` (blocks
        ``s+1..L-1`` for one token per row, about that share of one decode step)."""
        if self._geometry is None:
            return float("nan")
        blocks, safety = self._geometry
        if not (base_ttft_ms > 0 and base_per_token_ms == base_per_token_ms):
            return float("nan")
        step = base_per_token_ms / base_ttft_ms  # one decode step, in prefills
        if self.scope == "all":
            return 1.0 + (blocks - 2 - safety) / blocks + step / blocks
        return 1.0 + (blocks - 1 - safety) / blocks * step
