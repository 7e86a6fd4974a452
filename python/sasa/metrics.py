"""Binary-classification metrics for probes, in plain torch (no scikit-learn needed).

Label 1 means harmful (the positive class); a score ``>= threshold`` flags the row.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class ProbeMetrics:
    """Held-out quality of one probe at its decision threshold."""

    auroc: float
    accuracy: float
    tpr: float  #: share of harmful rows flagged
    fpr: float  #: share of benign rows flagged
    threshold: float
    num_harmful: int
    num_benign: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def flag_rows(probabilities: Tensor, threshold: Tensor | float, *, fail_closed: bool = True) -> Tensor:
    """The guard's decision rule: bool ``[N]`` for probabilities ``[N, C]``.

    A row is flagged when any probe's probability reaches its threshold (``[C]`` or a scalar). A
    NaN probability flags its row when ``fail_closed`` (the guard fails closed by default).
    """
    threshold = torch.as_tensor(threshold, dtype=probabilities.dtype, device=probabilities.device)
    hit = probabilities >= threshold
    if fail_closed:
        hit = hit | torch.isnan(probabilities)
    return hit.any(dim=1)


def auroc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count one half). NaN with a single class."""
    scores, labels = scores.double().reshape(-1), labels.reshape(-1).bool()
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return math.nan
    # Average ranks handle ties exactly: a tie between a harmful and a benign row counts 1/2.
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=torch.float64)
    unique, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    average = ends - (counts.double() - 1) / 2
    ranks[order] = average[inverse]
    rank_sum = float(ranks[labels].sum())
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def roc_curve(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(fpr, tpr)`` at every distinct threshold, from (0, 0) to (1, 1)."""
    scores, labels = scores.double().reshape(-1), labels.reshape(-1).bool()
    thresholds = torch.unique(scores, sorted=True).flip(0)
    flagged = scores[None, :] >= thresholds[:, None]
    tpr = (flagged & labels).sum(1).double() / max(int(labels.sum()), 1)
    fpr = (flagged & ~labels).sum(1).double() / max(int((~labels).sum()), 1)
    zero = torch.zeros(1, dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    return torch.cat([zero, fpr, one]), torch.cat([zero, tpr, one])


def threshold_for_fpr(benign_scores: Tensor, target_fpr: float) -> float:
    """The smallest threshold that flags at most ``target_fpr`` of ``benign_scores``.

    With ``k = floor(target_fpr * n)`` benign rows allowed to be flagged, the threshold sits just
    above the ``(k+1)``-th highest benign score, so ties never push the rate over the target.
    The threshold is a float32 value (the dtype probabilities come in at inference), strictly
    above that score whether it is compared in float32 or float64.
    """
    values = torch.sort(benign_scores.double().reshape(-1), descending=True).values
    if values.numel() == 0:
        raise ValueError("benign_scores: need at least one benign row to choose a threshold")
    allowed = int(math.floor(target_fpr * values.numel() + 1e-9))
    if allowed >= values.numel():
        return 0.0
    pivot = float(values[allowed])
    above = np.float32(pivot)
    if float(above) <= pivot:
        above = np.nextafter(above, np.float32(np.inf))
    return float(above)


def metrics_at(scores: Tensor, labels: Tensor, threshold: float) -> ProbeMetrics:
    """AUROC, accuracy, TPR and FPR of ``scores`` against ``labels`` at ``threshold``.

    A NaN score counts as flagged (a guard fails closed).
    """
    scores, labels = scores.double().reshape(-1), labels.reshape(-1).bool()
    flagged = flag_rows(scores[:, None], threshold)
    pos, neg = int(labels.sum()), int((~labels).sum())
    return ProbeMetrics(
        auroc=auroc(torch.nan_to_num(scores, nan=1.0), labels),
        accuracy=float((flagged == labels).double().mean()) if scores.numel() else math.nan,
        tpr=float((flagged & labels).sum()) / pos if pos else math.nan,
        fpr=float((flagged & ~labels).sum()) / neg if neg else math.nan,
        threshold=float(threshold),
        num_harmful=pos,
        num_benign=neg,
    )


def bootstrap_interval(scores: Tensor, labels: Tensor, metric: Callable[[Tensor, Tensor], float], *,
                       replicates: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric(scores, labels)`` over the evaluated rows.

    Each replicate resamples the rows with replacement *stratified by label*: the harmful and the
    benign rows are resampled separately, each to its own count, so every replicate has both classes
    (with one harmful row, every replicate repeats it) and rank metrics such as AUROC are always
    defined. Only the evaluation sample varies: whatever produced ``scores`` (a fitted probe, a
    threshold) is held fixed, so the interval says how much the number could move on another
    draw of evaluation rows, not on another calibration. ``metric`` is recomputed from scratch per
    replicate (e.g. a threshold set on the benign rows is set again on the resampled ones).

    Returns ``(low, high)``: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the
    replicates' values (replicates where ``metric`` is NaN are left out; ``(nan, nan)`` when all are).
    Deterministic for a ``seed`` (a seeded :class:`torch.Generator`; the global RNG is untouched).
    """
    if replicates < 1:
        raise ValueError(f"replicates: expected >= 1, got {replicates}")
    if not 0 < level < 1:
        raise ValueError(f"level: expected in (0, 1), got {level}")
    scores, labels = scores.reshape(-1), labels.reshape(-1)
    if scores.numel() != labels.numel():
        raise ValueError(f"scores and labels: {scores.numel()} vs {labels.numel()} rows")
    generator = torch.Generator().manual_seed(seed)
    strata = [torch.nonzero(labels == value).reshape(-1) for value in torch.unique(labels)]
    values = []
    for _ in range(replicates):
        picked = torch.cat([s[torch.randint(0, s.numel(), (s.numel(),), generator=generator)] for s in strata])
        values.append(float(metric(scores[picked], labels[picked])))
    kept = torch.tensor([v for v in values if not math.isnan(v)], dtype=torch.float64)
    if kept.numel() == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2
    low, high = torch.quantile(kept, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return float(low), float(high)
