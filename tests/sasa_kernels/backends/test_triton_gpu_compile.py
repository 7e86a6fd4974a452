"""The Triton kernels compiled for the GPU (sm_90, the H200), on a machine without one.

Without a GPU the kernels only run under the interpreter, which executes them as NumPy and never
meets the GPU compiler: a kernel that fails to compile, or that the compiler changes numerically
(contracting a multiply and an add into an FMA), passes every other test here. Triton compiles to
PTX and a cubin without a device, so this test compiles every specialization the launchers make
(``triton_gpu_compile.py``, in a process without the interpreter) and inspects the PTX. On a
machine with a GPU the kernels are compiled and run by the other tests instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")

REPO = Path(__file__).resolve().parents[3]

pytestmark = [
    pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the kernels are compiled and run for real"),
    pytest.mark.skipif(
        "nvidia" not in getattr(getattr(triton, "backends", None), "backends", {}),
        reason="this triton has no CUDA backend to compile with",
    ),
]


@pytest.fixture(scope="module")
def compiled() -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # Fusion's default is spelled out by the launch; an unset default only warns.
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    run = subprocess.run(
        [sys.executable, "-m", "tests.sasa_kernels.backends.triton_gpu_compile", "90"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, f"compiling for sm_90 failed:\n{run.stderr[-4000:]}"
    return [json.loads(line) for line in run.stdout.splitlines()]


def test_every_launcher_specialization_compiles_for_sm90(compiled):
    project = [r for r in compiled if r["kernel"] == "project_kernel"]
    probe = [r for r in compiled if r["kernel"] == "probe_kernel"]
    # The grid reaches both project paths with and without the norm in every dtype...
    reached = {(r["pointers"]["hs_ptr"], r["constexprs"]["SINGLE_BLOCK"], r["constexprs"]["RMSNORM"]) for r in project}
    assert reached == {(f"*{t}", s, n) for t in ("fp32", "fp16", "bf16") for s in (True, False) for n in (True, False)}
    # ...and every combination of the probe's flags.
    flags = ("HAS_POSITIONS", "HAS_BIAS", "HAS_NORM", "SIGMOID")
    assert len({tuple(r["constexprs"][f] for f in flags) for r in probe}) == 16
    assert {r["pointers"]["weight_ptr"] for r in probe if r["pointers"]["hidden_ptr"] == "*bf16"} == {"*bf16", "*fp32"}
    assert all(r["constexprs"]["SOFT_RTNE"] is False for r in compiled)


def test_project_rounds_both_products_before_the_add_on_the_gpu(compiled):
    # h = a*hs + c*hf: an fp32 FMA would round once where the reference (and the CPU kernels,
    # built with -ffp-contract=off) round three times.
    fused = [r["constexprs"] | r["pointers"] for r in compiled if r["kernel"] == "project_kernel" and r["fma_f32"]]
    assert not fused, f"{len(fused)} project specializations use fp32 FMAs, e.g. {fused[0]}"


def test_project_moves_aligned_rows_in_128_bit_accesses(compiled):
    # The specializations come from Triton's own binder, so a row length divisible by 16 is known
    # to the compiler (as in a real launch) and the memory-bound kernel loads and stores whole
    # 16-byte vectors; scalar 2-byte accesses would cost most of the GPU's bandwidth.
    aligned = [r for r in compiled if r["kernel"] == "project_kernel" and "d" in r["divisible_by_16"]]
    assert aligned, "the grid has no row length divisible by 16"
    narrow = [
        (r["constexprs"], r["pointers"]["hs_ptr"])
        for r in aligned
        if (r["widest_load_bits"], r["widest_store_bits"]) != (128, 128)
    ]
    assert not narrow, f"{len(narrow)} aligned project specializations without 128-bit accesses, e.g. {narrow[0]}"


def test_no_approximate_math_on_the_gpu(compiled):
    # The design forms alpha, 1/rms and the sigmoid in fp64 with IEEE division and square root:
    # an approximate fp32 division, rsqrt or exp (Triton's defaults for fp32 operands) would put
    # GPU-only errors of a few ulps into every score and normalized row.
    approx = {(r["kernel"], op) for r in compiled for op in r["approx_ops"]}
    assert not approx, f"approximate operations in the PTX: {sorted(approx)}"
