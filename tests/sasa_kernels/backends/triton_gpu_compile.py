"""Compile every specialization the Triton launchers use for a GPU, without one (no kernel runs).

Run as a script in a process without ``TRITON_INTERPRET`` (the kernels must be ``JITFunction``s):
``python -m tests.sasa_kernels.backends.triton_gpu_compile [--usage] [--csv PATH] [ARCH ...]``
prints one JSON object per compiled specialization (``--usage``: with the registers and spills
ptxas reports; ``--csv``: also as a CSV file). ``test_triton_gpu_compile.py`` runs it on machines
without a GPU. There the kernels otherwise only ever run under the interpreter, which accepts
code the GPU compiler rejects and never applies the compiler's floating-point contraction.

The launchers themselves produce the specializations: ``launch_project`` and ``launch_probe`` are
called on CPU tensors with each kernel swapped for a recorder, and the recorder forms the
compiler's input with Triton's own binder, as a real launch would: arguments, constexprs,
alignment and divisibility, ``num_warps``, ``enable_fp_fusion``."""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    raise SystemExit("triton_gpu_compile: run without TRITON_INTERPRET (the kernels must be compiled)")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from sasa_kernels.triton_kernels import probe as probe_module  # noqa: E402
from sasa_kernels.triton_kernels import project as project_module  # noqa: E402

#: The GPU the kernels are compiled for: CUDA, 32-thread warps (only the arch varies).
WARP_SIZE = 32
HALF_AND_FULL = (torch.float32, torch.float16, torch.bfloat16)
APPROX_OP = re.compile(r"\b((?:div|sqrt|rsqrt|rcp|ex2|lg2|sin|cos|tanh)\.(?:approx|full)[a-z0-9.]*)")


@dataclass
class Launch:
    """One kernel launch as the compiler's input, formed the way ``JITFunction.run`` forms it."""

    kernel: str
    fn: triton.JITFunction
    signature: dict[str, str]
    constexprs: dict[Any, Any]
    attrs: dict[Any, Any]
    options: Any  # the backend's options object (num_warps, enable_fp_fusion, ...)

    def key(self) -> str:
        return repr((self.kernel, self.signature, self.constexprs, self.attrs, self.options))

    def named_constexprs(self) -> dict[str, Any]:
        names = self.fn.arg_names
        return {names[path[0]] if isinstance(path, tuple) else path: v for path, v in self.constexprs.items()}

    def pointers(self) -> dict[str, str]:
        return {name: ty for name, ty in self.signature.items() if ty.startswith("*")}


class _Recorder:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](*args, **kwargs)`` records the launch.

    The specialization comes from Triton's own binder for the target, as in ``JITFunction.run``
    (Triton 3.6 through 3.9): pointer alignment and integer divisibility by 16 included, which
    decide whether loads and stores are vectorized.
    """

    def __init__(self, fn: triton.JITFunction, name: str, arch: int, seen: dict[str, Launch]):
        from triton.compiler import make_backend
        from triton.runtime.jit import create_function_from_signature

        self.fn, self.name, self.seen = fn, name, seen
        self.backend = make_backend(GPUTarget("cuda", arch, WARP_SIZE))
        self.binder = create_function_from_signature(fn.signature, fn.params, self.backend)

    def __getitem__(self, grid: object) -> Callable[..., None]:
        return self._record

    def _record(self, *args: Any, **kwargs: Any) -> None:
        kwargs = {"debug": bool(self.fn.debug), **kwargs}
        bound, specialization, options = self.binder(*args, **kwargs)
        options, signature, constexprs, attrs = self.fn._pack_args(self.backend, kwargs, bound, specialization, options)
        launch = Launch(self.name, self.fn, signature, constexprs, attrs, options)
        self.seen.setdefault(launch.key(), launch)


def _project_launches() -> None:
    # Shapes reaching every configuration of the heuristic: one row, packed rows, one block, loop.
    shapes = [(1, 896), (16, 4096), (512, 127), (4096, 8192), (8, 16384), (65536, 128)]
    for dtype, (rows, d), norm in itertools.product(HALF_AND_FULL, shapes, (False, True)):
        hs = torch.empty(rows, d, dtype=dtype)
        w = torch.empty(d, dtype=dtype) if norm else None
        project_module.launch_project(
            hs, hs, torch.empty_like(hs), 1.0, 0.5, 1e-6,
            norm_weight=w, out_normed=torch.empty_like(hs) if norm else None,
        )


def _probe_launches() -> None:
    def launch(dtype, weight_dtype, batch, num_probes, d, positions, bias, norm, sigmoid):
        hidden = torch.empty(batch, 3, d, dtype=dtype)
        weight = torch.empty(num_probes, d, dtype=weight_dtype)
        probe_module.launch_probe(
            hidden, torch.zeros(batch, dtype=torch.int64) if positions else None, weight,
            torch.empty(num_probes, dtype=weight_dtype) if bias else None,
            torch.empty(d, dtype=dtype) if norm else None, torch.empty(batch, num_probes), 1e-6, 0.0, sigmoid,
        )

    dtypes = [(torch.float32, torch.float32), (torch.float16, torch.float16), (torch.float16, torch.float32),
              (torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32)]
    # Every combination of the flags where the two branches of the norm differ (fp32 rows are
    # normalized in fp64, half-precision rows with Llama's roundings); all on and all off elsewhere.
    every = list(itertools.product((False, True), repeat=4))
    for (dtype, weight_dtype) in dtypes:
        full = dtype == weight_dtype and dtype != torch.float16
        for positions, bias, norm, sigmoid in every if full else [every[0], every[-1]]:
            launch(dtype, weight_dtype, 8, 4, 4096, positions, bias, norm, sigmoid)
    # Other block shapes of the heuristic, with everything on.
    for (dtype, weight_dtype), (batch, num_probes, d) in itertools.product(
        dtypes, [(1, 1, 896), (64, 16, 4096), (300, 40, 127)]
    ):
        launch(dtype, weight_dtype, batch, num_probes, d, True, True, True, True)


def launches(arch: int = 90) -> list[Launch]:
    """Every distinct launch the launchers make over a grid of shapes, dtypes and flags."""
    seen: dict[str, Launch] = {}
    saved = project_module.project_kernel, probe_module.probe_kernel
    project_module.project_kernel = _Recorder(saved[0], "project_kernel", arch, seen)
    probe_module.probe_kernel = _Recorder(saved[1], "probe_kernel", arch, seen)
    try:
        _project_launches()
        _probe_launches()
    finally:
        project_module.project_kernel, probe_module.probe_kernel = saved
    return list(seen.values())


def ptxas_usage(ptx: str, arch: int) -> dict[str, Optional[int]]:
    """Registers per thread and spill bytes that ``ptxas -v`` reports for ``ptx`` (None if unknown).

    Triton runs ptxas itself but keeps its log; this reruns the ptxas it ships for ``arch``, without
    Triton's extra flags (such as ``--regAllocOptLevel``), so a count can differ slightly from the
    cubin Triton builds.
    """
    unknown: dict[str, Optional[int]] = {"registers": None, "spill_store_bytes": None, "spill_load_bytes": None}
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        ptxas = get_ptxas(arch).path
    except (ImportError, AttributeError, TypeError):  # another Triton's layout: report nothing
        return unknown
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        run = subprocess.run(
            [ptxas, "-v", f"--gpu-name=sm_{arch}a" if arch >= 90 else f"--gpu-name=sm_{arch}", src,
             "-o", os.path.join(tmp, "kernel.cubin")],
            capture_output=True, text=True,
        )
    regs = re.search(r"Used (\d+) registers", run.stderr)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", run.stderr)
    if run.returncode != 0 or regs is None:
        return unknown
    return {
        "registers": int(regs.group(1)),
        "spill_store_bytes": int(spills.group(1)) if spills else 0,
        "spill_load_bytes": int(spills.group(2)) if spills else 0,
    }


def compile_launch(launch: Launch, arch: int, usage: bool = False) -> dict[str, Any]:
    """Compile ``launch`` for CUDA ``sm_<arch>``; a summary of the PTX it gave (and with ``usage``,
    of its registers and spills)."""
    source = ASTSource(launch.fn, launch.signature, launch.constexprs, launch.attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, WARP_SIZE), options=launch.options.__dict__)
    ptx = compiled.asm["ptx"]
    widths = re.findall(r"\b(ld|st)\.global(?:\.[a-z_]+)*\.(v[248]\.)?[bfsu](\d+)", ptx)
    return {**(ptxas_usage(ptx, arch) if usage else {}), **{
        "kernel": launch.kernel,
        "arch": arch,
        "constexprs": launch.named_constexprs(),
        "options": {k: getattr(launch.options, k) for k in ("num_warps", "num_stages", "enable_fp_fusion")},
        "pointers": launch.pointers(),
        "divisible_by_16": sorted(launch.fn.arg_names[path[0]] for path in launch.attrs if launch.attrs[path]),
        "fma_f32": ptx.count("fma.rn.f32"),
        # Approximate math: fp32 division is div.full unless asked otherwise; rsqrt, ex2 and the
        # like are approximations.
        "approx_ops": sorted(set(APPROX_OP.findall(ptx))),
        # Widest global load and store in bits (a v4 of b32 is 128): scalar accesses waste bandwidth.
        "widest_load_bits": max((int(v[1:2] or 1) * int(b) for op, v, b in widths if op == "ld"), default=0),
        "widest_store_bits": max((int(v[1:2] or 1) * int(b) for op, v, b in widths if op == "st"), default=0),
        "ptx_lines": ptx.count("\n"),
    }}


def _csv_row(result: dict[str, Any]) -> dict[str, Any]:
    pointers = result["pointers"]
    dtype = pointers.get("hs_ptr", pointers.get("hidden_ptr", ""))[1:]
    weight = pointers.get("weight_ptr", "")[1:] if result["kernel"] == "probe_kernel" else ""
    flags = " ".join(
        f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in result["constexprs"].items() if k != "SOFT_RTNE"
    )
    return {
        "triton": triton.__version__, "arch": f"sm_{result['arch']}", "kernel": result["kernel"],
        "dtype": dtype, "weight_dtype": weight, "constexprs": flags, "num_warps": result["options"].get("num_warps"),
        "registers": result.get("registers"), "spill_store_bytes": result.get("spill_store_bytes"),
        "spill_load_bytes": result.get("spill_load_bytes"), "fma_f32": result["fma_f32"],
        "widest_load_bits": result["widest_load_bits"], "widest_store_bits": result["widest_store_bits"],
    }


def main(argv: list[str]) -> int:
    """``[--usage] [--csv PATH] [ARCH ...]``: JSON lines on stdout; ``--csv`` also writes them as CSV rows."""
    parser = argparse.ArgumentParser(prog="triton_gpu_compile", description=main.__doc__)
    parser.add_argument("archs", nargs="*", type=int, default=[90])
    parser.add_argument("--usage", action="store_true", help="registers and spills from ptxas -v")
    parser.add_argument("--csv", help="also write the results to this CSV file (implies --usage)")
    args = parser.parse_args(argv)
    rows = []
    for arch in args.archs:
        for launch in launches(arch):
            result = compile_launch(launch, arch, args.usage or bool(args.csv))
            print(json.dumps(result, default=str), flush=True)
            rows.append(_csv_row(result))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
