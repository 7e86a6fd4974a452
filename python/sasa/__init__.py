"""sasa: SASA for Hugging Face models (the shim, probe, calibration and command line).

Public API::

    from sasa import SASAConfig, SASAProbe, apply_sasa, calibrate
    guard = apply_sasa(model, SASAConfig(safety_layer=13, fused_layer=15), probe=(w, b), tokenizer=tok)
    guard.features(**inputs)   # [B, F] SASA features at each row's last prompt token
    guard.score(**inputs)      # [B] (or [B, C]) probe probabilities
    guard.generate(**inputs, max_new_tokens=64)   # flagged rows refuse, others = model.generate
    guard.remove()

    probe, report = calibrate(model, processor, "manifest.jsonl", config)   # fit a probe from data
    probe.save("probe_dir"); guard = apply_sasa(model, probe="probe_dir")

Layer numbers are 0-based decoder-block indices (``H`` after block ``i``).
"""

from sasa_kernels import __version__

from .calibrate import CalibrationReport, calibrate
from .config import SASAConfig
from .families import SUPPORTED_MODEL_TYPES
from .guard import SASAGenerateOutput, SASAGuard, apply_sasa
from .metrics import ProbeMetrics
from .probe import SASAProbe

__all__ = [
    "CalibrationReport",
    "ProbeMetrics",
    "SASAConfig",
    "SASAGenerateOutput",
    "SASAGuard",
    "SASAProbe",
    "SUPPORTED_MODEL_TYPES",
    "apply_sasa",
    "calibrate",
    "__version__",
]
