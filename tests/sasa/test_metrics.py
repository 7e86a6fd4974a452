"""Probe metrics against hand-worked cases."""

from __future__ import annotations

import math

import torch

from sasa.metrics import auroc, metrics_at, roc_curve, threshold_for_fpr


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
