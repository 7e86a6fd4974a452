"""bench_builds.py compares two builds in child processes and refuses to compare the wrong ones."""

import csv
import statistics

import pytest

import bench_builds
from sasa_kernels.backends import compiled
from tests.benchmarks.conftest import ROOT

BUILT_IN_PLACE = compiled.build_info() is not None and any((ROOT / "sasa_kernels").glob("_C*.so"))


@pytest.mark.skipif(not BUILT_IN_PLACE, reason="needs the extension built inside this checkout")
def test_tiny_run_writes_the_rounds_and_their_ratios(tmp_path, capsys):
    bench_builds.main(["--old", str(ROOT), "--new", str(ROOT), "--rounds", "2", "--threads", "1", "--tiny",
                       "--out", str(tmp_path)])
    with open(tmp_path / "builds.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    points = {(r["op"], r["shape"], r["dtype"]) for r in rows}
    # 2 dtypes x (2 project shapes x 2 ops + 2 batches x probe with and without norm)
    assert len(points) == 16
    assert len(rows) == 16 * 2 * 2  # points x builds x rounds
    assert {r["build"] for r in rows} == {"old", "new"} and {r["round"] for r in rows} == {"0", "1"}
    assert all(float(r["median_us"]) > 0 for r in rows)
    # The summary's ratio is the median over rounds of new/old measured in the same round.
    summary = (tmp_path / "builds_summary.txt").read_text()
    op, shape, dtype = sorted(points)[0]
    t = {(r["build"], r["round"]): float(r["median_us"]) for r in rows if (r["op"], r["shape"], r["dtype"]) == (op, shape, dtype)}
    ratio = statistics.median(t[("new", i)] / t[("old", i)] for i in ("0", "1"))
    line = next(x for x in summary.splitlines() if x.startswith(op + " ") and f" {shape} " in x and f" {dtype} " in x)
    assert f"{ratio:.2f}" in line
    assert "above 1 = the new build is slower" in capsys.readouterr().out


def test_a_folder_without_the_package_is_refused(tmp_path):
    # PYTHONPATH=<empty folder> would let the child import the installed sasa_kernels, and the
    # "comparison" would time one build against itself: the script must stop instead.
    with pytest.raises(SystemExit, match="imported sasa_kernels from"):
        bench_builds.main(["--old", str(tmp_path), "--new", str(ROOT), "--rounds", "1", "--threads", "1", "--tiny"])
