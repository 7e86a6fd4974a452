"""What the kernel benchmarks measure, as data: the ops, their inputs, baselines, floors and grids.

For every op, shape, dtype and thread count the series are:

- ``eager``: ``sk.reference.<op>``, the plain PyTorch composite;
- ``compile``: ``torch.compile`` of it (``dynamic=False``, compiled before timing);
- ``floor``: a copy of the op's compulsory bytes (``dst.copy_(src)``, preallocated; half the bytes
  read, half written): what any kernel moving those bytes costs at least;
- ``sasa:<backend>``: the public function forced to each backend of ``sk.backends(device)``
  (Triton under ``TRITON_INTERPRET``, an interpreter for tests, is never timed).

``bench_ops.py`` and ``test_bench_kernels.py`` (pytest-benchmark) both read this file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from _runner import import_sasa_kernels

sk = import_sasa_kernels()

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PROJECT_OPS = ("project", "project_rmsnorm")
OPS = PROJECT_OPS + ("probe", "probe_norm")


@dataclass(frozen=True)
class Shape:
    """``rows x d`` for the project ops; for the probe ``rows`` sequences of ``T`` tokens, ``C`` probes."""

    rows: int
    d: int
    C: int = 8

    @property
    def T(self) -> int:
        """16 tokens per sequence, fewer when ``rows * d`` is large (one position per row is read)."""
        return max(1, min(16, (1 << 27) // (self.rows * self.d)))

    def label(self, op: str) -> str:
        return f"{self.rows}x{self.d}" if op in PROJECT_OPS else f"B={self.rows} T={self.T} C={self.C} d={self.d}"


# Module-level functions: torch.compile caches compiled code per code object.
def ref_project(hs, hf):
    return sk.reference.project(hs, hf, mode="replace")


def ref_project_rmsnorm(hs, hf, w):
    return sk.reference.project_rmsnorm(hs, hf, w, mode="replace")


def ref_probe(hidden, weight, bias, positions):
    return sk.reference.probe(hidden, weight, bias, positions=positions)


def ref_probe_norm(hidden, weight, bias, positions, norm_weight):
    return sk.reference.probe(hidden, weight, bias, positions=positions, norm_weight=norm_weight)


REFERENCE: dict[str, Callable[..., Any]] = {
    "project": ref_project, "project_rmsnorm": ref_project_rmsnorm, "probe": ref_probe, "probe_norm": ref_probe_norm,
}
API: dict[str, Callable[..., Any]] = {
    "project": lambda hs, hf: sk.project(hs, hf, mode="replace"),
    "project_rmsnorm": lambda hs, hf, w: sk.project_rmsnorm(hs, hf, w, mode="replace"),
    "probe": lambda hidden, weight, bias, positions: sk.probe(hidden, weight, bias, positions=positions),
    "probe_norm": lambda hidden, weight, bias, positions, nw: sk.probe(hidden, weight, bias, positions=positions,
                                                                       norm_weight=nw),
}


def make_inputs(op: str, shape: Shape, dtype: torch.dtype, device: str) -> tuple:
    gen = torch.Generator(device=device).manual_seed(0)

    def randn(*size: int, dt: torch.dtype = dtype) -> torch.Tensor:
        return torch.randn(*size, generator=gen, dtype=torch.float32, device=device).to(dt)

    if op in PROJECT_OPS:
        pair = (randn(shape.rows, shape.d), randn(shape.rows, shape.d))
        return pair if op == "project" else pair + (1.0 + 0.1 * randn(shape.d),)
    args = (randn(shape.rows, shape.T, shape.d), randn(shape.C, shape.d, dt=torch.float32) / math.sqrt(shape.d),
            randn(shape.C, dt=torch.float32), torch.randint(0, shape.T, (shape.rows,), generator=gen, device=device))
    return args if op == "probe" else args + (1.0 + 0.1 * randn(shape.d),)


def bytes_moved(op: str, shape: Shape, dtype: torch.dtype) -> int:
    """Compulsory traffic: project reads hs, hf and writes the result (3 x rows x d); with the
    norm also the normed copy and the weight; the probe reads the gathered rows, the fp32 weights,
    bias and positions and writes fp32 scores (plus the norm weight)."""
    size = torch.empty((), dtype=dtype).element_size()
    n = shape.rows * shape.d
    if op == "project":
        return 3 * n * size
    if op == "project_rmsnorm":
        return 4 * n * size + shape.d * size
    probe = n * size + 4 * shape.C * (shape.d + 1) + 8 * shape.rows + 4 * shape.rows * shape.C
    return probe + (shape.d * size if op == "probe_norm" else 0)


def floor_fn(nbytes: int, device: str) -> Callable[[], Any]:
    """A preallocated copy moving ``nbytes`` (half read, half written)."""
    src = torch.ones(max(1, nbytes // 2), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def backends_to_time(device: str) -> tuple[list[str], list[str]]:
    """``(backends, notes)``: ``sk.backends(device)`` without interpreted Triton."""
    names, notes = [], []
    interpreted = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    for name in sk.backends(device):
        if name == "triton" and interpreted:
            notes.append("triton not timed: TRITON_INTERPRET is set (the interpreter is a test tool)")
        else:
            names.append(name)
    return names, notes


def series_fns(op: str, shape: Shape, dtype: torch.dtype, device: str, backends: list[str],
               compile_: bool = True) -> dict[str, Callable[[], Any]]:
    """The callables to time for one point: eager, compile, floor, then each backend."""
    args = make_inputs(op, shape, dtype, device)
    ref = REFERENCE[op]
    fns: dict[str, Callable[[], Any]] = {"eager": lambda: ref(*args)}
    if compile_:
        compiled = torch.compile(ref, dynamic=False)
        fns["compile"] = lambda: compiled(*args)
    fns["floor"] = floor_fn(bytes_moved(op, shape, dtype), device)
    for name in backends:
        def call(backend: str = name) -> Any:
            with sk.use_backend(backend):
                return API[op](*args)

        fns[f"sasa:{name}"] = call
    return fns


def raise_recompile_limits() -> None:
    """Every shape compiles once; the default limit of 8 recompiles per function is too low."""
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 4096)


@dataclass
class Grid:
    """A named grid: shapes per op, dtypes, thread counts and timing effort per point."""

    shapes: dict[str, list[Shape]]
    dtypes: list[str]
    threads: list[int]
    budget_s: float
    min_samples: int
    plots: dict[str, Shape] = field(default_factory=dict)  # the fixed point of each sweep


def _sweep(rows: list[int], ds: list[int], base_rows: int, base_d: int, C: int = 8) -> list[Shape]:
    return list(dict.fromkeys([Shape(r, base_d, C) for r in rows] + [Shape(base_rows, d, C) for d in ds]))


def make_grid(name: str, device: str) -> Grid:
    """``tiny`` (seconds), ``smoke`` (quick.py, about 1 min on 2 CPU cores), ``quick`` (a few
    minutes) or ``full``."""
    cuda = device == "cuda"
    cores = torch.get_num_threads()
    all_threads = [cores] if cuda else sorted({1, min(2, cores), cores})
    if name == "tiny":  # tests and gpu_check.sh's dry run on a CPU: seconds
        return Grid({"project": [Shape(1, 64), Shape(8, 64)], "project_rmsnorm": [Shape(8, 64)],
                     "probe": [Shape(2, 64, 2)], "probe_norm": [Shape(2, 64, 2)]}, ["fp32"], [1], 0.02, 3)
    if name == "smoke":
        project, probe = [Shape(1, 4096), Shape(512, 4096), Shape(4096, 4096)], [Shape(1, 4096), Shape(64, 4096)]
        return Grid({"project": project, "project_rmsnorm": project, "probe": probe, "probe_norm": probe},
                    ["fp32", "bf16"], [cores], 0.15, 7)
    if name == "quick":
        project = _sweep([1, 256, 4096, 32768] if cuda else [1, 16, 512, 4096], [896, 8192], 4096, 4096)
        probe = _sweep([1, 64, 4096] if cuda else [1, 64], [], 64, 4096)
        grid = Grid({}, ["fp32", "bf16"], all_threads if not cuda else [cores], 0.25, 10)
    elif name == "full":
        project = _sweep([1, 4, 16, 64, 256, 1024, 4096, 16384, 32768], [896, 2048, 4096, 5120, 8192], 4096, 4096)
        probe = _sweep([1, 4, 16, 64, 256, 1024, 4096], [896, 2048, 8192], 64, 4096)
        probe += [Shape(64, 4096, c) for c in (1, 64)]
        grid = Grid({}, ["fp32", "bf16", "fp16"] if cuda else ["fp32", "bf16"], all_threads, 0.4, 15)
    else:
        raise ValueError(f"grid: expected tiny, smoke, quick or full, got {name!r}")
    grid.shapes = {"project": project, "project_rmsnorm": project, "probe": probe, "probe_norm": probe}
    grid.plots = {"project": Shape(4096, 4096), "project_rmsnorm": Shape(4096, 4096), "probe": Shape(64, 4096),
                  "probe_norm": Shape(64, 4096)}
    return grid
