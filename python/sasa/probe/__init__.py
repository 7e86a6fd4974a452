"""The probe: the linear heads that read SASA features, how they are fitted, saved and tied to a model.

- :mod:`~sasa.probe.sasa_probe`: ``SASAProbe`` (validated on construction: a probe that could never
  fire is refused);
- :mod:`~sasa.probe.fit`: the stratified split, class-balanced logistic regression, held-out thresholds;
- :mod:`~sasa.probe.files`: probe directories (safetensors + JSON, checksummed, atomic; no pickle);
- :mod:`~sasa.probe.tensors`: the ``probe`` argument of ``apply_sasa`` as validated tensors, folded
  into hidden space for a logits probe;
- :mod:`~sasa.probe.fingerprint`: which checkpoint a probe's features came from, checked on load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sasa._faces import lazy_exports

_EXPORTS = {
    "SASAProbe": "sasa_probe",
    "SaturatedThresholdWarning": "fit",
    "ANY": "fit",
    "COMBINED": "fit",
    "WEIGHTS_FILE": "files",
    "CONFIG_FILE": "files",
    "FingerprintError": "fingerprint",
    "model_fingerprint": "fingerprint",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from sasa.probe.files import CONFIG_FILE, WEIGHTS_FILE
    from sasa.probe.fingerprint import FingerprintError, model_fingerprint
    from sasa.probe.fit import ANY, COMBINED, SaturatedThresholdWarning
    from sasa.probe.sasa_probe import SASAProbe
