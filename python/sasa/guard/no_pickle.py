"""A guarded model refuses to be pickled (``torch.save(model)``) or copied, with a message that says why.

Pickle would otherwise fail deep inside the model's ``__dict__`` with a raw error about a local
function (the guarded ``generate``) or a hook. An instance attribute ``__getstate__`` is what pickle,
``copy.copy`` and ``copy.deepcopy`` ask the object for (it wins over ``nn.Module``'s method), so
the guard sets one that raises first, naming the guard and what to do instead.
"""

from __future__ import annotations

from typing import Any, NoReturn

from torch import nn

from sasa.guard.capture import InstanceAttribute

_ATTR = "__getstate__"

MESSAGE = (
    "model: a model with an active SASA guard cannot be deep-copied, pickled or saved with torch.save(model) (the "
    "guard's hooks and patched methods belong to this instance in this process); save the weights with "
    "model.save_pretrained(dir) or torch.save(model.state_dict(), path) and the probe with probe.save(dir), or call "
    "guard.remove() first, then apply_sasa again to the loaded or copied model"
)


def _refuse(*args: Any, **kwargs: Any) -> NoReturn:
    raise TypeError(MESSAGE)


class NoPickle(InstanceAttribute):
    """Installs the refusing ``__getstate__`` on the instance; :meth:`remove` restores what was there."""

    def __init__(self, model: nn.Module):
        super().__init__(model, _ATTR, _refuse)
