"""Guarded generation: score the very prefill ``generate`` runs, then stop and refuse flagged rows.

One call of the model's own ``generate``: hooks observe its prefill (the first forward), the
augmented pass and probe score every row right there, and a stopping criterion ends flagged rows
after that first step; passed rows continue in the same call, so their tokens are bit-identical to
the unguarded model's. Afterwards flagged rows' tokens are replaced by the refusal.

Fail-closed rules: settings under which the first forward is not the whole prompt's prefill (beam
search, several return sequences, assisted or chunked prefill, a caller's cache) are refused
before anything runs; a prefill that was not observed, was shorter than the prompt, or whose
scoring raised, flags every row (unless ``fail_closed=False``).
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from sasa.guard.capture import GuardPart
from sasa.guard.refusal_output import HeldStreamer, blank_step_outputs, write_refusals
from sasa.hf import compat
from sasa.metrics import flag_rows

logger = logging.getLogger("sasa")


def decide(probs: Tensor, probe: Any, config: Any) -> Tensor:
    """Flagged rows ``[B]`` bool: any probe at or over its threshold (the probe's, else the config's),
    and a NaN score (a failed or uncomputable one) flagged unless ``config.fail_closed`` is False,
    with a warning naming the rows either way."""
    threshold = probe.threshold if probe.threshold is not None else torch.tensor(config.threshold)
    flagged = flag_rows(probs, threshold.to(probs.device), fail_closed=config.fail_closed)
    nan = torch.isnan(probs).any(dim=1)
    if bool(nan.any()):
        rows = nan.nonzero().flatten().tolist()
        outcome = "flagged (fail_closed=True)" if config.fail_closed else "passed (fail_closed=False)"
        logger.warning("sasa: NaN score for row(s) %s; %s", rows, outcome)
    return flagged


@dataclass
class SASAGenerateOutput:
    """What :meth:`SASAGuard.generate` returns.

    Attributes:
        sequences: ``[B, T + N]`` prompt and new tokens, like ``model.generate``. Flagged rows hold
            the tokenized refusal text after the prompt (padding when no tokenizer was given),
            then padding. The refusal is cut to the call's new-token budget (``max_new_tokens``);
            if it is longer than the generated part, every row is extended with padding up to that
            budget at most; a passed row is otherwise exactly ``model.generate``'s row.
        flagged: bool ``[B]``.
        scores: float32 ``[B, C]`` probabilities, one column per probe (:attr:`SASAGuard.categories`);
            NaN where scoring failed.
        refusal_text: the text a flagged row answers.
        generate_output: what the model's own ``generate`` returned (for its extra fields; flagged
            rows' per-step ``scores``/``logits`` there are NaN).
    """

    sequences: Tensor
    flagged: Tensor
    scores: Tensor
    refusal_text: str
    generate_output: Any = None


_SUPPORTED_MODES = ("greedy_search", "sample")
# generate's new-token budget when neither max_new_tokens nor max_length is set anywhere.
_DEFAULT_NEW_TOKENS = 20
# A caller's cache means the first forward would not be the prompt's full prefill.
_CACHE_ARGS = ("past_key_values", "cache")
# generate() arguments that switch to a decoding loop whose first forward is not one full prefill.
_REFUSED_ARGS = {
    "assistant_model": "assisted generation",
    "custom_generate": "a custom generation loop",
    "synced_gpus": "synced GPUs",
}


@dataclass
class PrefillDecision:
    """Filled in by the prefill hook of one guarded ``generate`` call."""

    batch: int
    num_probes: int
    device: torch.device
    prompt_length: int
    done: bool = False
    probs: Tensor = field(init=False)
    flagged: Optional[Tensor] = None

    def __post_init__(self) -> None:
        self.probs = torch.full((self.batch, self.num_probes), float("nan"), device=self.device)


def check_generate_settings(model: nn.Module, kwargs: dict[str, Any], scope: str, batch: int) -> compat.GenerationConfig:
    """Refuse (``ValueError``) every setting under which the guard could not score the real prefill."""
    for name, what in _REFUSED_ARGS.items():
        if kwargs.get(name) not in (None, False):
            raise ValueError(f"{name}: sasa's guarded generate does not support {what}")
    for name in _CACHE_ARGS:
        if kwargs.get(name) is not None:
            raise ValueError(f"{name}: guarded generate runs its own prefill; do not pass a cache")
    config = compat.effective_generation_config(model, kwargs)
    mode = compat.generation_mode(config, kwargs.get("assistant_model"))
    if mode not in _SUPPORTED_MODES:
        beams = "beam" in mode
        raise ValueError(
            f"{'num_beams' if beams else 'generation_config'}: sasa's guarded generate supports greedy decoding and "
            f"sampling only; these settings (after merging generation_config=, the model's generation_config and "
            f"the arguments) select {f'num_beams={config.num_beams}' if beams else repr(mode)}"
        )
    if (config.num_return_sequences or 1) != 1:
        raise ValueError(
            f"num_return_sequences: sasa's guarded generate supports 1 only, got {config.num_return_sequences} "
            "(after merging generation_config=, the model's generation_config and the arguments)"
        )
    if getattr(config, "cache_implementation", None) == "paged":
        raise ValueError(
            "cache_implementation: 'paged' switches generate to continuous batching; call model.generate_batch(...) "
            "or model.init_continuous_batching() instead (guarded: each request is scored on its own prefill)"
        )
    if getattr(config, "prefill_chunk_size", None) is not None:
        raise ValueError("prefill_chunk_size: chunked prefill is not supported by sasa's guarded generate")
    if scope == "last":
        if config.use_cache is False:
            raise ValueError("use_cache: scope='last' reads the prefill's keys and values; use_cache=False leaves none")
        implementation = getattr(config, "cache_implementation", None)
        if implementation not in (None, "dynamic"):
            raise ValueError(
                f"cache_implementation: scope='last' reads the prefill's keys and values from a dynamic cache; "
                f"{implementation!r} is not supported (use scope='all')"
            )
    if kwargs.get("streamer") is not None and batch != 1:
        raise ValueError(f"streamer: streaming supports a batch of one prompt, got {batch} (as transformers' streamers do)")
    return config


def new_token_budget(config: compat.GenerationConfig, prompt_length: int, from_input_ids: bool) -> int:
    """The most new tokens ``generate`` makes per row under ``config`` (resolved as ``generate`` does):
    ``max_new_tokens``; else what ``max_length`` leaves after the prompt (with ``inputs_embeds`` only,
    ``max_length`` counts new tokens); else transformers' default of 20 new tokens."""
    if config.max_new_tokens is not None:
        return max(int(config.max_new_tokens), 0)
    if config.max_length is not None:
        return max(int(config.max_length) - (prompt_length if from_input_ids else 0), 0)
    return _DEFAULT_NEW_TOKENS


class PrefillHook(GuardPart):
    """A forward hook on the top-level model, routed to the guarded call active in this context."""

    def __init__(self, model: nn.Module):
        self._active: contextvars.ContextVar[Optional[Callable[[], None]]] = contextvars.ContextVar(
            "sasa_prefill", default=None
        )
        self._handle = model.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        callback = self._active.get()
        if callback is not None:
            callback()

    def activate(self, callback: Callable[[], None]) -> contextvars.Token:
        return self._active.set(callback)

    def deactivate(self, token: contextvars.Token) -> None:
        self._active.reset(token)

    def remove(self) -> None:
        self._handle.remove()


class StopFlagged(compat.StoppingCriteria):
    """Marks flagged rows finished right after the prefill's token, so they spend no more steps of
    their own and ``generate`` ends as soon as every passed row is done."""

    def __init__(self, decision: PrefillDecision):
        self.decision = decision

    def __call__(self, input_ids: Tensor, scores: Any, **kwargs: Any) -> Tensor:
        flagged = self.decision.flagged
        if flagged is None:  # the prefill hook never ran: fail closed
            return torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return flagged.to(input_ids.device)


def hold_streamer(kwargs: dict[str, Any], decision: PrefillDecision, refusal: list[int]) -> None:
    """Replace ``kwargs["streamer"]`` by a :class:`HeldStreamer` around it (in place)."""
    streamer = kwargs.get("streamer")
    if streamer is None:
        return

    def decided() -> Optional[bool]:
        return None if decision.flagged is None else bool(decision.flagged[0])

    kwargs["streamer"] = HeldStreamer(streamer, decided, refusal)


def end_stream_on_error(kwargs: dict[str, Any]) -> None:
    """A caller reading a streamer in another thread would wait forever if generate raised first."""
    streamer = kwargs.get("streamer")
    if streamer is not None:
        try:
            # A held stream ends with nothing in it: neither the model's tokens nor a refusal.
            (streamer.inner if isinstance(streamer, HeldStreamer) else streamer).end()
        except Exception:  # noqa: BLE001 - the original error is the one worth raising
            logger.debug("sasa: ending the streamer after an error failed", exc_info=True)


def guarded_generate(guard: Any, kwargs: dict[str, Any]) -> tuple[Any, PrefillDecision, Tensor]:
    """Run the model's own generate under ``guard``; (its output, the decision, guarded sequences)."""
    kwargs = dict(kwargs)
    try:
        guard._check_active()
        probe = guard._require_probe()
        batch, length, last_pos = guard._check_call_inputs(kwargs)
        settings = check_generate_settings(guard.model, kwargs, guard.config.scope, batch)
    except BaseException:
        end_stream_on_error(kwargs)
        raise
    # A refusal is an answer like any other: it never takes more new tokens than generate may.
    refusal = guard._refusal_ids[: new_token_budget(settings, length, "input_ids" in kwargs)]
    decision = PrefillDecision(batch, len(probe.bias), last_pos.device, length)
    recorder, ride = guard._recorder(last_pos)

    def after_prefill() -> None:
        if decision.done:
            return
        decision.done = True
        try:
            normal = recorder.result
            guard._check_observed(normal, length)
            decision.probs = guard._score_from(normal, last_pos, ride)
        except Exception:  # noqa: BLE001 - a failed score must flag, never crash the batch
            logger.exception("sasa: scoring the prefill failed; treating the scores as NaN")
        finally:
            recorder.finish()  # free the prefill's states; later forwards are decode steps
            if ride is not None:
                ride.release()
        # Tensor parallel: every rank must stop the same rows, or their generate loops (and the
        # model's collectives) part ways; a row flagged or NaN on any rank counts on all of them.
        decision.probs = guard._agree(decision.probs)
        decision.flagged = decide(decision.probs, probe, guard.config)

    criteria = compat.StoppingCriteriaList(kwargs.pop("stopping_criteria", None) or [])
    criteria.append(StopFlagged(decision))
    hold_streamer(kwargs, decision, refusal)
    token = guard._prefill.activate(after_prefill)
    try:
        with torch.no_grad(), guard._hooks.recording(recorder), guard._entry.allowed():
            out = guard._generate_patch.original(**kwargs, stopping_criteria=criteria)
    except BaseException:
        end_stream_on_error(kwargs)
        raise
    finally:
        guard._prefill.deactivate(token)
    if not decision.done:
        logger.warning("sasa: generate returned without a prefill the guard could observe; every row is flagged")
        decision.flagged = decide(decision.probs, probe, guard.config)  # NaN scores: fail closed
    sequences = out if isinstance(out, Tensor) else out.sequences
    prompt_width = length if "input_ids" in kwargs else 0
    pad = guard._pad_id if guard._pad_id is not None else (guard._eos_id if guard._eos_id is not None else 0)
    flagged = decision.flagged.to(sequences.device)
    guarded = write_refusals(sequences, flagged, prompt_width, refusal, pad)
    if not isinstance(out, Tensor):
        blank_step_outputs(out, flagged)
    return out, decision, guarded
