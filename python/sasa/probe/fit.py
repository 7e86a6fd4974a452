"""Fitting the probe: a stratified split, class-balanced L2 logistic regression, held-out thresholds.

Why torch and not scikit-learn: no extra dependency, the feature matrix (``F`` = vocabulary size for
logits features, tens of thousands of columns) is already a tensor, and a full-batch deterministic
solver (LBFGS) in float64 gives the same probe for the same seed on every machine. Features are
standardized for the solve and the standardization is folded back into the weights, so the probe
acts on raw features.

Several probes are fitted at once when rows carry a ``category``: one ``"any"`` probe (every harmful
row against every benign row) plus one per category (that category's harmful rows against every
benign row).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from sasa.metrics import ProbeMetrics, metrics_at, threshold_for_fpr

ANY = "any"
#: Key in :attr:`sasa.SASAProbe.metrics` for the decision rule over all probes (only with categories).
COMBINED = "combined (any probe fires)"


class SaturatedThresholdWarning(UserWarning):
    """The held-out benign scores saturate at 1.0, so no threshold can meet the target rate."""


@dataclass
class FitResult:
    weight: Tensor  # [C, F] float32
    bias: Tensor  # [C]
    threshold: Tensor  # [C]
    names: list[str]
    metrics: dict[str, ProbeMetrics]
    holdout_rows: Tensor


def fit_probes(
    features: Any,
    labels: Union[Tensor, Sequence[int]],
    categories: Optional[Sequence[Optional[str]]],
    *,
    target_fpr: float,
    holdout: float,
    l2: float,
    seed: int,
    max_iter: int,
) -> FitResult:
    """Everything :meth:`sasa.SASAProbe.fit` does, returning plain tensors (see its docstring)."""
    x = features_matrix(features, "features").double().cpu()
    if x.shape[0] == 0:
        raise ValueError("features: no rows (N = 0); calibration needs harmful and benign examples")
    if x.shape[1] == 0:
        raise ValueError("features: no feature columns (F = 0)")
    y = _labels_vector(labels, x.shape[0])
    cats = _categories_vector(categories, y)
    _check_rate("target_fpr", target_fpr, upper_open=True)
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout: expected a fraction in (0, 1), got {holdout!r}")
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not (l2 >= 0 and math.isfinite(l2)):
        raise ValueError(f"l2: expected a finite number >= 0, got {l2!r}")
    if not torch.isfinite(x).all():
        raise ValueError("features: contains NaN or infinite values")

    train, held = _stratified_split(y, cats, holdout, seed)
    names = [ANY] + (sorted({c for c in cats if c is not None}) if categories is not None else [])
    # A row is flagged when any probe fires, so each probe gets an equal share of the target rate:
    # the union's false-positive rate on held-out rows then stays within target_fpr.
    per_probe_fpr = target_fpr / len(names)
    weights, biases, thresholds, metrics = [], [], [], {}
    for name in names:
        rows = _rows_for(name, y, cats)
        tr, te = train[rows[train]], held[rows[held]]
        _require_both_classes(name, y[tr], "training")
        _require_both_classes(name, y[te], "held-out")
        w, b = _fit_logistic(x[tr], y[tr], l2=l2, max_iter=max_iter)
        # Scores in float32, as the guard computes them at inference.
        p = torch.sigmoid((x[te] @ w + b).float()).double()
        thr = threshold_for_fpr(p[y[te] == 0], per_probe_fpr)
        if thr > 1.0:
            thr = 1.0
            benign = p[y[te] == 0]
            warnings.warn(
                f"probe {name!r}: held-out benign scores saturate at 1.0 ({int((benign >= 1.0).sum())} of "
                f"{benign.numel()}), so no threshold in [0, 1] meets target_fpr={target_fpr}; the threshold is "
                "1.0 (it flags only saturated scores) and the reported FPR is what it really is. More or more "
                "varied benign calibration data usually fixes this.",
                SaturatedThresholdWarning,
                stacklevel=3,
            )
        weights.append(w)
        biases.append(b)
        thresholds.append(thr)
        metrics[name] = metrics_at(p, y[te], thr)
    if len(names) > 1:
        # The decision rule itself (any probe at its threshold), scored by the largest margin.
        p_all = torch.sigmoid((x[held] @ torch.stack(weights).T + torch.tensor(biases, dtype=torch.float64)).float()).double()
        margin = (p_all - torch.tensor(thresholds, dtype=torch.float64)).max(dim=1).values
        metrics[COMBINED] = metrics_at(margin, y[held], 0.0)
    return FitResult(
        weight=torch.stack(weights).float(),
        bias=torch.tensor([float(b) for b in biases], dtype=torch.float32),
        threshold=torch.tensor(thresholds, dtype=torch.float32),
        names=names,
        metrics=metrics,
        holdout_rows=held,
    )


def features_matrix(features: Any, name: str) -> Tensor:
    if not isinstance(features, Tensor) or not features.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor [N, F], got {type(features).__name__}")
    if features.dim() != 2:
        raise ValueError(f"{name}: expected shape [N, F], got {list(features.shape)}")
    if features.device.type == "meta":
        raise ValueError(f"{name}: is on the meta device (no values)")
    return features


def _check_rate(name: str, value: Any, *, upper_open: bool) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and 0.0 <= value and (
        value < 1.0 if upper_open else value <= 1.0
    )
    if not ok:
        raise ValueError(f"{name}: expected a rate in [0, 1{')' if upper_open else ']'}, got {value!r}")


def _labels_vector(labels: Any, n: int) -> Tensor:
    y = torch.as_tensor(labels).reshape(-1)
    if y.numel() != n:
        raise ValueError(f"labels: expected {n} labels (one per feature row), got {y.numel()}")
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise ValueError("labels: expected 0 (benign) or 1 (harmful), got non-integer values")
    y = y.long()
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError(f"labels: expected 0 (benign) or 1 (harmful), got values {sorted(set(y.tolist()))}")
    return y


def _categories_vector(categories: Optional[Sequence[Optional[str]]], y: Tensor) -> list[Optional[str]]:
    if categories is None:
        return [None] * y.numel()
    if isinstance(categories, str):
        # A lone string is a sequence of characters: almost surely a mistake for a one-element list.
        raise TypeError(f"categories: expected a sequence of per-row names, got the string {categories!r}")
    cats = list(categories)
    if len(cats) != y.numel():
        raise ValueError(f"categories: expected {y.numel()} entries (one per row), got {len(cats)}")
    for i, (c, label) in enumerate(zip(cats, y.tolist())):
        if label == 1 and not (isinstance(c, str) and c):
            raise ValueError(f"categories: harmful row {i} has no category name")
    # A benign row's category plays no role: every benign row is a negative for every probe.
    return [c if label == 1 else None for c, label in zip(cats, y.tolist())]


def _rows_for(name: str, y: Tensor, cats: list[Optional[str]]) -> Tensor:
    if name == ANY:
        return torch.ones_like(y, dtype=torch.bool)
    return (y == 0) | torch.tensor([c == name for c in cats], dtype=torch.bool)


def _stratified_split(y: Tensor, cats: list[Optional[str]], holdout: float, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    train, held = [], []
    strata: dict[tuple[int, Optional[str]], list[int]] = {}
    for i, (label, c) in enumerate(zip(y.tolist(), cats)):
        strata.setdefault((label, c), []).append(i)
    for key in sorted(strata, key=lambda k: (k[0], k[1] or "")):
        idx = torch.tensor(strata[key])[torch.randperm(len(strata[key]), generator=g)]
        n_held = int(round(holdout * len(idx)))
        if len(idx) >= 2:
            n_held = min(max(n_held, 1), len(idx) - 1)  # keep both sides of a small stratum
        held.append(idx[:n_held])
        train.append(idx[n_held:])
    return torch.cat(train).sort().values, torch.cat(held).sort().values


def _require_both_classes(name: str, y: Tensor, split: str) -> None:
    if int((y == 1).sum()) == 0 or int((y == 0).sum()) == 0:
        raise ValueError(
            f"labels: the {split} split for probe {name!r} needs both harmful and benign rows "
            f"(has {int((y == 1).sum())} harmful, {int((y == 0).sum())} benign); add data or change holdout"
        )


def _fit_logistic(x: Tensor, y: Tensor, *, l2: float, max_iter: int) -> tuple[Tensor, float]:
    """Class-balanced L2 logistic regression on standardized features; returns raw-space (w, b)."""
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))  # constant columns carry no signal
    z = (x - mean) / std
    pos = float((y == 1).sum())
    neg = float((y == 0).sum())
    # Each class contributes half of the loss, whatever its size.
    sample_weight = torch.where(y == 1, 0.5 / pos, 0.5 / neg).double()
    target = y.double()
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
        history_size=20, line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        logits = z @ w + b
        loss = (sample_weight * torch.nn.functional.binary_cross_entropy_with_logits(
            logits, target, reduction="none")).sum() + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w_std, b_std = w.detach(), float(b.detach())
    w_raw = w_std / std
    return w_raw, b_std - float((w_raw * mean).sum())
