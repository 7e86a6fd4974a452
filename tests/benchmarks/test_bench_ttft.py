"""bench_ttft.py on its tiny grid, and its two-pass peer computing what the guard computes."""

import csv

import pytest
import torch

import bench_ttft as B
from _two_pass import TwoPass
from sasa import SASAConfig, apply_sasa


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_bench_ttft_tiny_llama_writes_every_series(tmp_path):
    rc = B.main(["--grid", "tiny", "--models", "llama-tiny", "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    rows = _rows(tmp_path / "ttft.csv")
    assert [r["series"] for r in rows] == ["unguarded", "sasa-all", "sasa-last", "sasa-last-compiled", "two-pass"]
    by = {r["series"]: r for r in rows}
    assert float(by["unguarded"]["ttft_ratio"]) == 1.0
    step = float(by["unguarded"]["per_token_ms"]) / float(by["unguarded"]["ttft_ms"])  # L=4, s=1
    assert float(by["sasa-all"]["expected_ttft_ratio"]) == pytest.approx(1 + (4 - 2 - 1) / 4 + step / 4, rel=1e-4)
    assert float(by["two-pass"]["expected_ttft_ratio"]) == 2.0
    assert by["sasa-last-compiled"]["expected_ttft_ratio"] == by["sasa-last"]["expected_ttft_ratio"]  # same work
    for r in rows:
        assert float(r["ttft_ms"]) > 0 and float(r["per_token_ms"]) > 0 and r["peak_mib"] != ""
        assert r["model"] == "llama-tiny" and r["prompt_len"] == "16" and r["machine"]
    assert "every timed row passes" in (tmp_path / "ttft_table.txt").read_text()
    assert (tmp_path / "ttft_machine.json").is_file()


@pytest.mark.parametrize("spec", [B.LLAMA_TINY, B.LLAVA_TINY], ids=lambda s: s.name)
def test_two_pass_reads_what_the_guard_reads_with_scope_all(spec):
    model = B.build_model(spec, "cpu")
    inputs = B.make_inputs(spec, 2, spec.image_tokens + 12, "cpu")
    peer = TwoPass(spec.safety, spec.fused)
    with peer.session(model) as generate:
        generate(**inputs, max_new_tokens=1, do_sample=False)
    guard = apply_sasa(model, SASAConfig(spec.safety, spec.fused, scope="all", feature="logits"))
    try:
        expected = guard.features(**inputs)
    finally:
        guard.remove()
    torch.testing.assert_close(peer.last_logits, expected, rtol=1e-4, atol=1e-4)


def test_grids_reach_the_lengths_and_batches_asked_for():
    for spec, points in B.GRIDS["full"].models:
        assert {t for _, t in points} == {64, 256, 1024, 2048} and {b for b, _ in points} == {1, 8}
    assert {spec.hidden for spec, _ in B.GRIDS["gpu"].models} == {4096}
    assert {spec.blocks for spec, _ in B.GRIDS["gpu"].models} == {32}
    assert (B.LLAMA_MID.hidden, B.LLAMA_MID.blocks, B.LLAMA_MID.vocab, B.LLAMA_MID.safety, B.LLAMA_MID.fused) == (
        1024, 16, 32000, 7, 9)
