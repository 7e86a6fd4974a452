"""The paper's claim on the organism: which features detect image-carried harmful requests.

Five probes, each a :meth:`sasa.SASAProbe.fit` logistic regression on last-prompt-position
features: (a) plain final-position logits, (b) plain ``H`` after the safety block, (c) plain ``H``
after the fused block, (d) SASA logits, (e) SASA hidden state. Each is calibrated (1) on the mixed
calibration split (text- and image-carried rows) and (2) on its text-carried rows only, and
evaluated on the held-out split: image-carried harmful rows against every benign row (text- and
image-carried). Reported: AUROC, TPR at 5% FPR (threshold from the evaluated benign rows: a point
of the ROC curve), and TPR / FPR at the probe's own calibrated threshold (what a guard would do).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import torch

from ..config import SASAConfig
from ..data import Example
from ..metrics import auroc, threshold_for_fpr
from ..probe import SASAProbe
from .features import ordered, plain_features, sasa_features
from .manifest import carrier_of

PROBES = ("a: plain logits", "b: plain H (safety block)", "c: plain H (fused block)", "d: SASA logits",
          "e: SASA hidden")
CALIBRATIONS = ("mixed", "text-only")


@dataclass(frozen=True)
class ClaimRow:
    probe: str
    calibration: str
    auroc: float
    tpr_at_5_fpr: float
    tpr_at_threshold: float
    fpr_at_threshold: float
    calibration_rows: int
    positives: int
    negatives: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def feature_sets(model: Any, processor: Any, examples: Sequence[Example], safety: int, fused: int, *,
                 batch_size: int = 32) -> dict[str, torch.Tensor]:
    """The five feature matrices for ``examples`` (in :func:`features.ordered` order)."""
    plain = plain_features(model, processor, examples, (safety, fused), batch_size=batch_size)
    out = {PROBES[0]: plain["logits"], PROBES[1]: plain[f"H{safety}"], PROBES[2]: plain[f"H{fused}"]}
    for name, feature in ((PROBES[3], "logits"), (PROBES[4], "hidden")):
        config = SASAConfig(safety_layer=safety, fused_layer=fused, scope="last", feature=feature)
        out[name] = sasa_features(model, processor, examples, config, batch_size=batch_size)
    return out


def _carrier(e: Example) -> str:
    return carrier_of(e.carrier, e.image is not None)


def claim_table(model: Any, processor: Any, calibration: Sequence[Example], heldout: Sequence[Example],
                safety: int, fused: int, *, batch_size: int = 32, target_fpr: float = 0.05, seed: int = 0,
                progress: bool = True) -> list[ClaimRow]:
    """Fit every probe on both calibrations and evaluate it on the held-out image-carried harmful rows."""
    from tqdm.auto import tqdm

    bar = tqdm(total=2 + len(PROBES) * len(CALIBRATIONS), desc="claim table", unit="step", disable=not progress)
    cal_rows, held_rows = ordered(calibration, batch_size), ordered(heldout, batch_size)
    cal = feature_sets(model, processor, calibration, safety, fused, batch_size=batch_size)
    bar.update(1)
    held = feature_sets(model, processor, heldout, safety, fused, batch_size=batch_size)
    bar.update(1)
    y_cal = torch.tensor([e.label for e in cal_rows])
    text_only = torch.tensor([_carrier(e) == "text" for e in cal_rows])
    y_held = torch.tensor([e.label for e in held_rows])
    evaluated = torch.tensor([e.label == 0 or _carrier(e) == "image" for e in held_rows])
    y_eval = y_held[evaluated]
    rows = []
    for calibration_name in CALIBRATIONS:
        keep = torch.ones_like(text_only) if calibration_name == "mixed" else text_only
        for name in PROBES:
            probe = SASAProbe.fit(cal[name][keep], y_cal[keep], target_fpr=target_fpr, seed=seed)
            scores = probe.predict_proba(held[name][evaluated])[:, 0].double()
            rows.append(_row(name, calibration_name, scores, y_eval, float(probe.threshold[0]), int(keep.sum()),
                             target_fpr))
            bar.update(1)
    bar.close()
    return rows


def _row(name: str, calibration: str, scores: torch.Tensor, y: torch.Tensor, threshold: float, n_cal: int,
         target_fpr: float) -> ClaimRow:
    pos, neg = scores[y == 1], scores[y == 0]
    roc_threshold = threshold_for_fpr(neg, target_fpr)
    return ClaimRow(
        probe=name, calibration=calibration, auroc=auroc(scores, y),
        tpr_at_5_fpr=float((pos >= roc_threshold).double().mean()),
        tpr_at_threshold=float((pos >= threshold).double().mean()),
        fpr_at_threshold=float((neg >= threshold).double().mean()),
        calibration_rows=n_cal, positives=int(pos.numel()), negatives=int(neg.numel()),
    )


def markdown(rows: Sequence[ClaimRow], note: Optional[str] = None) -> str:
    """The claim table as Markdown (one line per probe x calibration)."""
    lines = ["| probe | calibrated on | AUROC | TPR @ 5% FPR | TPR at its threshold | FPR at its threshold |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r.probe} | {r.calibration} ({r.calibration_rows} rows) | {r.auroc:.3f} | "
                     f"{r.tpr_at_5_fpr:.3f} | {r.tpr_at_threshold:.3f} | {r.fpr_at_threshold:.3f} |")
    if note:
        lines += ["", note]
    return "\n".join(lines)
