"""Continuous batching guarded: every request is scored on its own whole-prompt prefill before it joins.

transformers' continuous batching (``model.init_continuous_batching()`` and what is built on it:
``continuous_batching_context_manager``, ``generate_batch``, ``transformers serve
--continuous-batching``) runs requests that arrive at different times in shared batches: a request's
prompt may be prefilled in chunks, next to other requests' decode steps, over a paged cache. The
guard cannot ride along inside that prefill exactly, so it does not try: the manager that the
guarded ``init_continuous_batching`` returns has an ``add_request`` (on that manager instance; the
manager's own ``add_requests`` calls it too) that first scores the prompt with a normal forward of
its own (:meth:`sasa.SASAGuard.score`, one prompt, its own prefill), then

- passes it to the manager unchanged, so its output is exactly the unguarded manager's; or
- when it is flagged (a probe at or over its threshold, a NaN score, or scoring that raised: fail
  closed), never gives it to the model: the manager's readers get one finished output holding the
  refusal tokens (cut to the request's ``max_new_tokens``), under the request's id.

Cost: one extra prefill per request, in the thread that adds it. Refused by name, never run
unguarded: several return sequences (forked children the guard would not see) and tensor-parallel
models (scoring on the driver rank alone would leave the other ranks' collectives waiting).
"""

from __future__ import annotations

import functools
import inspect
import logging
import weakref
from typing import Any, Optional

import torch
from torch import nn

from sasa.guard.capture import GuardPart, InstanceAttribute
from sasa.guard.entry_check import EntryCheck
from sasa.guard.generate import decide
from sasa.guard.resolve import model_device
from sasa.hf import compat

logger = logging.getLogger("sasa")

_ATTR = "init_continuous_batching"
_ADD = "add_request"
_CACHED = "_cached_continuous_batching_manager"


def prompt_tokens(input_ids: Any) -> list[int]:
    """A request's prompt as a flat list of ints: a list, a 1-D tensor, or one row of a 2-D one."""
    values = input_ids.tolist() if hasattr(input_ids, "tolist") else list(input_ids)
    if values and isinstance(values[0], list):
        if len(values) != 1:
            raise ValueError(f"input_ids: a continuous-batching request is one prompt, got {len(values)} rows")
        values = values[0]
    return [int(value) for value in values]


class BatchingPatch(GuardPart):
    """The guarded ``model.init_continuous_batching`` and the guarded managers it hands out."""

    def __init__(self, guard: Any, entry: EntryCheck):
        model: nn.Module = guard.model
        self.guard, self.entry, self.model = guard, entry, model
        self._managers: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._patch: Optional[InstanceAttribute] = None
        original = getattr(model, _ATTR, None)
        if original is None:  # transformers without continuous batching: nothing to guard
            return

        @functools.wraps(original)
        def init_continuous_batching(*args: Any, **kwargs: Any) -> Any:
            guard._check_active()
            self._check_supported()
            before = compat.attn_implementation(model)
            with entry.allowed():  # the manager asks the model for its logits processors
                manager = original(*args, **kwargs)
            if compat.batching_switched_attention(model, before):
                self._refuse_switched(manager, before)
            self.guard_manager(manager)
            return manager

        self._patch = InstanceAttribute(model, _ATTR, init_continuous_batching)
        # A manager the model kept from before the guard (persistent_manager=True) is reused by
        # init_continuous_batching: it must be guarded too.
        cached = getattr(model, _CACHED, None)
        if cached is not None:
            self.guard_manager(cached)

    def _check_supported(self) -> None:
        if self.guard._agree.active:
            raise ValueError(
                "model: sasa does not guard continuous batching on a tensor-parallel model (each request would be "
                "scored on one rank only); use model.generate or guard.generate, which are guarded on every rank"
            )

    def _refuse_switched(self, manager: Any, before: str) -> None:
        """The manager switched the model itself to paged attention (transformers 5.17 does, at
        construction): the guard's scoring forward cannot run on it, so every request would be
        refused. Refused up front instead, with the model's attention put back and the manager
        dropped from the model, so that no unguarded manager is left behind."""
        now = compat.attn_implementation(self.model)
        compat.restore_attention(self.model, before)
        if getattr(self.model, _CACHED, None) is manager:
            setattr(self.model, _CACHED, None)
        raise ValueError(
            f"model: with transformers {compat.transformers_version()}, continuous batching switches the model to "
            f"{now!r} attention, on which sasa cannot score a request; use model.generate or guard.generate "
            "(guarded), or a transformers release whose continuous batching leaves the model's attention as it is "
            "(5.25 does)"
        )

    def guard_manager(self, manager: Any) -> None:
        """Give ``manager`` (a ``ContinuousBatchingManager`` of this model) the guarded ``add_request``."""
        if manager in self._managers:
            return
        sequences = compat.batching_return_sequences(manager)
        if sequences != 1:
            raise ValueError(
                f"num_return_sequences: sasa's guarded continuous batching supports 1 sequence per request, got "
                f"{sequences} (from the generation config)"
            )
        original = getattr(manager, _ADD)
        signature = inspect.signature(original)

        @functools.wraps(original)
        def add_request(*args: Any, **kwargs: Any) -> Optional[str]:
            bound = signature.bind(*args, **kwargs)
            prompt = prompt_tokens(bound.arguments["input_ids"])
            if not self.flags(prompt):
                return original(*args, **kwargs)
            request_id = bound.arguments.get("request_id") or compat.next_batching_request_id(manager)
            budget = bound.arguments.get("max_new_tokens")
            if budget is None:
                budget = getattr(manager.generation_config, "max_new_tokens", None)
            refusal = self.guard._refusal_ids if budget is None else self.guard._refusal_ids[: max(int(budget), 0)]
            compat.deliver_finished_output(manager, request_id, prompt, refusal)
            return request_id

        manager.__dict__[_ADD] = add_request
        self._managers.add(manager)

    def flags(self, prompt: list[int]) -> bool:
        """Whether the request ``prompt`` (token ids) is refused: scored alone, on its own prefill."""
        guard = self.guard
        probe = guard._require_probe()
        try:
            if not prompt:
                raise ValueError("input_ids: a continuous-batching request with no tokens")
            ids = torch.tensor([prompt], dtype=torch.long, device=model_device(self.model))
            probs = guard.score(input_ids=ids, attention_mask=torch.ones_like(ids))
        except Exception:  # noqa: BLE001 - a request that cannot be scored is refused, never passed
            logger.exception("sasa: scoring a continuous-batching request failed; treating its score as NaN")
            probs = torch.full((1, len(probe.bias)), float("nan"))
        return bool(decide(probs, probe, guard.config)[0])

    def remove(self) -> None:
        for manager in list(self._managers):
            manager.__dict__.pop(_ADD, None)
        self._managers = weakref.WeakSet()
        if self._patch is not None:
            self._patch.remove()
