"""Calibration: SASA features for a labelled manifest, then a fitted and evaluated probe.

``sasa.calibrate(...)`` and ``sasa.calibrate.calibrate(...)`` are the same call (the package is
callable). :mod:`~sasa.calibrate.run` extracts the features and fits; :mod:`~sasa.calibrate.plots`
draws the ROC curve and score histograms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sasa._faces import lazy_exports, make_callable

_EXPORTS = {
    "calibrate": "run",
    "CalibrationReport": "run",
    "extract_features": "run",
    "save_plots": "run",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
make_callable(__name__, "calibrate")  # sasa.calibrate(...) calls calibrate(...)

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from sasa.calibrate.run import CalibrationReport, calibrate, extract_features, save_plots
