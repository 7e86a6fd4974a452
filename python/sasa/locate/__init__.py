"""``sasa locate``: choose the safety and fused layers from a labelled manifest (docs/method.md section 6).

Per decoder block ``i`` (0-based; ``H`` after block ``i``) at each row's last prompt token:
cross-validated linear-probe AUROC, the benign/harmful cosine gap, image-vs-text-twin fusion
similarity and the logit-lens refusal rate; then the held-out AUROC of a SASA probe
(``scope="last"``) for a grid of ``(safety_layer, fused_layer)`` pairs, and a recommendation.

    import sasa
    result = sasa.locate(model, processor, "calibration.jsonl", out_dir="locate_out")
    # the same: from sasa.locate import locate
    result.recommended          # (safety_layer, fused_layer)
    print(result.summary())

This module imports only the standard library (``sasa --help`` stays fast); the work lives in
:mod:`sasa.locate.run` and is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sasa._faces import lazy_exports, make_callable

_EXPORTS = {"locate": "run", "LocateResult": "result", "LayerStats": "result", "GridCell": "result"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
make_callable(__name__, "locate")  # sasa.locate(...) calls locate(...)

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from sasa.locate.result import GridCell, LayerStats, LocateResult
    from sasa.locate.run import locate
