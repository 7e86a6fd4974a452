"""Triton kernels for ``project`` and ``project_rmsnorm`` (docs/method.md sections 3 and 7).

One launch per call. Each program owns ``BLOCK_M`` rows:

- ``d <= MAX_FUSED_D``: the whole row (padded to a power of two) sits in registers as a
  ``[BLOCK_M, BLOCK_D]`` tile, so ``hs`` and ``hf`` are read once and each output written once.
  Short rows share a program so a ``d = 128`` row does not cost a whole launch slot.
- longer rows loop over ``BLOCK_D`` chunks: pass 1 reduces ``<hs, hf>`` and ``||hf||^2``, pass 2
  writes ``h`` (and reduces ``sum(h^2)`` for the norm), pass 3 (norm only) re-reads ``h`` from
  ``out`` and writes the normalized row.

Numerics (shared by every fused backend; :mod:`sasa_kernels.backends.base` states them): the
fp32 values are widened to fp64, where their products are exact, and ``<hs, hf>``, ``||hf||^2``
and the norm's sum of squares accumulate in fp64 (an fp64 multiply and add per element: free in a
memory-bound kernel). ``b * alpha`` is formed in fp64 (IEEE division) and rounded to fp32 once, so
a cancelling dot product (``hs`` nearly orthogonal to ``hf``) is not carried into ``alpha`` as fp32
summation error: with fp32 sums this kernel broke the 2x-eager tolerance rule on about 4% of random
fp32 inputs with uncorrelated rows. ``1/rms`` is correctly rounded too; see :func:`inv_rms_of`.
``h = a*hs + c*hf`` rounds both products and then the sum, like the reference: the launch turns
off Triton's contraction into FMAs (``enable_fp_fusion=False``), which the interpreter never does
and so cannot show; ``tests/sasa_kernels/backends/test_triton_gpu_compile.py`` checks the GPU code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl
from triton.runtime.jit import JITFunction

__all__ = [
    "ProjectConfig", "project_config", "launch_project", "is_interpreted", "INTERPRETED", "MAX_FUSED_D",
    "LOOP_BLOCK_D",
]

#: Longest row kept whole in registers (one read of hs/hf); longer rows take the chunked loop.
MAX_FUSED_D = 8192
#: Chunk length of the loop over long rows.
LOOP_BLOCK_D = 4096
#: Elements per program tile that short rows are packed up to.
TARGET_TILE = 4096
#: Cap on rows per program: beyond it, tiles of tiny rows stop paying for themselves.
MAX_BLOCK_M = 64
#: Below this many programs a GPU has idle SMs, so short-row packing backs off to keep them busy.
MIN_PROGRAMS = 256


@dataclass(frozen=True)
class ProjectConfig:
    """Launch shape of the project kernels (all block sizes are powers of two)."""

    block_m: int
    block_d: int
    single_block: bool
    num_warps: int


def _warps_for_tile(tile_elements: int) -> int:
    # About 16 elements per thread per operand: enough to vectorize loads, few enough to not spill.
    return max(1, min(16, tile_elements // 512))


def project_config(n_rows: int, d: int) -> ProjectConfig:
    """The heuristic launch configuration for ``n_rows`` rows of length ``d``."""
    if d > MAX_FUSED_D:
        return ProjectConfig(1, LOOP_BLOCK_D, False, _warps_for_tile(LOOP_BLOCK_D))
    block_d = triton.next_power_of_2(d)
    rows_for_tile = max(1, TARGET_TILE // block_d)
    rows_for_occupancy = triton.next_power_of_2(triton.cdiv(n_rows, MIN_PROGRAMS))
    block_m = min(rows_for_tile, MAX_BLOCK_M, rows_for_occupancy)
    return ProjectConfig(block_m, block_d, True, _warps_for_tile(block_m * block_d))


@triton.jit
def round_to(x, DTYPE: tl.constexpr, SOFT_RTNE: tl.constexpr):
    """fp32 ``x`` rounded to ``DTYPE`` (round to nearest even), returned as ``DTYPE``.

    Compiled kernels use the native conversion, which rounds to nearest even. The Triton
    interpreter (``SOFT_RTNE``) does not: its fp32 -> bf16 conversion truncates, turns bf16
    subnormals into wrong normal numbers or zeros, and can turn a NaN into an infinity. So under it
    bf16 is rounded with integer arithmetic on the bit pattern and formed by a bitcast, which gives
    torch's bits for every input, subnormals and NaN (0x7FC0) included.
    """
    if SOFT_RTNE:
        if DTYPE == tl.bfloat16:
            bits = x.to(tl.uint32, bitcast=True)
            rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
            # A NaN's payload below bit 16 would round into inf or flip the sign; torch gives 0x7FC0.
            rounded = tl.where(x != x, 0x7FC0, rounded)
            y = rounded.to(tl.uint16).to(tl.bfloat16, bitcast=True)
        else:
            y = x.to(DTYPE)
    else:
        y = x.to(DTYPE)
    return y


@triton.jit
def to_float32(x, SOFT_RTNE: tl.constexpr):
    """``x`` (fp16, bf16 or fp32) widened to fp32, exactly.

    Under the interpreter (``SOFT_RTNE``) bf16 is widened by a bitcast, a 16-bit shift of the
    pattern: its own bf16 -> fp32 conversion gets subnormals wrong (see ``round_to``).
    """
    if SOFT_RTNE:
        if x.dtype == tl.bfloat16:
            y = (x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
        else:
            y = x.to(tl.float32)
    else:
        y = x.to(tl.float32)
    return y


@triton.jit
def effective_norm_weight(weight_ptr, cols, col_mask, weight_offset, DTYPE: tl.constexpr, SOFT_RTNE: tl.constexpr):
    """``weight_offset + weight`` as Llama numerics form it: rounded to the activation dtype."""
    # The weight has the activation dtype (the validator requires it), so only the sum rounds.
    w = to_float32(tl.load(weight_ptr + cols, mask=col_mask, other=0.0), SOFT_RTNE)
    return to_float32(round_to(w + weight_offset, DTYPE, SOFT_RTNE), SOFT_RTNE)


@triton.jit
def inv_rms64(sum_sq, d_float, norm_eps):
    """fp64 ``1 / sqrt(mean + norm_eps)`` from an fp64 ``sum_sq``."""
    # The fp32 scalars promote to fp64 against the fp64 sum.
    variance = sum_sq / d_float
    return 1.0 / tl.sqrt(variance + norm_eps)


@triton.jit
def inv_rms_of(sum_sq, d_float, norm_eps):
    """fp32 ``1 / sqrt(mean + norm_eps)`` from an fp64 ``sum_sq``, rounded once.

    Squares of fp32 values are exact in fp64 and the sum is all but exact, so this is the
    correctly rounded factor: never further from the truth than PyTorch's fp32 mean/rsqrt, whose
    summation order a kernel cannot reproduce anyway. Any error here scales a whole row, so it is
    worth the few fp64 operations per row.
    """
    return inv_rms64(sum_sq, d_float, norm_eps).to(tl.float32)


@triton.jit
def projection_coefficient(dot, norm_sq, b, eps):
    """fp32 ``b * dot / (norm_sq + eps)`` from fp64 sums, formed in fp64 and rounded once."""
    # The fp32 scalars promote to fp64 against the fp64 sums. fp64 division is IEEE (correctly
    # rounded) in Triton; tl.div_rn exists for fp32 only.
    return (b * (dot / (norm_sq + eps))).to(tl.float32)


@triton.jit
def normalize(h, inv_rms, w, DTYPE: tl.constexpr, SOFT_RTNE: tl.constexpr):
    """HF Llama RMSNorm of fp32 rows ``h`` given ``1/rms`` per row and the effective weight."""
    # Two roundings, as in HF: normalize in fp32 then cast; multiply (exact in fp32 for two half
    # precision values) then cast.
    normed = to_float32(round_to(h * inv_rms[:, None], DTYPE, SOFT_RTNE), SOFT_RTNE)
    return round_to(normed * w[None, :], DTYPE, SOFT_RTNE)


@triton.jit
def _project_single_block(
    hs_ptr, hf_ptr, out_ptr, normed_ptr, weight_ptr, rows, row_mask, d, d_float,
    stride_hs, stride_hf, stride_out, stride_normed, a, b, eps, norm_eps, weight_offset,
    BLOCK_D: tl.constexpr, RMSNORM: tl.constexpr, SOFT_RTNE: tl.constexpr,
):
    dtype = out_ptr.dtype.element_ty
    cols = tl.arange(0, BLOCK_D)
    col_mask = cols < d
    mask = row_mask[:, None] & col_mask[None, :]
    s = to_float32(tl.load(hs_ptr + rows[:, None] * stride_hs + cols[None, :], mask=mask, other=0.0), SOFT_RTNE)
    f = to_float32(tl.load(hf_ptr + rows[:, None] * stride_hf + cols[None, :], mask=mask, other=0.0), SOFT_RTNE)
    s64, f64 = s.to(tl.float64), f.to(tl.float64)
    coef_f = projection_coefficient(tl.sum(s64 * f64, axis=1), tl.sum(f64 * f64, axis=1), b, eps)
    h = round_to(a * s + coef_f[:, None] * f, dtype, SOFT_RTNE)
    tl.store(out_ptr + rows[:, None] * stride_out + cols[None, :], h, mask=mask)
    if RMSNORM:
        # The norm reads the rounded h, exactly what the next block would read from memory.
        h32 = to_float32(h, SOFT_RTNE)
        h64 = h32.to(tl.float64)
        inv_rms = inv_rms_of(tl.sum(h64 * h64, axis=1), d_float, norm_eps)
        w = effective_norm_weight(weight_ptr, cols, col_mask, weight_offset, dtype, SOFT_RTNE)
        y = normalize(h32, inv_rms, w, dtype, SOFT_RTNE)
        tl.store(normed_ptr + rows[:, None] * stride_normed + cols[None, :], y, mask=mask)


@triton.jit
def _project_looped(
    hs_ptr, hf_ptr, out_ptr, normed_ptr, weight_ptr, rows, row_mask, d, d_float,
    stride_hs, stride_hf, stride_out, stride_normed, a, b, eps, norm_eps, weight_offset,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, RMSNORM: tl.constexpr, SOFT_RTNE: tl.constexpr,
):
    dtype = out_ptr.dtype.element_ty
    # Element-wise fp64 accumulators (exact products), reduced once at the end.
    dot_acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float64)
    norm_acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float64)
    for start in range(0, d, BLOCK_D):
        cols = start + tl.arange(0, BLOCK_D)
        mask = row_mask[:, None] & (cols < d)[None, :]
        s = to_float32(tl.load(hs_ptr + rows[:, None] * stride_hs + cols[None, :], mask=mask, other=0.0), SOFT_RTNE)
        f = to_float32(tl.load(hf_ptr + rows[:, None] * stride_hf + cols[None, :], mask=mask, other=0.0), SOFT_RTNE)
        s64, f64 = s.to(tl.float64), f.to(tl.float64)
        dot_acc += s64 * f64
        norm_acc += f64 * f64
    coef_f = projection_coefficient(tl.sum(dot_acc, axis=1), tl.sum(norm_acc, axis=1), b, eps)

    sq_acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float64)
    for start in range(0, d, BLOCK_D):
        cols = start + tl.arange(0, BLOCK_D)
        mask = row_mask[:, None] & (cols < d)[None, :]
        s = to_float32(tl.load(hs_ptr + rows[:, None] * stride_hs + cols[None, :], mask=mask, other=0.0), SOFT_RTNE)
        f = to_float32(tl.load(hf_ptr + rows[:, None] * stride_hf + cols[None, :], mask=mask, other=0.0), SOFT_RTNE)
        h = round_to(a * s + coef_f[:, None] * f, dtype, SOFT_RTNE)
        tl.store(out_ptr + rows[:, None] * stride_out + cols[None, :], h, mask=mask)
        if RMSNORM:
            h64 = to_float32(h, SOFT_RTNE).to(tl.float64)
            sq_acc += h64 * h64

    if RMSNORM:
        inv_rms = inv_rms_of(tl.sum(sq_acc, axis=1), d_float, norm_eps)
        # Pass 3 reads back this program's own stores; the barrier makes every thread's writes
        # visible to the threads that now read them (the chunk layout need not match).
        tl.debug_barrier()
        for start in range(0, d, BLOCK_D):
            cols = start + tl.arange(0, BLOCK_D)
            col_mask = cols < d
            mask = row_mask[:, None] & col_mask[None, :]
            h = tl.load(out_ptr + rows[:, None] * stride_out + cols[None, :], mask=mask, other=0.0)
            h32 = to_float32(h, SOFT_RTNE)
            w = effective_norm_weight(weight_ptr, cols, col_mask, weight_offset, dtype, SOFT_RTNE)
            y = normalize(h32, inv_rms, w, dtype, SOFT_RTNE)
            tl.store(normed_ptr + rows[:, None] * stride_normed + cols[None, :], y, mask=mask)


@triton.jit
def project_kernel(
    hs_ptr, hf_ptr, out_ptr, normed_ptr, weight_ptr,
    n_rows, d, d_float,
    stride_hs, stride_hf, stride_out, stride_normed,
    a, b, eps, norm_eps, weight_offset,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, SINGLE_BLOCK: tl.constexpr, RMSNORM: tl.constexpr,
    SOFT_RTNE: tl.constexpr,
):
    """``out = a*hs + b*alpha*hf`` per row; with ``RMSNORM`` also ``normed = rmsnorm(out) * w``."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < n_rows
    # 64-bit row offsets: rows * stride overflows int32 past 2**31 elements.
    rows = rows.to(tl.int64)
    if SINGLE_BLOCK:
        _project_single_block(
            hs_ptr, hf_ptr, out_ptr, normed_ptr, weight_ptr, rows, row_mask, d, d_float,
            stride_hs, stride_hf, stride_out, stride_normed, a, b, eps, norm_eps, weight_offset,
            BLOCK_D, RMSNORM, SOFT_RTNE,
        )
    else:
        _project_looped(
            hs_ptr, hf_ptr, out_ptr, normed_ptr, weight_ptr, rows, row_mask, d, d_float,
            stride_hs, stride_hf, stride_out, stride_normed, a, b, eps, norm_eps, weight_offset,
            BLOCK_M, BLOCK_D, RMSNORM, SOFT_RTNE,
        )


def is_interpreted(kernel: object) -> bool:
    """Whether ``@triton.jit`` built ``kernel`` for the interpreter (it then runs on CPU tensors).

    Triton reads ``TRITON_INTERPRET`` when a kernel is decorated, i.e. when this package is
    imported; setting it later changes nothing for kernels that already exist. The decorator then
    returns an ``InterpretedFunction`` instead of a ``JITFunction`` (Triton 3.1 through 3.9).
    """
    return not isinstance(kernel, JITFunction) and type(kernel).__name__ == "InterpretedFunction"


#: Whether this module's kernels run under the Triton interpreter.
INTERPRETED: bool = is_interpreted(project_kernel)


def launch_project(
    hs: torch.Tensor,
    hf: torch.Tensor,
    out: torch.Tensor,
    a: float,
    b: float,
    eps: float,
    *,
    norm_weight: Optional[torch.Tensor] = None,
    out_normed: Optional[torch.Tensor] = None,
    norm_eps: float = 1e-6,
    weight_offset: float = 0.0,
    config: Optional[ProjectConfig] = None,
) -> ProjectConfig:
    """Launch the project kernel on ``[N, d]`` row-major views; returns the configuration used.

    With ``norm_weight`` and ``out_normed`` given it is ``project_rmsnorm``. ``config`` overrides
    the heuristic (tests use it to reach every path with small shapes).
    """
    n_rows, d = hs.shape
    cfg = config if config is not None else project_config(n_rows, d)
    if cfg.single_block and cfg.block_d < d:
        raise ValueError(f"config: a single-block launch needs block_d >= d = {d}, got {cfg.block_d}")
    rmsnorm = norm_weight is not None
    if rmsnorm and out_normed is None:
        raise ValueError("out_normed: required together with norm_weight")
    # Unused pointer slots get a real tensor: the RMSNORM=False specialization never touches them.
    normed = out_normed if rmsnorm else out
    weight = norm_weight if rmsnorm else out
    grid = (triton.cdiv(n_rows, cfg.block_m),)
    project_kernel[grid](
        hs, hf, out, normed, weight,
        n_rows, d, float(d),
        hs.stride(0), hf.stride(0), out.stride(0), normed.stride(0),
        float(a), float(b), float(eps), float(norm_eps), float(weight_offset),
        BLOCK_M=cfg.block_m, BLOCK_D=cfg.block_d, SINGLE_BLOCK=cfg.single_block, RMSNORM=rmsnorm,
        SOFT_RTNE=INTERPRETED, num_warps=cfg.num_warps,
        # h = a*hs + c*hf rounds both products before the add, as the reference and every other
        # backend do. Triton contracts a multiply and an add into an FMA by default (through 3.9;
        # 3.10 changes the default), which would change h's last bit on the GPU only.
        enable_fp_fusion=False,
    )
    return cfg
