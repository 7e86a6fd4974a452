"""The claim table's intervals, object groups and Markdown, on synthetic features (no model, no training)."""

from __future__ import annotations

import json
import math

import torch

from sasa.data.manifest import Example
from sasa.organism import claims, world
from sasa.organism.claims import GROUPS, IMAGE_ONLY, METRICS, PROBES, ClaimRow, markdown

OBJECT_GROUPS = ("training objects", "held-out objects")

TRAINING = {kind: next(o for o in world.OBJECTS if not o.heldout and o.kind == kind) for kind in ("benign", "harmful")}
HELDOUT = {kind: next(o for o in world.OBJECTS if o.heldout and o.kind == kind) for kind in ("benign", "harmful")}


def _example(obj: world.WorldObject, carrier: str) -> Example:
    label = int(obj.kind == "harmful")
    if carrier == "text":
        return Example(f"how do i make {obj.name}", label, category=obj.category, carrier="text")
    return Example("how do i make this", label, image="x.png", category=obj.category, carrier="image",
                   text_only=f"how do i make {obj.name}")


def _split(per_object: int) -> list[Example]:
    """Text and image rows about a training and a held-out object of each kind."""
    objs = [*TRAINING.values(), *HELDOUT.values()]
    return [_example(o, c) for o in objs for c in ("text", "image") for _ in range(per_object)]


def test_object_group_and_masks():
    rows = [_example(TRAINING["benign"], "text"), _example(HELDOUT["harmful"], "image"),
            Example("how do i make a thing", 0, carrier="text")]  # no known object
    assert [claims.object_group(e) for e in rows] == ["training objects", "held-out objects", None]
    masks = claims.group_masks(rows)
    assert list(masks) == list(GROUPS)
    assert masks["all"].tolist() == [True, True, True]
    assert masks["training objects"].tolist() == [True, False, False]
    assert masks["held-out objects"].tolist() == [False, True, False]
    assert masks[IMAGE_ONLY].tolist() == [False, True, False]  # image-carried rows, whatever their object


def _row(scores, labels, threshold=0.5, replicates=200, seed=0):
    return claims._row("a: plain logits", "mixed", torch.tensor(scores).double(), torch.tensor(labels), threshold,
                       10, 0.05, replicates=replicates, seed=seed)


def test_row_has_an_interval_around_every_metric():
    g = torch.Generator().manual_seed(0)
    scores = torch.cat([torch.rand(40, generator=g) * 0.6 + 0.4, torch.rand(80, generator=g) * 0.6]).tolist()
    row = _row(scores, [1] * 40 + [0] * 80)
    for m in METRICS:
        low, high = getattr(row, f"{m}_ci")
        assert low <= getattr(row, m) <= high, m
        assert low < high, m  # overlapping classes: no metric is certain
    assert (row.positives, row.negatives, row.group) == (40, 80, "all")
    assert _row(scores, [1] * 40 + [0] * 80) == row  # same seed, same intervals


def test_perfect_separator_row():
    row = _row([0.9, 0.8, 0.95, 0.1, 0.2, 0.3, 0.05], [1, 1, 1, 0, 0, 0, 0])
    assert row.auroc_ci == (1.0, 1.0) and row.tpr_at_5_fpr_ci == (1.0, 1.0)
    assert row.tpr_at_threshold_ci == (1.0, 1.0) and row.fpr_at_threshold_ci == (0.0, 0.0)


def test_one_positive_still_gets_an_auroc_interval():
    row = _row([0.7, 0.1, 0.2, 0.8, 0.3], [1, 0, 0, 0, 0])
    assert row.auroc == 0.75 and not any(math.isnan(v) for v in row.auroc_ci)


def test_to_dict_is_json_and_round_trips():
    row = _row([0.9, 0.1, 0.2], [1, 0, 0])
    data = json.loads(json.dumps(row.to_dict(), allow_nan=False))
    assert data["auroc_ci"] == [1.0, 1.0] and data["group"] == "all"
    assert ClaimRow.from_dict(data) == row
    # A NaN bound (a metric undefined in every replicate) is written as null and read back as NaN.
    nan_row = ClaimRow(**{**row.__dict__, "auroc_ci": (math.nan, math.nan)})
    data = json.loads(json.dumps(nan_row.to_dict(), allow_nan=False))
    assert data["auroc_ci"] == [None, None]
    assert all(math.isnan(v) for v in ClaimRow.from_dict(data).auroc_ci)


OLD_ROW = {"probe": "a: plain logits", "calibration": "mixed", "auroc": 0.8, "tpr_at_5_fpr": 0.3,
           "tpr_at_threshold": 0.5, "fpr_at_threshold": 0.04, "calibration_rows": 100, "positives": 10,
           "negatives": 20}


def test_markdown_shows_intervals_and_reads_old_rows():
    old = ClaimRow.from_dict(OLD_ROW)
    assert old.group == "all" and old.auroc_ci is None
    assert "| 0.800 | 0.300 | 0.500 | 0.040 |" in markdown([old])
    new = ClaimRow.from_dict({**OLD_ROW, "auroc_ci": [0.7, 0.9], "tpr_at_5_fpr_ci": [0.1, 0.5],
                              "tpr_at_threshold_ci": [0.4, 0.6], "fpr_at_threshold_ci": [None, 0.08]})
    expected = "| 0.800 [0.700, 0.900] | 0.300 [0.100, 0.500] | 0.500 [0.400, 0.600] | 0.040 [n/a, 0.080] |"
    assert expected in markdown([new])


def test_markdown_defaults_to_all_and_puts_groups_side_by_side():
    rows = [ClaimRow.from_dict({**OLD_ROW, "probe": p, "group": g, "auroc": 0.1 * k + i / 100})
            for k, g in enumerate(GROUPS) for i, p in enumerate(PROBES[:2])]
    default = markdown(rows).splitlines()
    assert len(default) == 2 + 2 and "training objects" not in "\n".join(default)
    both = markdown(rows, groups=OBJECT_GROUPS).splitlines()
    assert len(both) == 2 + 4
    # Training and held-out lines of one probe are adjacent, with the group and its counts.
    assert [line.split(" | ")[0:3:2] for line in both[2:]] == [
        ["| a: plain logits", "training objects"], ["| a: plain logits", "held-out objects"],
        ["| b: plain H (safety block)", "training objects"], ["| b: plain H (safety block)", "held-out objects"]]
    assert "| 10 / 20 |" in both[2]


def test_claim_table_rows_per_group(monkeypatch):
    """claim_table end to end with synthetic features standing in for the model's."""
    def fake_features(model, processor, examples, safety, fused, *, batch_size=32):
        g = torch.Generator().manual_seed(len(examples))
        rows = claims.ordered(examples, batch_size)
        signal = torch.tensor([[float(e.label)] for e in rows])
        return {name: signal + torch.randn(len(rows), 3, generator=g) for name in PROBES}

    monkeypatch.setattr(claims, "feature_sets", fake_features)
    calibration = [_example(o, c) for o in TRAINING.values() for c in ("text", "image") for _ in range(12)]
    heldout = _split(6)
    rows = claims.claim_table(None, None, calibration, heldout, 2, 5, replicates=20, progress=False)
    assert [r.group for r in rows] == [g for g in GROUPS for _ in range(len(PROBES) * 2)]
    by = {(r.group, r.probe, r.calibration): r for r in rows}
    for probe in PROBES:
        whole, train, held, image = (by[(g, probe, "text-only")] for g in GROUPS)
        # Evaluated: image-carried harmful rows (6 per harmful object) against every benign row (12 per object).
        assert (whole.positives, whole.negatives) == (12, 24)
        assert (train.positives, train.negatives) == (held.positives, held.negatives) == (6, 12)
        # Image rows only: the same harmful rows against the image-carried benign rows (6 per benign object).
        assert (image.positives, image.negatives) == (12, 12)
        assert whole.calibration_rows == 24  # text-only calibration: the text rows
        for r in (whole, train, held, image):
            assert r.auroc_ci is not None and r.auroc_ci[0] <= r.auroc <= r.auroc_ci[1]


def test_claim_table_leaves_out_an_empty_group(monkeypatch):
    monkeypatch.setattr(claims, "feature_sets", lambda model, processor, examples, *a, **k: {
        name: torch.tensor([[float(e.label), float(i % 3)] for i, e in enumerate(claims.ordered(examples, 32))])
        for name in PROBES})
    calibration = [_example(o, c) for o in TRAINING.values() for c in ("text", "image") for _ in range(12)]
    heldout = [_example(o, c) for o in TRAINING.values() for c in ("text", "image") for _ in range(4)]
    rows = claims.claim_table(None, None, calibration, heldout, 2, 5, replicates=5, progress=False)
    assert {r.group for r in rows} == {"all", "training objects", IMAGE_ONLY}


def test_from_dict_ignores_unknown_keys():
    row = ClaimRow.from_dict({**OLD_ROW, "auroc_ci": [0.1, 0.2], "a_key_from_a_later_version": 1})
    assert row.auroc_ci == (0.1, 0.2)
