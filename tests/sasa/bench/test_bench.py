"""``sasa.bench`` and ``sasa bench``: what they time and report (never how fast anything is)."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from sasa import SASAConfig, SASAProbe, model_fingerprint
from sasa.bench import (
    Guarded,
    LoadReport,
    Measurement,
    Point,
    TimedRowFlagged,
    Unguarded,
    compare_ttft,
    format_table,
    measure,
    passing_probe,
    summarize,
    synthetic_inputs,
    time_generate,
)
from sasa.bench.series import generation_kwargs
from sasa.cli.app import main
from sasa.demo.stand_in import build_default, save_default
from tests.sasa.cli.test_cli_vlm import llava_workspace  # noqa: F401  (fixture: a tiny LLaVA with its processor)


@pytest.fixture(scope="module")
def demo():
    model, tokenizer = build_default()
    return model, tokenizer


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return save_default(tmp_path_factory.mktemp("bench") / "model")


def _inputs(model, tokenizer, batch=1, length=12):
    return synthetic_inputs(model, tokenizer, batch, length, seed=1)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_synthetic_inputs_have_the_exact_length_and_no_special_tokens(demo):
    model, tokenizer = demo
    inputs = synthetic_inputs(model, tokenizer, 3, 17)
    assert inputs["input_ids"].shape == (3, 17) and bool(inputs["attention_mask"].all())
    assert not set(inputs["input_ids"].flatten().tolist()) & set(tokenizer.all_special_ids)
    with pytest.raises(ValueError, match="prompt_len"):
        synthetic_inputs(model, tokenizer, 1, 0)


def test_time_generate_stamps_every_new_token(demo):
    model, tokenizer = demo
    timing, out = time_generate(model.generate, _inputs(model, tokenizer), 3, torch.device("cpu"),
                                **generation_kwargs(model, 3))
    assert out.shape[1] == 12 + 3
    assert timing.new_tokens == 3 and timing.ttft_ms > 0 and timing.per_token_ms > 0


def test_passing_probe_never_fires_and_matches_the_feature_width(demo):
    model, tokenizer = demo
    for feature, width in (("logits", model.config.vocab_size), ("hidden", model.config.hidden_size)):
        weight, bias = passing_probe(model, SASAConfig(2, 4, feature=feature))
        assert weight.shape == (1, width) and bias.shape == (1,) and float(torch.sigmoid(bias)) < 1e-12


def test_a_flagged_timed_row_is_an_error_not_a_fake_per_token_cost(demo):
    model, tokenizer = demo
    config = SASAConfig(2, 4, feature="hidden")
    firing = (torch.zeros(1, model.config.hidden_size), torch.full((1,), 30.0))
    series = [Unguarded(), Guarded(config, probe=firing, tokenizer=tokenizer)]
    with pytest.raises(TimedRowFlagged, match="flagged"):
        measure(model, [Point(1, 12, _inputs(model, tokenizer))], series, rounds=1, warmup=0, new_tokens=3,
                memory=False, progress=False)


def test_measure_interleaves_rotating_the_order_and_removes_every_guard(demo):
    model, tokenizer = demo
    order = []

    class Spy(Unguarded):
        def __init__(self, name):
            self.name = name

        def session(self, m):
            order.append(self.name)
            return super().session(m)

    series = [Spy("a"), Spy("b"), Guarded(SASAConfig(2, 4, scope="last"), tokenizer=tokenizer)]
    found = measure(model, [Point(1, 12, _inputs(model, tokenizer))], series, rounds=3, warmup=1, new_tokens=2,
                    memory=False, progress=False)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up a b; rounds (a b G), (b G a), (G a b)
    assert all(len(m.ttft_ms) == 3 and m.round_index == [0, 1, 2] for m in found)
    model.generate(**_inputs(model, tokenizer), max_new_tokens=1)  # no guard left behind: plain generate
    guard = __import__("sasa").apply_sasa(model, SASAConfig(2, 4))  # would raise if one were still active
    guard.remove()


def test_summarize_pairs_rounds_and_marks_ratios_below_one():
    point = Point(1, 64, {})
    base = Measurement("unguarded", point, [10.0, 20.0, 10.0], [1.0, 1.0, 1.0], [0, 1, 2], 100.0)
    guard = Measurement("sasa-all", point, [15.0, 30.0, 9.0], [1.0, 0.9, 1.1], [0, 1, 2], 150.0)
    records = {r["series"]: r for r in summarize([base, guard])}
    g = records["sasa-all"]
    assert g["ttft_ratio"] == pytest.approx(15.0 / 10.0)  # median over median
    assert g["ttft_ratio_p20"] == pytest.approx(1.5 - 0.6 * 0.6) and g["ttft_ratio_p80"] == pytest.approx(1.5)
    assert g["peak_ratio"] == pytest.approx(1.5) and records["unguarded"]["ttft_ratio"] == 1.0
    assert math.isnan(g["expected_ttft_ratio"])  # no series object given: no cost model
    table = format_table(summarize([base, Measurement("sasa-all", point, [9.0] * 3, [1.0] * 3, [0, 1, 2])]))
    assert "0.90x*" in table and "cannot be faster" in table


def test_guarded_cost_model_for_both_scopes(demo):
    model, tokenizer = demo
    inputs = _inputs(model, tokenizer)
    series = [Guarded(SASAConfig(2, 4, scope=scope)) for scope in ("all", "last")]
    for s in series:
        with s.session(model) as generate:
            time_generate(generate, inputs, 1, torch.device("cpu"), **generation_kwargs(model, 1))
    # L=6, s=2; one decode step is 0.1 of a prefill
    assert series[0].expected_ttft_ratio(100.0, 10.0) == pytest.approx(1 + (6 - 2 - 2) / 6 + 0.1 / 6)
    assert series[1].expected_ttft_ratio(100.0, 10.0) == pytest.approx(1 + (6 - 1 - 2) / 6 * 0.1)


def test_load_report_flags_a_busy_machine():
    quiet = LoadReport(cores=2, threads=2, load_start=0.2, load_end=2.1, others_cores=0.1, wall_s=5.0)
    assert not quiet.busy and quiet.warning() == ""
    busy = LoadReport(cores=2, threads=2, load_start=0.2, load_end=2.1, others_cores=1.3, wall_s=5.0)
    assert busy.busy and busy.warning().startswith("WARNING") and "1.3 of 2 cores" in busy.warning()
    no_proc = LoadReport(cores=2, threads=2, load_start=1.5, load_end=2.0, others_cores=float("nan"), wall_s=5.0)
    assert no_proc.busy


def test_compare_ttft_for_the_demo(demo):
    model, tokenizer = demo
    result = compare_ttft(model, _inputs(model, tokenizer), config=SASAConfig(2, 4, scope="last"),
                          tokenizer=tokenizer, repeats=2)
    assert result.unguarded_ms > 0 and result.guarded_ms > 0 and result.repeats == 2 and result.prompt_tokens == 12
    assert result.ratio == pytest.approx(result.guarded_ms / result.unguarded_ms)
    text = "\n".join(result.lines())
    assert "unguarded model.generate" in text and "guarded   guard.generate" in text


def test_sasa_bench_cli_on_the_demo_model(demo_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["bench", "--model", str(demo_dir), "--prompt-lengths", "8", "--batch", "1,2", "--rounds", "1",
               "--new-tokens", "2", "--out", str(out), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "every timed row passes" in printed and "TTFT ratio" in printed
    rows = _rows(out / "bench.csv")
    assert sorted((r["batch"], r["series"]) for r in rows) == sorted(
        (b, s) for b in ("1", "2") for s in ("unguarded", "sasa-all", "sasa-last"))
    for r in rows:
        assert float(r["ttft_ms"]) > 0 and float(r["per_token_ms"]) > 0 and r["prompt_len"] == "8"
        assert (r["safety_layer"], r["fused_layer"], r["feature"]) == ("2", "4", "logits")
        if r["series"] == "unguarded":
            assert float(r["ttft_ratio"]) == 1.0
    assert (out / "bench.txt").is_file()
    pytest.importorskip("matplotlib")
    assert (out / "bench.png").stat().st_size > 0


def test_sasa_bench_takes_the_layers_from_the_probe(demo, demo_dir, tmp_path):
    model, _ = demo
    config = SASAConfig(1, 3, feature="hidden", scope="last")
    probe = SASAProbe(weight=torch.zeros(1, model.config.hidden_size), bias=torch.zeros(1),
                      threshold=torch.full((1,), 0.5), categories=["any"], feature="hidden", config=config,
                      fingerprint=model_fingerprint(model))  # the saved demo model has the same weights
    probe.save(tmp_path / "probe")
    rc = main(["bench", "--model", str(demo_dir), "--probe", str(tmp_path / "probe"), "--prompt-lengths", "6",
               "--scopes", "last", "--rounds", "1", "--warmup", "0", "--new-tokens", "2", "--out",
               str(tmp_path / "out"), "--quiet"])
    assert rc == 0
    rows = _rows(tmp_path / "out" / "bench.csv")
    assert {r["series"] for r in rows} == {"unguarded", "sasa-last"}
    assert {(r["safety_layer"], r["fused_layer"], r["feature"]) for r in rows} == {("1", "3", "hidden")}


def test_sasa_bench_times_the_compiled_pass(demo_dir, tmp_path):
    rc = main(["bench", "--model", str(demo_dir), "--prompt-lengths", "6", "--scopes", "last,last-compiled",
               "--rounds", "1", "--new-tokens", "2", "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 0
    rows = _rows(tmp_path / "out" / "bench.csv")
    assert {r["series"] for r in rows} == {"unguarded", "sasa-last", "sasa-last-compiled"}


@pytest.mark.parametrize("argv, message", [
    (["--rounds", "0"], "--rounds"),
    (["--scopes", "last-compiled", "--warmup", "0"], "warm-up"),
    (["--safety-layer", "4", "--fused-layer", "2"], "safety_layer"),
    (["--safety-layer", "2", "--fused-layer", "9"], "fused_layer"),
])
def test_sasa_bench_user_errors_are_one_line(demo_dir, capsys, argv, message):
    rc = main(["bench", "--model", str(demo_dir), "--prompt-lengths", "4", "--quiet", *argv])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_sasa_bench_on_a_vision_language_model_times_prompts_with_an_image(llava_workspace, tmp_path, capsys):
    _, model_dir, _ = llava_workspace
    rc = main(["bench", "--model", str(model_dir), "--prompt-lengths", "20", "--scopes", "last", "--rounds", "1",
               "--warmup", "0", "--new-tokens", "2", "--out", str(tmp_path), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    rows = _rows(tmp_path / "bench.csv")
    assert {r["series"] for r in rows} == {"unguarded", "sasa-last"} and {r["model_type"] for r in rows} == {"llava"}
    assert {r["prompt_len"] for r in rows} == {"20"}  # one filler token per word: the length is met exactly
    rc = main(["bench", "--model", str(model_dir), "--prompt-lengths", "3", "--quiet"])
    assert rc == 2 and "shorter than this model's prompt with one image" in capsys.readouterr().err
