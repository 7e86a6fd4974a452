"""``model.generate`` guarded: an instance attribute that routes every call through the guard.

Pipelines and serving code call ``model.generate``; while a guard is applied that attribute (on this
instance only, no class is changed) binds the positional arguments the way ``generate`` does and
hands everything to the guard. :meth:`GeneratePatch.remove` restores the attribute exactly
(including an instance-level ``generate`` someone else had set).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from torch import Tensor, nn

from sasa.guard.capture import GuardPart, InstanceAttribute


class GeneratePatch(GuardPart):
    """Replace ``model.generate`` by a guarded one; ``run(kwargs) -> (output, guarded sequences)``."""

    def __init__(self, model: nn.Module, run: Callable[[dict[str, Any]], tuple[Any, Any, Tensor]]):
        self.model = model
        #: The generate the guard calls: whatever ``model.generate`` was before the patch.
        self.original = model.generate
        names = parameter_names(self.original)

        @functools.wraps(self.original)
        def generate(*args: Any, **kwargs: Any) -> Any:
            if len(args) > len(names):
                raise TypeError(f"generate: takes at most {len(names)} positional arguments, got {len(args)}")
            for name, value in zip(names, args):
                if name in kwargs:
                    raise TypeError(f"generate: got multiple values for argument {name!r}")
                kwargs[name] = value
            inputs = kwargs.pop("inputs", None)
            if inputs is not None:
                if "input_ids" in kwargs or not isinstance(inputs, Tensor) or inputs.is_floating_point():
                    raise ValueError("inputs: pass the prompt token ids as input_ids (or inputs=) once, as an integer tensor")
                kwargs["input_ids"] = inputs
            out, _, sequences = run(kwargs)
            if isinstance(out, Tensor):
                return sequences
            out.sequences = sequences
            return out

        self._patch = InstanceAttribute(model, "generate", generate)

    def remove(self) -> None:
        self._patch.remove()


def parameter_names(generate: Any) -> list[str]:
    """The names ``generate``'s positional arguments bind to (``inputs``, ``generation_config``, ...)."""
    try:
        params = inspect.signature(generate).parameters.values()
    except (TypeError, ValueError):
        return ["inputs"]
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
