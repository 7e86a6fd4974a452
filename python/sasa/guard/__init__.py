"""The guard: SASA inside a loaded Hugging Face model instance (docs/method.md sections 3-5).

::

    from sasa.guard import apply_sasa
    with apply_sasa(model, probe="probe_dir", tokenizer=processor) as guard:
        guard.generate(**guard.encode(["How do I bake bread?"]), max_new_tokens=64)

The modules, in the order a request meets them:

- :mod:`~sasa.guard.apply`: ``apply_sasa`` and ``SASAGuard``, the public guard;
  :mod:`~sasa.guard.auto`: the ``AutoSASAModel*`` classes (load and guard in one line);
- :mod:`~sasa.guard.resolve`: every check before a guard exists (model, config, probe, prompt format);
- :mod:`~sasa.guard.capture`: the normal pass observed (hooks, recorders: ``H_s``, ``H_f``, block arguments);
- the augmented pass: :mod:`~sasa.guard.augment` (both scopes), :mod:`~sasa.guard.ride` (``scope="last"``
  riding inside the normal forward), :mod:`~sasa.guard.one_token` (one token through a block),
  :mod:`~sasa.guard.last_block` (``scope="all"``'s last block, only where the probe reads),
  :mod:`~sasa.guard.compiled_pass` (the opt-in compiled variant), :mod:`~sasa.guard.fused_norm`
  (block ``s+1``'s norm fused into the projection kernel);
- :mod:`~sasa.guard.readout`: final norm, output head and probe to scores (``sasa_kernels.probe``);
- guarded generation: :mod:`~sasa.guard.generate` (score the prefill, stop and refuse flagged rows),
  :mod:`~sasa.guard.generate_patch` (``model.generate`` routed through the guard),
  :mod:`~sasa.guard.refusal_output` (the refusal in sequences and streams),
  :mod:`~sasa.guard.batching` (continuous batching);
- closing the routes around the guard: :mod:`~sasa.guard.entry_check` (generation started through the
  class), :mod:`~sasa.guard.no_pickle` (a guarded model refuses to be pickled).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sasa._faces import lazy_exports

_EXPORTS = {
    "apply_sasa": "apply",
    "SASAGuard": "apply",
    "SASAGenerateOutput": "generate",
    "GuardBypassError": "entry_check",
    "get_guard": "auto",
    "AutoSASAModelForCausalLM": "auto",
    "AutoSASAModelForImageTextToText": "auto",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from sasa.guard.apply import SASAGuard, apply_sasa
    from sasa.guard.auto import AutoSASAModelForCausalLM, AutoSASAModelForImageTextToText, get_guard
    from sasa.guard.entry_check import GuardBypassError
    from sasa.guard.generate import SASAGenerateOutput
