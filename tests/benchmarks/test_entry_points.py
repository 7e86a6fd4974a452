"""``pytest --benchmark-only`` from the root collects the benchmark suite; gpu_check.sh parses."""

import shutil
import subprocess
import sys

import pytest

from tests.benchmarks.conftest import BENCH, ROOT


def test_benchmark_only_from_the_root_collects_the_benchmarks_not_the_unit_tests():
    pytest.importorskip("pytest_benchmark")
    out = subprocess.run([sys.executable, "-m", "pytest", "--benchmark-only", "--co", "-q", "-p", "no:cacheprovider"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    collected = [line for line in out.stdout.splitlines() if "::" in line]
    assert collected and all(line.startswith("benchmarks/test_bench_") for line in collected)
    assert any("test_bench_kernels.py::test_host_overhead" in line for line in collected)
    assert any("test_bench_guard.py::test_guard_overhead" in line for line in collected)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_script_parses():
    out = subprocess.run(["bash", "-n", str(BENCH / "gpu_check.sh")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
