"""One-line loading of a guarded model, the way Hugging Face users load any model.

::

    import sasa
    model = sasa.AutoSASAModelForImageTextToText.from_pretrained("llava-dir", probe="probe-dir")
    model.generate(...)              # guarded: flagged prompts answer the refusal
    sasa.get_guard(model).remove()   # back to the plain model

``from_pretrained`` loads the model with transformers' own auto class (every keyword argument goes
to it), loads the tokenizer or processor from the same directory unless one is given, and applies
the probe with :func:`sasa.apply_sasa` (fingerprint-checked, with its own config).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from torch import nn

from sasa.guard.apply import _GUARD_ATTR, SASAGuard, apply_sasa
from sasa.hf.loading import load_processor


def get_guard(model: nn.Module) -> Optional[SASAGuard]:
    """The active :class:`SASAGuard` of ``model``, or ``None``."""
    guard = model.__dict__.get(_GUARD_ATTR) if isinstance(model, nn.Module) else None
    return guard if guard is not None and guard.active else None


class _AutoSASA:
    _vision = False

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: Union[str, Path],
        *,
        probe: Any,
        tokenizer: Any = None,
        allow_config_override: bool = False,
        **kwargs: Any,
    ) -> nn.Module:
        """Load the model (``kwargs`` go to transformers' ``from_pretrained``) and guard it with ``probe``.

        Args:
            pretrained_model_name_or_path: what transformers' ``from_pretrained`` takes.
            probe: a probe directory (:meth:`sasa.SASAProbe.save`) or a :class:`sasa.SASAProbe`.
            tokenizer: the tokenizer or processor (default: loaded from the model's directory).
            allow_config_override: passed to :func:`sasa.apply_sasa`.

        Returns:
            The model, in eval mode, with its guard applied (:func:`get_guard` returns it).
        """
        import transformers as tf

        if probe is None:
            raise TypeError("probe: a guarded model needs a probe (a directory written by SASAProbe.save)")
        auto = tf.AutoModelForImageTextToText if cls._vision else tf.AutoModelForCausalLM
        model = auto.from_pretrained(pretrained_model_name_or_path, **kwargs).eval()
        if tokenizer is None:
            tokenizer = load_processor(pretrained_model_name_or_path, cls._vision)
        apply_sasa(model, probe=probe, tokenizer=tokenizer, allow_config_override=allow_config_override)
        return model


class AutoSASAModelForCausalLM(_AutoSASA):
    """``AutoModelForCausalLM.from_pretrained(...)`` plus a SASA guard: see :mod:`sasa.guard.auto`."""


class AutoSASAModelForImageTextToText(_AutoSASA):
    """``AutoModelForImageTextToText.from_pretrained(...)`` plus a SASA guard: see :mod:`sasa.guard.auto`."""

    _vision = True
