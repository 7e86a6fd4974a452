"""A probe that could never fire, or was made for something else, is refused wherever it enters."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch

from sasa import FingerprintError, SASAConfig, SASAProbe, SaturatedThresholdWarning, apply_sasa, calibrate
from sasa.probe import files as probe_files
from sasa.probe.fingerprint import model_fingerprint
from sasa.probe.sasa_probe import CONFIG_FILE, WEIGHTS_FILE
from tests.sasa import _tiny

F = _tiny.VOCAB


def _probe(**changes):
    fields = dict(weight=torch.zeros(1, F), bias=torch.zeros(1), threshold=torch.tensor([0.5]), categories=["any"])
    fields.update(changes)
    return SASAProbe(**fields)


@pytest.mark.parametrize(
    "changes, words",
    [
        (dict(threshold=torch.tensor([float("nan")])), "threshold: expected probabilities in"),
        (dict(threshold=torch.tensor([1.0000001])), "threshold: expected probabilities in"),
        (dict(threshold=torch.tensor([-0.1])), "threshold: expected probabilities in"),
        (dict(weight=torch.full((1, F), float("inf"))), "weight: contains"),
        (dict(bias=torch.tensor([float("nan")])), "bias: contains"),
        (dict(categories="any"), "categories"),
        (dict(weight=torch.zeros(1, F, device="meta")), "meta"),
        (dict(fingerprint="llama"), "fingerprint: expected a JSON object"),
        (dict(fingerprint={"model_type": "llama"}), "fingerprint: incomplete"),
    ],
)
def test_a_probe_that_could_never_fire_is_refused_at_construction(changes, words):
    with pytest.raises((ValueError, TypeError), match=words):
        _probe(**changes)


@pytest.mark.parametrize(
    "threshold, weight",
    [(1.5, torch.zeros(F)), (float("nan"), torch.zeros(F)), (0.5, torch.full((F,), float("nan")))],
)
def test_apply_sasa_refuses_an_inert_probe_object(threshold, weight):
    t = _tiny.llama()

    class Probe:
        pass

    probe = Probe()
    probe.weight, probe.bias, probe.threshold = weight, torch.zeros(1), threshold
    with pytest.raises(ValueError, match="probe (threshold|weight)"):
        apply_sasa(t.model, SASAConfig(1, 2), probe=probe)


def _write_raw_probe(directory, meta_changes=None, tensors=None):
    """A probe directory with a valid checksum whatever its contents (as an attacker or a bug could write)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors = tensors or {"weight": torch.zeros(1, F), "bias": torch.zeros(1), "threshold": torch.tensor([0.5])}
    save_file(tensors, str(directory / WEIGHTS_FILE))
    meta = {"format_version": 2, "sasa_config": SASAConfig(1, 2).to_dict(), "feature": "logits",
            "categories": ["any"], "threshold": [0.5], "feature_size": F, "metrics": {}, "fingerprint": None,
            "prompt_format": None}
    meta.update(meta_changes or {})
    meta["sha256"] = probe_files._checksum((directory / WEIGHTS_FILE).read_bytes(), meta)
    (directory / CONFIG_FILE).write_text(json.dumps(meta))
    return directory


def test_load_refuses_an_inert_probe_with_a_valid_checksum(tmp_path):
    bad = {"weight": torch.zeros(1, F), "bias": torch.zeros(1), "threshold": torch.tensor([1.5])}
    with pytest.raises(ValueError, match="threshold: expected probabilities in"):
        SASAProbe.load(_write_raw_probe(tmp_path / "p", tensors=bad))


@pytest.mark.parametrize(
    "meta, words",
    [
        (dict(metrics=[1, 2]), "'metrics' must be an object"),
        (dict(fingerprint="llama-7b"), "fingerprint: expected a JSON object"),
        (dict(fingerprint={"model_type": "llama", "hidden_size": 32}), "fingerprint: incomplete"),
    ],
)
def test_load_names_a_malformed_field(tmp_path, meta, words):
    with pytest.raises(ValueError, match=words):
        SASAProbe.load(_write_raw_probe(tmp_path / "p", meta))


def test_fit_never_returns_a_probe_that_cannot_fire():
    from sasa.probe.fit import _stratified_split

    # One held-out benign row far out along the signal: its score saturates at 1.0 in float32, so
    # "just above the highest benign score" would be 1.0000001, a threshold nothing can reach.
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 2
    x = torch.randn(200, 4, generator=g)
    x[:, 0] += torch.where(y == 1, 4.0, 0.0)
    _, held = _stratified_split(y, [None] * 200, 0.2, 0)
    outlier = int(held[y[held] == 0][0])
    x[outlier, 0] = 500.0
    with pytest.warns(SaturatedThresholdWarning, match="saturate at 1.0"):
        probe = SASAProbe.fit(x, y, target_fpr=0.0)
    assert probe.predict_proba(x[outlier:outlier + 1]).item() == 1.0
    assert float(probe.threshold.max()) <= 1.0
    assert probe.decide(torch.ones(1, 1)).item()  # a saturated score still flags


def test_an_explicit_config_that_differs_from_the_probes_is_refused():
    t = _tiny.llama()
    own = SASAConfig(1, 2, scope="last", feature="logits")
    probe = _probe(config=own, fingerprint=model_fingerprint(t.model))
    for other in (own.replace(safety_layer=0), own.replace(scope="all"), own.replace(mode="residual", coef=0.5),
                  own.replace(eps=1e-3)):
        with pytest.raises(ValueError, match=r"config: differs from the config the probe was calibrated with"):
            apply_sasa(t.model, other, probe=probe)
    with pytest.raises(ValueError, match=r"config.feature: 'hidden', but the probe reads 'logits'"):
        apply_sasa(t.model, own.replace(feature="hidden"), probe=probe)
    # Settings that do not change the features are fine, and so is an explicit opt-in.
    apply_sasa(t.model, own.replace(refusal_text="No.", coef=7.0), probe=probe).remove()
    apply_sasa(t.model, own.replace(scope="all"), probe=probe, allow_config_override=True).remove()


def test_save_requires_a_fingerprint_unless_opted_out(tmp_path):
    probe = _probe()
    with pytest.raises(ValueError, match="has no model fingerprint"):
        probe.save(tmp_path / "p")
    probe.save(tmp_path / "p", allow_unfingerprinted=True)
    t = _tiny.llama()
    with pytest.raises(FingerprintError, match="has no model fingerprint"):
        SASAProbe.load(tmp_path / "p", model=t.model)
    with pytest.raises(FingerprintError, match="has no model fingerprint"):
        apply_sasa(t.model, SASAConfig(1, 2), probe=tmp_path / "p")
    SASAProbe.load(tmp_path / "p", model=t.model, require_fingerprint=False)  # the escape hatch


def test_the_fingerprint_does_not_depend_on_the_dtype_the_model_was_loaded_in(tmp_path):
    t = _tiny.llama()
    bf16 = copy.deepcopy(t.model).to(torch.bfloat16)
    probe = _probe(fingerprint=model_fingerprint(bf16), config=SASAConfig(1, 2))
    probe.save(tmp_path / "p")
    apply_sasa(t.model, probe=tmp_path / "p").remove()  # calibrated in bf16, applied in fp32
    apply_sasa(copy.deepcopy(t.model).half(), probe=tmp_path / "p").remove()
    other = _tiny.llama()
    with torch.no_grad():
        other.model.model.layers[1].mlp.up_proj.weight.mul_(1.05)  # one matrix changed by 5%
    with pytest.raises(FingerprintError, match=r"layers\.1\.mlp\.up_proj\.weight differ"):
        apply_sasa(other.model, probe=tmp_path / "p")


def test_a_probe_object_with_a_fingerprint_is_checked_too():
    t, other = _tiny.llama(), _tiny.qwen3()
    probe = _probe(fingerprint=model_fingerprint(other.model), config=SASAConfig(1, 2))
    with pytest.raises(FingerprintError, match="model_type is 'qwen3' in the probe but 'llama'"):
        apply_sasa(t.model, probe=probe)


def test_fingerprinting_a_model_on_the_meta_device_names_the_problem():
    import transformers as T

    with torch.device("meta"):
        model = T.LlamaForCausalLM(T.LlamaConfig(**_tiny.TEXT))
    with pytest.raises(ValueError, match="meta device"):
        model_fingerprint(model)


def test_saving_over_a_probe_is_atomic(tmp_path, monkeypatch):
    t = _tiny.llama()
    old = _probe(fingerprint=model_fingerprint(t.model), config=SASAConfig(1, 2))
    directory = old.save(tmp_path / "p")
    (directory / "roc.png").write_bytes(b"plot")
    new = _probe(fingerprint=model_fingerprint(t.model), config=SASAConfig(1, 2), threshold=torch.tensor([0.25]))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(probe_files.json, "dumps", broken)  # fails while writing sasa_config.json
    with pytest.raises(OSError, match="disk full"):
        new.save(directory)
    monkeypatch.undo()
    assert float(SASAProbe.load(directory, model=t.model).threshold[0]) == 0.5  # the old probe, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # no temporary left behind
    new.save(directory)
    assert float(SASAProbe.load(directory, model=t.model).threshold[0]) == 0.25
    assert (directory / "roc.png").read_bytes() == b"plot"  # other files kept


def test_saving_over_a_probe_without_renameat2(tmp_path, monkeypatch):
    t = _tiny.llama()
    first = _probe(fingerprint=model_fingerprint(t.model), config=SASAConfig(1, 2))
    directory = first.save(tmp_path / "p")
    monkeypatch.setattr(probe_files, "_exchange", lambda a, b: False)
    _probe(fingerprint=first.fingerprint, config=SASAConfig(1, 2), threshold=torch.tensor([0.75])).save(directory)
    assert float(SASAProbe.load(directory).threshold[0]) == 0.75
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]


def test_save_refuses_a_directory_that_is_not_a_probe(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    probe = _probe(fingerprint={"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 4,
                                "vocab_size": 99, "head_sha256": "ab" * 32})
    with pytest.raises(ValueError, match="is not empty and holds no sasa probe"):
        probe.save(tmp_path)


def test_undefined_metrics_are_written_as_null(tmp_path):
    probe = _probe(fingerprint={"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 4,
                                "vocab_size": 99, "head_sha256": "ab" * 32})
    from sasa.metrics import ProbeMetrics

    probe.metrics = {"any": ProbeMetrics(float("nan"), 0.5, float("nan"), 0.1, 0.5, 0, 10)}
    directory = probe.save(tmp_path / "p")
    text = (directory / CONFIG_FILE).read_text()
    assert "NaN" not in text and json.loads(text)["metrics"]["any"]["auroc"] is None
    assert np.isnan(SASAProbe.load(directory).metrics["any"].auroc)


def test_fit_rejects_empty_inputs():
    with pytest.raises(ValueError, match="features: no rows"):
        SASAProbe.fit(torch.zeros(0, 4), [])
    with pytest.raises(ValueError, match="features: no feature columns"):
        SASAProbe.fit(torch.zeros(10, 0), [0, 1] * 5)
    with pytest.raises(TypeError, match="categories: expected a sequence of per-row names, got the string"):
        SASAProbe.fit(torch.randn(10, 2), [0, 1] * 5, categories="x")


def test_repr_is_short_and_names_what_matters():
    t = _tiny.llama()
    probe = _probe(fingerprint=model_fingerprint(t.model), config=SASAConfig(1, 2))
    text = repr(probe)
    assert len(text) < 300 and "tensor(" not in text
    assert "layers=(1, 2)" in text and "fingerprinted=True" in text
    with apply_sasa(t.model, probe=probe) as guard:
        assert "layers=(1, 2) of 4" in repr(guard) and "active" in repr(guard)
    assert "removed" in repr(guard)


def test_calibrated_probes_carry_everything_needed(tmp_path):
    from sasa.demo.stand_in import DEMO_MANIFEST, build_default

    model, tokenizer = build_default()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SaturatedThresholdWarning)
        probe, _ = calibrate(model, tokenizer, DEMO_MANIFEST, SASAConfig(1, 3), progress=False)
    assert probe.fingerprint is not None and probe.prompt_format is not None
    assert probe.prompt_format.kind == "chat_template" and probe.prompt_format.generation_suffix
    loaded = SASAProbe.load(probe.save(tmp_path / "p"), model=model)
    assert loaded.prompt_format == probe.prompt_format and loaded.fingerprint == probe.fingerprint


# --- hostile probe files: refused naming the file, before anything large is read ----------------


def _rechecksum(directory):
    """Make the directory's checksum match its files again (as an attacker or a buggy tool would),
    so a test reaches the check after the checksum, not the checksum itself."""
    meta = json.loads((directory / CONFIG_FILE).read_text())
    meta.pop("sha256")
    meta["sha256"] = probe_files._checksum((directory / WEIGHTS_FILE).read_bytes(), meta)
    (directory / CONFIG_FILE).write_text(json.dumps(meta))


@pytest.mark.parametrize("name, value", [("weight", float("nan")), ("bias", float("inf")), ("threshold", float("nan"))])
def test_load_refuses_non_finite_tensors_naming_the_weights_file(tmp_path, name, value):
    tensors = {"weight": torch.zeros(1, F), "bias": torch.zeros(1), "threshold": torch.tensor([0.5])}
    tensors[name] = torch.full_like(tensors[name], value)
    directory = _write_raw_probe(tmp_path / "p", tensors=tensors)  # with a valid checksum
    with pytest.raises(ValueError, match=rf"probe: .*p/{WEIGHTS_FILE}: tensor '{name}' holds \d+ NaN or infinite"):
        SASAProbe.load(directory)


def test_load_refuses_a_huge_safetensors_header_before_reading_the_file(tmp_path):
    import tracemalloc

    directory = _write_raw_probe(tmp_path / "p")
    claimed = 100_000_000
    with (directory / WEIGHTS_FILE).open("wb") as handle:  # a sparse file: 100 MB long, no disk used
        handle.write(claimed.to_bytes(8, "little"))
        handle.truncate(8 + claimed + 16)
    _rechecksum(directory)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=rf"{WEIGHTS_FILE}: its safetensors header claims {claimed} bytes"):
            SASAProbe.load(directory)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, f"{peak} bytes allocated to refuse it"


def test_load_refuses_a_header_longer_than_the_file(tmp_path):
    directory = _write_raw_probe(tmp_path / "p")
    raw = (directory / WEIGHTS_FILE).read_bytes()
    (directory / WEIGHTS_FILE).write_bytes((len(raw) + 100).to_bytes(8, "little") + raw[8:])
    _rechecksum(directory)
    with pytest.raises(ValueError, match=rf"{WEIGHTS_FILE}: its safetensors header claims {len(raw) + 100} bytes "
                                         rf"\(the file has {len(raw)};"):
        SASAProbe.load(directory)


def test_load_refuses_a_weights_file_over_the_size_limit(tmp_path, monkeypatch):
    directory = _write_raw_probe(tmp_path / "p")
    size = (directory / WEIGHTS_FILE).stat().st_size
    monkeypatch.setattr(probe_files, "MAX_WEIGHTS_BYTES", size - 1)
    with pytest.raises(ValueError, match=rf"{WEIGHTS_FILE} is {size} bytes, over the {size - 1} a probe file may have"):
        SASAProbe.load(directory)


def test_load_refuses_a_config_nested_too_deep_to_parse(tmp_path):
    directory = _write_raw_probe(tmp_path / "p")
    (directory / CONFIG_FILE).write_text("[" * 200_000)  # small, but deeper than json's recursion allows
    with pytest.raises(ValueError, match=rf"probe: .*p/{CONFIG_FILE} is not valid JSON"):
        SASAProbe.load(directory)
