"""benchmarks/bench_ttft.py runs end to end on a tiny grid and writes what it promises."""

import csv
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_bench_ttft_tiny_grid(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import bench_ttft
    finally:
        sys.path.remove(str(BENCH))
    rc = bench_ttft.main(["--device", "cpu", "--layers", "2", "--lengths", "16", "--batches", "1",
                          "--budget-s", "1", "--out", str(tmp_path), "--print", "summary"])
    assert rc == 0
    with open(tmp_path / "ttft.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["backend"] for r in rows} == {"generate", "sasa-all", "sasa-last", "decode-step"}
    for r in rows:
        assert float(r["median_us"]) > 0 and r["prompt_len"] == "16" and not r["note"]
    ratios = {r["backend"]: float(r["ratio_vs_generate"]) for r in rows}
    assert ratios["generate"] == 1.0
    expected = {r["backend"]: r["expected_ratio"] for r in rows}
    assert float(expected["sasa-all"]) == 1 + (2 - 1 - 0) / 2  # L=2: s=0, f=1
    assert (tmp_path / "ttft_summary.txt").exists()
