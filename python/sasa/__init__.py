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

import importlib
from typing import TYPE_CHECKING, Any

from sasa_kernels._version import __version__

_EXPORTS = {
    "AutoSASAModelForCausalLM": "auto",
    "AutoSASAModelForImageTextToText": "auto",
    "get_guard": "auto",
    "CalibrationReport": "calibrate",
    "SASAConfig": "config",
    "SUPPORTED_MODEL_TYPES": "families",
    "model_fingerprint": "_fingerprint",
    "FingerprintError": "_fingerprint",
    "GuardBypassError": "_entry_check",
    "SASAGenerateOutput": "guard",
    "SASAGuard": "guard",
    "apply_sasa": "guard",
    "ProbeMetrics": "metrics",
    "SASAProbe": "probe",
    "SaturatedThresholdWarning": "probe",
    "PromptFormat": "_prompt_format",
    "LocateResult": "locate",
    "EvalResult": "evaluate",
    "read_dataset": "readers",
}
#: Callable modules (sasa._callable_module): ``sasa.calibrate(...)``, ``sasa.locate(...)`` and
#: ``sasa.evaluate(...)`` run the module's main function, however the submodule was first imported.
_MODULES = ("calibrate", "locate", "evaluate")

__all__ = sorted(list(_EXPORTS) + list(_MODULES)) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None and name not in _MODULES:
        raise AttributeError(f"module 'sasa' has no attribute {name!r}")
    try:
        loaded = importlib.import_module(f".{module or name}", __name__)
        value = loaded if module is None else getattr(loaded, name)
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] in ("transformers", "safetensors", "tqdm", "PIL", "tokenizers"):
            raise ModuleNotFoundError(
                f"sasa.{name} needs {err.name}, which is not installed: pip install 'sasa-kernels[hf]'", name=err.name
            ) from err
        raise
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from ._entry_check import GuardBypassError
    from ._fingerprint import FingerprintError, model_fingerprint
    from ._prompt_format import PromptFormat
    from .auto import AutoSASAModelForCausalLM, AutoSASAModelForImageTextToText, get_guard
    from .calibrate import CalibrationReport, calibrate
    from .config import SASAConfig
    from .families import SUPPORTED_MODEL_TYPES
    from .guard import SASAGenerateOutput, SASAGuard, apply_sasa
    from .metrics import ProbeMetrics
    from .evaluate import EvalResult
    from .locate import LocateResult
    from .probe import SASAProbe, SaturatedThresholdWarning
    from .readers import read_dataset
