"""sasa: SASA for Hugging Face models (the shim, probe, calibration and command line).

Public API::

    import sasa
    model = sasa.AutoSASAModelForCausalLM.from_pretrained("model_dir", probe="probe_dir")
    model.generate(**inputs)            # guarded: flagged prompts answer the refusal text

    guard = sasa.apply_sasa(model, probe="probe_dir", tokenizer=processor)   # or by hand
    inputs = guard.encode(["How do I bake bread?"])   # formatted as the probe was calibrated
    guard.score(**inputs)               # [B, C] probe probabilities
    guard.generate(**inputs, max_new_tokens=64)   # .sequences, .flagged, .scores
    guard.remove()                      # or: with sasa.apply_sasa(...) as guard: ...

    probe, report = sasa.calibrate(model, processor, "manifest.jsonl", sasa.SASAConfig(13, 15))
    probe.save("probe_dir")
    sasa.locate(model, processor, "manifest.jsonl")        # which layers? (sasa locate)
    sasa.evaluate(model, processor, "test.jsonl", "probe_dir")   # what does the guard change? (sasa eval)

Layer numbers are 0-based decoder-block indices (``H`` after block ``i``). Names are imported on
first use, so ``import sasa`` (and the ``sasa`` command's ``--help``) stay light; the Hugging Face
part needs the ``hf`` extra (``pip install 'sasa-kernels[hf]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sasa._faces import lazy_exports
from sasa_kernels._version import __version__

#: Each public name and the module that defines it (the layout is in the README's Architecture).
_EXPORTS = {
    "AutoSASAModelForCausalLM": "guard.auto",
    "AutoSASAModelForImageTextToText": "guard.auto",
    "get_guard": "guard.auto",
    "CalibrationReport": "calibrate.run",
    "SASAConfig": "config",
    "SUPPORTED_MODEL_TYPES": "hf.families",
    "model_fingerprint": "probe.fingerprint",
    "FingerprintError": "probe.fingerprint",
    "GuardBypassError": "guard.entry_check",
    "SASAGenerateOutput": "guard.generate",
    "SASAGuard": "guard.apply",
    "apply_sasa": "guard.apply",
    "ProbeMetrics": "metrics",
    "SASAProbe": "probe.sasa_probe",
    "SaturatedThresholdWarning": "probe.fit",
    "PromptFormat": "data.prompt_format",
    "LocateResult": "locate.result",
    "EvalResult": "evaluate.run",
    "read_dataset": "data.readers",
}
#: Callable packages (sasa._faces): ``sasa.calibrate(...)``, ``sasa.locate(...)`` and
#: ``sasa.evaluate(...)`` run the package's main function, however the package was first imported.
_MODULES = ("calibrate", "locate", "evaluate")

__all__ = sorted(list(_EXPORTS) + list(_MODULES)) + ["__version__"]

__getattr__, _ = lazy_exports(__name__, _EXPORTS, modules=_MODULES)


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from sasa.calibrate.run import CalibrationReport, calibrate
    from sasa.config import SASAConfig
    from sasa.data.prompt_format import PromptFormat
    from sasa.data.readers import read_dataset
    from sasa.evaluate.run import EvalResult, evaluate
    from sasa.guard.apply import SASAGuard, apply_sasa
    from sasa.guard.auto import AutoSASAModelForCausalLM, AutoSASAModelForImageTextToText, get_guard
    from sasa.guard.entry_check import GuardBypassError
    from sasa.guard.generate import SASAGenerateOutput
    from sasa.hf.families import SUPPORTED_MODEL_TYPES
    from sasa.locate.result import LocateResult
    from sasa.locate.run import locate
    from sasa.metrics import ProbeMetrics
    from sasa.probe.fingerprint import FingerprintError, model_fingerprint
    from sasa.probe.fit import SaturatedThresholdWarning
    from sasa.probe.sasa_probe import SASAProbe
