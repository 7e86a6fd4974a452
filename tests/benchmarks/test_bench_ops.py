"""bench_ops.py, bench_host.py and quick.py run end to end on a tiny grid and write what they promise."""

import csv
import math

import bench_host
import bench_ops
import _runner as R


def test_host_overhead_rows_measure_sk_project_against_torch_add():
    records = bench_host.measure_host_overhead("cpu", R.machine_info("cpu"), budget_s=0.01)
    by = {r["backend"]: r for r in records}
    assert list(by) == ["torch.add", "torch.ops.sasa.project", "sk.project"]
    assert by["torch.add"]["ratio_vs_add"] == 1.0 and by["sk.project"]["shape"] == "1x64"
    assert all(r["samples"] >= 30 and r["host_us"] > 0 for r in records)
    (line,) = bench_host.host_lines(records)
    assert line.startswith("host overhead, 1x64 fp32") and "2x target" in line


def test_bench_ops_tiny_grid(tmp_path, capsys):
    rc = bench_ops.main(["--device", "cpu", "--tiny", "--no-compile", "--no-plots", "--out", str(tmp_path),
                         "--print", "summary"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "host overhead, 1x64 fp32" in printed and "/floor" in printed
    with open(tmp_path / "ops.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    ops = {r["op"] for r in rows}
    assert ops == {"host_overhead", "project", "project_rmsnorm", "probe", "probe_norm"}, rows[:3]
    kernels = [r for r in rows if r["op"] != "host_overhead"]
    assert not [r for r in kernels if r.get("note", "").startswith("failed")]
    assert {r["backend"] for r in kernels} >= {"eager", "floor", "sasa:torch"}
    for r in kernels:
        assert float(r["median_us"]) > 0 and int(r["samples"]) >= 3
        assert math.isclose(float(r["ratio_vs_floor"]) * float([f for f in kernels if f["op"] == r["op"] and
                            f["shape"] == r["shape"] and f["backend"] == "floor"][0]["median_us"]),
                            float(r["median_us"]), rel_tol=1e-4)
    for name in ("ops_table.txt", "ops_summary.txt", "ops_machine.json"):
        assert (tmp_path / name).is_file()
