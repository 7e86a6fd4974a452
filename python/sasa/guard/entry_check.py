"""Closing the routes to generation that go around the instance's guarded ``generate``.

The guard patches ``model.generate`` on the instance, so a call that names the class instead
(``type(model).generate(model, ...)``, ``transformers.GenerationMixin.generate(model, ...)``, a
subclass's ``super().generate(...)`` reached from outside the guard, or a
``ContinuousBatchingManager(model, ...)`` built by hand) would run the unguarded loop and answer a
flagged request. Every one of those routes asks the *instance* for its logits processors
(``self._get_logits_processor(...)``: step 8 of ``GenerationMixin.generate``; the continuous
batching manager's constructor), and an instance attribute wins over the class's method. So the
guard puts one there: inside the guard's own entries (guarded ``generate``, guarded
``init_continuous_batching``) it forwards to the model's method; anywhere else it raises before a
single token is generated. Fail closed: the bypass gets an error, never the unguarded answer.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Optional

from torch import nn

from sasa.guard.capture import GuardPart, InstanceAttribute

_ATTR = "_get_logits_processor"

BYPASS_MESSAGE = (
    "generate: this model has an active SASA guard, and generation was started around it (through the class, e.g. "
    "type(model).generate(model, ...), transformers.GenerationMixin.generate(model, ...), a subclass's "
    "super().generate(...), or a ContinuousBatchingManager built by hand), which would answer without the guard's "
    "decision; call model.generate(...), guard.generate(...) or model.init_continuous_batching(...) on the instance, "
    "or guard.remove() first to generate unguarded"
)


class GuardBypassError(RuntimeError):
    """Generation on a guarded instance that did not go through the guard (see :data:`BYPASS_MESSAGE`)."""


class EntryCheck(GuardPart):
    """The instance-level ``_get_logits_processor`` that only the guard's own entries may pass."""

    def __init__(self, model: nn.Module):
        # A context variable, not a flag: each thread (and each asyncio task) has its own, so a guarded
        # generate in one thread does not open the door for an unguarded one in another.
        self._inside: contextvars.ContextVar[bool] = contextvars.ContextVar("sasa_guarded_entry", default=False)
        self._patch: Optional[InstanceAttribute] = None
        original = getattr(model, _ATTR, None)
        if original is None:  # not a generation model: nothing to close
            return
        inside = self._inside

        def _get_logits_processor(*args: Any, **kwargs: Any) -> Any:
            if not inside.get():
                raise GuardBypassError(BYPASS_MESSAGE)
            return original(*args, **kwargs)

        self._patch = InstanceAttribute(model, _ATTR, _get_logits_processor)

    @contextlib.contextmanager
    def allowed(self) -> Iterator[None]:
        """Within this block (this thread or task only), generation on the instance is the guard's own."""
        token = self._inside.set(True)
        try:
            yield
        finally:
            self._inside.reset(token)

    def remove(self) -> None:
        if self._patch is not None:
            self._patch.remove()
