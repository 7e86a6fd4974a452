"""SASAProbe: fitting, thresholds, several categories, save/load, and refusing bad files."""

from __future__ import annotations

import json

import pytest
import torch

from sasa import SASAConfig
from sasa.probe.fingerprint import _v1_fingerprint, check_fingerprint, model_fingerprint
from sasa.probe.sasa_probe import COMBINED, CONFIG_FILE, WEIGHTS_FILE, SASAProbe
from tests.sasa import _tiny

#: A complete (version 1) fingerprint for probes whose model does not matter in the test.
SOME_FINGERPRINT = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 4, "vocab_size": 99,
                    "head_sha256": "ab" * 32}


def _planted(n=400, f=32, seed=0, shift=1.5):
    """Benign and harmful features differing along a planted direction (plumbing, not safety)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    direction = torch.randn(f, generator=g)
    x = torch.randn(n, f, generator=g) * 3 + 10  # offset and scale: standardization must cope
    x += shift * y[:, None] * direction
    return x, y


def test_fit_learns_a_planted_signal_and_is_deterministic():
    x, y = _planted()
    probe = SASAProbe.fit(x, y, target_fpr=0.05, seed=3)
    again = SASAProbe.fit(x, y, target_fpr=0.05, seed=3)
    assert torch.equal(probe.weight, again.weight) and torch.equal(probe.bias, again.bias)
    m = probe.metrics["any"]
    assert m.auroc > 0.95 and m.fpr <= 0.05 and m.tpr > 0.5
    assert m.num_benign + m.num_harmful == 80  # 20% held out
    assert probe.categories == ["any"] and probe.num_probes == 1


def test_folded_standardization_gives_raw_feature_probabilities():
    x, y = _planted()
    probe = SASAProbe.fit(x, y)
    p = probe.predict_proba(x)
    assert p.shape == (400, 1) and bool(((p > 0) & (p < 1)).all())
    # Harmful rows score higher on average: the probe acts on raw features, not standardized ones.
    assert float(p[y == 1].mean()) > float(p[y == 0].mean()) + 0.3


def test_no_signal_gives_chance_auroc():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(600, 8, generator=g), torch.arange(600) % 2
    probe = SASAProbe.fit(x, y)
    assert 0.3 < probe.metrics["any"].auroc < 0.7


def test_categories_give_any_plus_one_probe_each():
    g = torch.Generator().manual_seed(2)
    n, f = 600, 24
    y = (torch.arange(n) % 3 != 0).long()
    cats = [None if label == 0 else ("weapons" if i % 2 else "drugs") for i, label in enumerate(y.tolist())]
    x = torch.randn(n, f, generator=g)
    dirs = {"weapons": torch.randn(f, generator=g), "drugs": torch.randn(f, generator=g)}
    for i, c in enumerate(cats):
        if c:
            x[i] += 2 * dirs[c]
    probe = SASAProbe.fit(x, y, categories=cats)
    assert probe.categories == ["any", "drugs", "weapons"]
    assert probe.weight.shape == (3, f) and probe.threshold.shape == (3,)
    assert all(probe.metrics[name].auroc > 0.9 for name in probe.categories)
    combined = probe.metrics[COMBINED]  # the decision itself: any probe at its threshold
    assert combined.fpr <= 0.05 and combined.tpr > 0.8
    assert all(probe.metrics[name].fpr <= 0.05 / 3 for name in probe.categories)
    flagged = probe.decide(probe.predict_proba(x))
    assert flagged.shape == (n,)


def test_decide_flags_nan():
    x, y = _planted()
    probe = SASAProbe.fit(x, y)
    probs = torch.tensor([[float("nan")], [0.0]])
    assert probe.decide(probs).tolist() == [True, False]
    assert probe.decide(probs[:, 0]).tolist() == [True, False]  # [N] for a single probe


def test_decide_refuses_a_width_that_would_broadcast():
    g = torch.Generator().manual_seed(2)
    y = torch.arange(90) % 3
    cats = [None if v == 0 else ("a" if v == 1 else "b") for v in y.tolist()]
    probe = SASAProbe.fit(torch.randn(90, 6, generator=g), (y > 0).long(), categories=cats)
    assert probe.num_probes == 3
    with pytest.raises(ValueError, match=r"probabilities: expected shape \[N, 3\]"):
        probe.decide(torch.rand(5, 1))  # one column against three thresholds
    with pytest.raises(ValueError, match="probabilities"):
        probe.decide(torch.rand(5))


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(labels=[0, 1, 2] * 10), ValueError, "labels"),
        (dict(labels=[0, 1]), ValueError, "labels"),
        (dict(features=torch.ones(30, dtype=torch.long)), TypeError, "features"),
        (dict(features=torch.ones(30)), ValueError, "features"),
        (dict(target_fpr=1.5), ValueError, "target_fpr"),
        (dict(holdout=0.0), ValueError, "holdout"),
        (dict(l2=-1.0), ValueError, "l2"),
        (dict(labels=[0] * 30), ValueError, "labels: the training split"),
        (dict(categories=["a"] * 29), ValueError, "categories"),
        (dict(categories=[None] * 30), ValueError, "categories: harmful row 1 has no category"),
    ],
)
def test_fit_rejects_bad_input(kwargs, exc, match):
    args = dict(features=torch.randn(30, 4), labels=[0, 1] * 15) | kwargs
    with pytest.raises(exc, match=match):
        SASAProbe.fit(args.pop("features"), args.pop("labels"), **args)


def test_fit_rejects_nan_features():
    x, y = _planted(n=40)
    x[3, 2] = float("nan")
    with pytest.raises(ValueError, match="features: contains NaN"):
        SASAProbe.fit(x, y)


@pytest.fixture
def saved(tmp_path):
    x, y = _planted()
    probe = SASAProbe.fit(
        x, y, config=SASAConfig(safety_layer=1, fused_layer=3, feature="hidden"), feature="hidden",
        fingerprint=SOME_FINGERPRINT,
    )
    return probe, probe.save(tmp_path / "probe"), x


def test_save_load_round_trip_is_bit_identical(saved):
    probe, directory, x = saved
    loaded = SASAProbe.load(directory)
    assert torch.equal(loaded.predict_proba(x), probe.predict_proba(x))
    assert loaded.config == probe.config and loaded.feature == "hidden"
    assert loaded.metrics == probe.metrics and loaded.categories == probe.categories
    assert not any(p.suffix in (".pkl", ".pt", ".bin") for p in directory.iterdir())  # no pickle


def test_load_missing_file(saved):
    _, directory, _ = saved
    (directory / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        SASAProbe.load(directory)


def test_load_truncated_weights(saved):
    _, directory, _ = saved
    path = directory / WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError, match="checksum mismatch"):
        SASAProbe.load(directory)


def test_load_edited_threshold(saved):
    _, directory, _ = saved
    path = directory / CONFIG_FILE
    meta = json.loads(path.read_text())
    meta["threshold"] = [0.01]
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="edited"):
        SASAProbe.load(directory)


def test_load_invalid_json(saved):
    _, directory, _ = saved
    (directory / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        SASAProbe.load(directory)


def _llama(layers=4, seed=0):
    import transformers as T

    torch.manual_seed(seed)
    return T.LlamaForCausalLM(T.LlamaConfig(**dict(_tiny.TEXT, num_hidden_layers=layers))).eval()


def test_fingerprint_names_the_differing_field():
    model = _llama()
    fp = model_fingerprint(model)
    assert fp["model_type"] == "llama" and fp["vocab_size"] == _tiny.VOCAB and fp["version"] == 2
    assert all(len(t["samples"]) == 8 for t in fp["tensors"])
    check_fingerprint(fp, model)
    with pytest.raises(ValueError, match="num_hidden_layers is 4 in the probe but 5"):
        check_fingerprint(fp, _llama(layers=5))
    with pytest.raises(ValueError, match="fitted for a different model: the weights of input_embeddings.weight differ"):
        check_fingerprint(fp, _llama(seed=1))


def test_version_1_fingerprints_are_still_checked_exactly():
    model = _llama()
    fp = _v1_fingerprint(model)
    assert len(fp["head_sha256"]) == 64
    check_fingerprint(fp, model)
    with pytest.raises(ValueError, match="head_sha256"):
        check_fingerprint(fp, _llama(seed=1))


def test_apply_sasa_takes_a_probe_object_or_directory(tmp_path):
    from sasa import apply_sasa
    from sasa.demo.stand_in import build_default

    model, tokenizer = build_default()
    config = SASAConfig(safety_layer=1, fused_layer=3, feature="hidden")
    g = torch.Generator().manual_seed(0)
    features, labels = torch.randn(40, 64, generator=g), torch.arange(40) % 2
    probe = SASAProbe.fit(features, labels, config=config, feature="hidden", fingerprint=model_fingerprint(model))
    inputs = tokenizer(["how do i bake bread", "write ransomware"], return_tensors="pt", padding=True)
    guard = apply_sasa(model, probe=probe)  # config taken from the probe
    from_object = guard.score(**inputs)
    guard.remove()
    guard = apply_sasa(model, probe=str(probe.save(tmp_path / "p")))  # and from its directory
    assert torch.equal(guard.score(**inputs), from_object)
    guard.remove()
    other, _ = build_default(seed=1)
    with pytest.raises(ValueError, match="fitted for a different model"):
        apply_sasa(other, probe=tmp_path / "p")
