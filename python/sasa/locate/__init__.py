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
:mod:`sasa.locate._run` and is loaded on first use.
"""

from __future__ import annotations

from typing import Any

from ._cli import register_command

__all__ = ["GridCell", "LayerStats", "LocateResult", "locate", "register_command"]

_LAZY = {"locate": "_run", "LocateResult": "_result", "LayerStats": "_result", "GridCell": "_result"}


def __getattr__(name: str) -> Any:
    # PEP 562: the heavy modules (torch, transformers) load on first use of these names.
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


from .._callable_module import make_callable  # noqa: E402  (after the module's names exist)

make_callable(__name__, "locate")
