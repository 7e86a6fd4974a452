"""pytest-benchmark: the kernels against eager, torch.compile and the copy floor, and the host
overhead of one tiny call against ``torch.add``.

    pytest --benchmark-only                                   # from the repository root: this folder
    pytest benchmarks/test_bench_kernels.py --benchmark-only --benchmark-group-by=group

Each group is one op, shape and dtype; its members are the series of ``_kernel_cases.py``. Nothing
is asserted about speed; pytest-benchmark's own rounds and statistics apply (for interleaved
rounds and ratios use ``bench_ops.py``). Not collected by ``python -m pytest tests``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _kernel_cases as K  # noqa: E402
import _runner as R  # noqa: E402
import bench_host  # noqa: E402

pytest.importorskip("pytest_benchmark")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = K.backends_to_time(DEVICE)[0]
SERIES = ["eager", "compile", "floor"] + [f"sasa:{b}" for b in BACKENDS]
CASES = [("project", K.Shape(1, 4096)), ("project", K.Shape(4096, 4096)),
         ("project_rmsnorm", K.Shape(4096, 4096)), ("probe_norm", K.Shape(64, 4096))]
_MACHINE: dict = {}


def _info(benchmark, group: str, **extra) -> None:
    if not _MACHINE:
        _MACHINE.update(R.machine_info(DEVICE))
    benchmark.group = group
    benchmark.extra_info.update(machine=_MACHINE["machine"], threads=torch.get_num_threads(),
                                torch=_MACHINE["torch"], **extra)


def _synced(fn):
    if DEVICE != "cuda":
        return fn
    return lambda: (fn(), torch.cuda.synchronize())


@pytest.mark.parametrize("series", SERIES)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("op,shape", CASES, ids=[f"{op}-{s.label(op).replace(' ', '_')}" for op, s in CASES])
def test_kernel(benchmark, op, shape, dtype, series):
    K.raise_recompile_limits()
    backends = [series.split(":", 1)[1]] if series.startswith("sasa:") else []
    fns = K.series_fns(op, shape, K.DTYPES[dtype], DEVICE, backends, compile_=series == "compile")
    fn = fns[series]
    fn()  # compile / first call outside the timing
    _info(benchmark, f"{op} {shape.label(op)} {dtype}", bytes=K.bytes_moved(op, shape, K.DTYPES[dtype]))
    benchmark(_synced(fn))


@pytest.mark.parametrize("series", list(bench_host.host_fns("cpu")))
def test_host_overhead(benchmark, series):
    fn = bench_host.host_fns(DEVICE)[series]
    fn()
    _info(benchmark, "host overhead 1x64 fp32")
    benchmark(_synced(fn))
