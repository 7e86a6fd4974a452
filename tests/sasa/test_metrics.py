"""Probe metrics against hand-worked cases."""

from __future__ import annotations

import math

import pytest
import torch

from sasa.metrics import auroc, bootstrap_interval, metrics_at, roc_curve, threshold_for_fpr


def test_auroc_perfect_inverted_and_ties():
    labels = torch.tensor([0, 0, 1, 1])
    assert auroc(torch.tensor([0.1, 0.2, 0.8, 0.9]), labels) == 1.0
    assert auroc(torch.tensor([0.9, 0.8, 0.2, 0.1]), labels) == 0.0
    assert auroc(torch.tensor([0.5, 0.5, 0.5, 0.5]), labels) == 0.5
    # One harmful row ties one benign row: 3 of 4 pairs won, the tie counts a half.
    assert auroc(torch.tensor([0.1, 0.6, 0.6, 0.9]), labels) == 3.5 / 4
    assert math.isnan(auroc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])))


def test_auroc_matches_the_pairwise_definition():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 10, (200,), generator=g).double()  # many ties
    labels = torch.randint(0, 2, (200,), generator=g)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = ((pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()).mean()
    assert abs(auroc(scores, labels) - float(pairwise)) < 1e-12


def test_roc_curve_endpoints_and_monotone():
    fpr, tpr = roc_curve(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert bool((fpr.diff() >= 0).all() and (tpr.diff() >= 0).all())


def test_threshold_for_fpr_never_exceeds_the_target():
    benign = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.9])
    thr = threshold_for_fpr(benign, 0.1)  # one of ten may be flagged... but 0.9 is tied twice
    assert float((benign >= thr).double().mean()) <= 0.1
    assert thr > 0.9
    thr = threshold_for_fpr(benign, 0.25)  # two of ten: the two 0.9s
    assert float((benign >= thr).double().mean()) == 0.2
    assert threshold_for_fpr(benign, 0.0) > 0.9


def test_metrics_fail_closed_on_nan():
    m = metrics_at(torch.tensor([float("nan"), 0.1, 0.9]), torch.tensor([0, 0, 1]), 0.5)
    assert m.fpr == 0.5 and m.tpr == 1.0 and m.num_benign == 2 and m.num_harmful == 1


# --- bootstrap_interval ----------------------------------------------------------------------------


def _separable(n_pos: int, n_neg: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping scores (AUROC about 0.8): harmful rows drawn one standard deviation higher."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.cat([torch.randn(n_pos, generator=g) + 1.2, torch.randn(n_neg, generator=g)]).double()
    return scores, torch.cat([torch.ones(n_pos), torch.zeros(n_neg)]).long()


def test_bootstrap_interval_contains_the_estimate_and_is_seeded():
    scores, labels = _separable(60, 60)
    low, high = bootstrap_interval(scores, labels, auroc, replicates=300, seed=3)
    assert low < auroc(scores, labels) < high
    assert 0.0 <= low < high <= 1.0
    assert bootstrap_interval(scores, labels, auroc, replicates=300, seed=3) == (low, high)
    assert bootstrap_interval(scores, labels, auroc, replicates=300, seed=4) != (low, high)


def test_bootstrap_interval_narrows_with_more_rows():
    small = bootstrap_interval(*_separable(20, 20), auroc, replicates=300)
    large = bootstrap_interval(*_separable(400, 400), auroc, replicates=300)
    # The width shrinks like 1/sqrt(n): 20x the rows, about a quarter of the width.
    assert (large[1] - large[0]) < 0.5 * (small[1] - small[0])


def test_bootstrap_interval_keeps_both_classes_in_every_replicate():
    # One harmful row among 30: an unstratified resample would miss it in about 37% of replicates
    # (AUROC NaN there); stratified, every replicate has it, with its 30 benign rows.
    scores, labels = _separable(1, 30)
    seen = []

    def counts(s: torch.Tensor, y: torch.Tensor) -> float:
        seen.append((int((y == 1).sum()), int((y == 0).sum())))
        return auroc(s, y)

    low, high = bootstrap_interval(scores, labels, counts, replicates=200)
    assert len(seen) == 200 and set(seen) == {(1, 30)}
    assert not math.isnan(low) and not math.isnan(high)


def test_bootstrap_interval_of_a_perfect_separator_is_one():
    scores, labels = torch.tensor([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]), torch.tensor([0, 0, 0, 1, 1, 1])
    assert bootstrap_interval(scores, labels, auroc, replicates=100) == (1.0, 1.0)


def test_bootstrap_interval_percentiles_of_the_replicates():
    # A metric that is the mean of the resampled benign scores: with benign scores 0 and 1 in equal
    # numbers (n = 100, standard error 0.05), the 2.5% / 97.5% percentiles lie about 0.1 either side of 0.5.
    scores, labels = torch.tensor([0.0, 1.0] * 50 + [5.0]), torch.tensor([0] * 100 + [1])
    low, high = bootstrap_interval(scores, labels, lambda s, y: float(s[y == 0].mean()), replicates=500)
    assert 0.3 < low < 0.5 < high < 0.7
    # Every replicate is a mean of benign rows only: the harmful 5.0 never leaks into that stratum.
    assert high < 1.0


def test_bootstrap_interval_all_nan_and_bad_arguments():
    scores, labels = torch.tensor([0.1, 0.9]), torch.tensor([1, 1])
    low, high = bootstrap_interval(scores, labels, auroc, replicates=10)  # one class: AUROC undefined
    assert math.isnan(low) and math.isnan(high)
    for kwargs in ({"replicates": 0}, {"level": 1.0}):
        with pytest.raises(ValueError):
            bootstrap_interval(scores, labels, auroc, **kwargs)
