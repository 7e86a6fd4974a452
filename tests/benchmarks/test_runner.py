"""benchmarks/_runner.py: interleaved timing, CSV, tables (what they return, not how fast)."""

import csv

import pytest

import _runner as R


def test_time_interleaved_rotates_the_order_and_takes_enough_samples():
    calls = []
    fns = {name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")}
    timings = R.time_interleaved(fns, "cpu", budget_s=0.0, min_samples=4, min_sample_s=0.0)
    assert set(timings) == {"a", "b", "c"}
    for t in timings.values():
        assert t.samples == 4 and t.p20_us <= t.median_us <= t.p80_us and t.timer == "wall"
    rounds = calls[6:]  # after two untimed calls each (first call, and the one that sizes a sample)
    assert rounds == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]


def test_write_csv_is_long_format_with_the_first_columns_first(tmp_path):
    path = R.write_csv(tmp_path / "x.csv", [{"z": 1, "op": "p", "v": float("nan")}, {"op": "q", "w": 2}], ("op",))
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows == [["op", "z", "v", "w"], ["p", "1", "", ""], ["q", "", "", "2"]]


def test_ratio_marks_and_results_dir():
    assert R.fmt_ratio(1.25, 1.0) == "1.25x!" and R.fmt_ratio(0.8, 1.0) == "0.80x" and R.fmt_ratio(float("nan")) == "-"
    path = R.results_dir({"machine": "Intel(R) Xeon(R) Processor (2 cores)", "date": "2026-12-02T05:00:00Z"})
    assert path.parent == R.RESULTS_DIR and path.name == "Intel-R-Xeon-R-Processor-2-cores-20261202"


def test_busy_warning_uses_cores_and_threads():
    quiet = {"cores": 64, "loadavg": 0.0}
    assert R.busy_warning(quiet, threads=1) == ""
    assert R.busy_warning({"cores": 2, "loadavg": 1.5}, threads=2).startswith("WARNING")


@pytest.mark.parametrize("us, text", [(3.21, "3.2 us"), (412.0, "412 us"), (1250.0, "1.25 ms"), (2.1e6, "2.10 s")])
def test_fmt_us(us, text):
    assert R.fmt_us(us) == text
