"""pytest-benchmark versions of a few bench_ops measurements.

    pytest benchmarks/ --benchmark-only                          # CPU (or the GPU when present)
    pytest benchmarks/ --benchmark-only --benchmark-group-by=group --benchmark-columns=median,iqr,ops

Not part of the test suite: ``python -m pytest tests`` (and a bare ``pytest``, whose
``testpaths`` is ``tests``) never collects this folder, and nothing here asserts speed. Each
group is one op, shape and dtype; its members are ``eager`` (``sk.reference``), ``compile``
(``torch.compile`` of it, compiled before timing) and ``sasa:<backend>`` for every backend in
``sk.backends(device)`` (interpreted Triton excluded).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as H  # noqa: E402
import bench_ops as B  # noqa: E402

pytest.importorskip("pytest_benchmark")

sk = B.sk
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SERIES = ["eager", "compile"] + [f"sasa:{b}" for b in B.bench_backends(DEVICE)[0]]
CASES = [
    ("project", B.Shape(1, 4096)),
    ("project", B.Shape(4096, 4096)),
    ("project_rmsnorm", B.Shape(4096, 4096)),
    ("probe_norm", B.Shape(64, 4096, 8)),
]


@functools.lru_cache(maxsize=None)
def _machine() -> dict:
    return H.machine_info(DEVICE)


def _callable(op: str, series: str, args: tuple):
    if series == "eager":
        return lambda: B.REFERENCE[op](*args)
    if series == "compile":
        torch._dynamo.reset()
        compiled = torch.compile(B.REFERENCE[op], dynamic=False)
        compiled(*args)  # compile outside the timing
        return lambda: compiled(*args)
    backend = series.split(":", 1)[1]

    def call():
        with sk.use_backend(backend):
            return B.API[op](*args)

    return call


@pytest.mark.parametrize("series", SERIES)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("op,shape", CASES, ids=[f"{op}-{s.label(op).replace(' ', '_')}" for op, s in CASES])
def test_op(benchmark, op, shape, dtype, series):
    B._set_recompile_limits()
    args = B.make_inputs(op, shape, B.DTYPES[dtype], DEVICE)
    try:
        fn = _callable(op, series, args)
        fn()
    except sk.BackendUnavailableError as exc:
        pytest.skip(str(exc))
    if DEVICE == "cuda":
        inner = fn

        def fn():
            inner()
            torch.cuda.synchronize()

    benchmark.group = f"{op} {shape.label(op)} {dtype}"
    info = _machine()
    benchmark.extra_info.update(
        machine=info["machine"], version=info["version"], threads=torch.get_num_threads(),
        bytes=B.bytes_moved(op, shape, B.DTYPES[dtype]),
    )
    benchmark(fn)
