"""Triton kernel for ``probe`` (docs/method.md sections 5 and 7): gather, optional RMSNorm, ``[B, d] x [d, C]``.

One launch per call on a ``(cdiv(B, BLOCK_B), cdiv(C, BLOCK_C))`` grid. Each program gathers
``BLOCK_B`` rows (``hidden[b, positions[b]]``) and walks ``d`` in chunks:

- with a norm, pass 1 reduces each row's sum of squares (``BLOCK_N`` chunks); pass 2 reloads the
  row (an L2 hit) in ``BLOCK_K`` chunks and normalizes it: with Llama numerics (roundings to the
  dtype) for fp16/bf16 rows, in fp64 without intermediate roundings for fp32 rows (see below);
- without a norm there is only pass 2;
- pass 2 multiplies each chunk with the weight as a ``[BLOCK_B, BLOCK_C, BLOCK_K]`` fp64 product
  tile reduced over ``k``; bias and sigmoid stay in fp64 and the score is rounded to fp32 once.

Why fp64 and not an fp32 ``tl.dot``: the probe's scores must be within twice the error of
PyTorch's own fp32 matmul. An fp32 dot on FMA units (``input_precision="ieee"``; TF32 is far
worse) accumulates sequentially, which is no more accurate than PyTorch's blocked matmul, so the
two errors are of the same size and the rule failed on about 1 in 10 random small inputs (B=3,
d=131, C=4, fp32, norm and sigmoid). With exact products and an fp64 sum it failed on none of 100.
The cost is ``B * C * d`` fp64 FMAs: small for a probe (C is a handful of probes), and the op is
launch-latency bound anyway. The same holds for the normalized row: on fp32 rows the two fp32
roundings of Llama's RMSNorm (``x * r``, then ``* w``) are errors of the size of the fp32 sum's,
and with a weight nearly orthogonal to the row (a cancelling dot product) they broke the rule on
about 2% of random inputs; normalized in fp64 they never did (0 of 4000). On fp16/bf16 rows the
roundings to the dtype are the model's own numerics (eager has them too) and stay.

A position outside ``[0, T)`` is never dereferenced: its row is read as zeros and its scores are
written as NaN, which a guard treats as flagged (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

from .project import INTERPRETED, effective_norm_weight, inv_rms64, inv_rms_of, normalize, to_float32

__all__ = ["ProbeConfig", "probe_config", "launch_probe"]

#: Probes per program; more probes take a second grid dimension.
MAX_BLOCK_C = 16
#: Rows per program.
MAX_BLOCK_B = 16
#: Elements of the ``[BLOCK_B, BLOCK_C, BLOCK_K]`` fp64 product tile (32 per thread at 4 warps).
MAX_PRODUCT_TILE = 4096
#: Longest chunk of ``d`` per loop iteration (reached when a program has one row and one probe).
MAX_BLOCK_K = 512
#: Cap on the ``[BLOCK_B, BLOCK_N]`` tile of the sum-of-squares pass.
MAX_NORM_TILE = 2048


@dataclass(frozen=True)
class ProbeConfig:
    """Launch shape of the probe kernel (all block sizes are powers of two).

    ``block_k`` is the chunk of ``d`` reduced per iteration of the scores loop; ``block_n`` the
    chunk of the norm's sum-of-squares pass, which has no product tile and streams wider.
    """

    block_b: int
    block_c: int
    block_k: int
    block_n: int
    num_warps: int


def probe_config(batch: int, num_probes: int, d: int) -> ProbeConfig:
    """The heuristic launch configuration for ``batch`` rows, ``num_probes`` probes, width ``d``."""
    block_b = min(triton.next_power_of_2(batch), MAX_BLOCK_B)
    block_c = min(triton.next_power_of_2(num_probes), MAX_BLOCK_C)
    block_k = min(triton.next_power_of_2(d), MAX_PRODUCT_TILE // (block_b * block_c), MAX_BLOCK_K)
    block_n = min(triton.next_power_of_2(d), MAX_NORM_TILE // block_b)
    return ProbeConfig(block_b, block_c, block_k, block_n, 4)


@triton.jit
def _row_sum_sq(
    hidden_ptr, row_offsets, load_mask, d, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, SOFT_RTNE: tl.constexpr,
):
    # fp64: squares are exact and the sum all but exact (see inv_rms_of).
    acc = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float64)
    for start in range(0, d, BLOCK_N):
        ks = start + tl.arange(0, BLOCK_N)
        mask = load_mask[:, None] & (ks < d)[None, :]
        x = to_float32(tl.load(hidden_ptr + row_offsets[:, None] + ks[None, :], mask=mask, other=0.0), SOFT_RTNE)
        x = x.to(tl.float64)  # via fp32: older Triton lacks direct half -> fp64 casts on some targets
        acc += x * x
    return tl.sum(acc, axis=1)


@triton.jit
def probe_kernel(
    hidden_ptr, positions_ptr, weight_ptr, bias_ptr, norm_weight_ptr, out_ptr,
    batch, seq_len, d, d_float, num_probes,
    stride_hb, stride_ht, stride_pos, stride_wc, stride_ob, stride_oc,
    norm_eps, weight_offset,
    HAS_POSITIONS: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_NORM: tl.constexpr, SIGMOID: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
    SOFT_RTNE: tl.constexpr,
):
    """``out[b] = act(rmsnorm(hidden[b, positions[b]]) @ weight.T + bias)`` for a tile of rows/probes."""
    dtype = hidden_ptr.dtype.element_ty
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_mask = rows < batch
    rows = rows.to(tl.int64)
    if HAS_POSITIONS:
        pos = tl.load(positions_ptr + rows * stride_pos, mask=row_mask, other=0).to(tl.int64)
        valid = (pos >= 0) & (pos < seq_len)
        # Clamp so not even the address of an invalid row is formed from a bad index.
        pos = tl.where(valid, pos, 0)
        row_offsets = rows * stride_hb + pos * stride_ht
    else:
        valid = row_mask
        row_offsets = rows * stride_hb
    load_mask = row_mask & valid

    # fp32 rows are normalized in fp64, fp16/bf16 rows with Llama's roundings (dtype is a
    # compile-time value, so each specialization keeps one branch).
    if HAS_NORM:
        sum_sq = _row_sum_sq(hidden_ptr, row_offsets, load_mask, d, BLOCK_B, BLOCK_N, SOFT_RTNE)
        if dtype == tl.float32:
            inv_rms = inv_rms64(sum_sq, d_float, norm_eps)
        else:
            inv_rms = inv_rms_of(sum_sq, d_float, norm_eps)

    probes = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    probe_mask = probes < num_probes
    scores = tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float64)
    for start in range(0, d, BLOCK_K):
        ks = start + tl.arange(0, BLOCK_K)
        k_mask = ks < d
        x = to_float32(tl.load(
            hidden_ptr + row_offsets[:, None] + ks[None, :], mask=load_mask[:, None] & k_mask[None, :], other=0.0,
        ), SOFT_RTNE)
        x64 = x.to(tl.float64)
        if HAS_NORM:
            if dtype == tl.float32:
                w64 = tl.load(norm_weight_ptr + ks, mask=k_mask, other=0.0).to(tl.float64) + weight_offset
                x64 = x64 * inv_rms[:, None] * w64[None, :]
            else:
                w = effective_norm_weight(norm_weight_ptr, ks, k_mask, weight_offset, dtype, SOFT_RTNE)
                x64 = to_float32(normalize(x, inv_rms, w, dtype, SOFT_RTNE), SOFT_RTNE).to(tl.float64)
        wc = to_float32(tl.load(
            weight_ptr + probes[:, None].to(tl.int64) * stride_wc + ks[None, :],
            mask=probe_mask[:, None] & k_mask[None, :], other=0.0,
        ), SOFT_RTNE)
        # Products of two fp32 values are exact in fp64, and the fp64 sum is all but exact.
        scores += tl.sum(x64[:, None, :] * wc.to(tl.float64)[None, :, :], axis=2)

    # Bias and sigmoid in fp64 too, then one rounding: the GPU's fast fp32 exp and division would
    # otherwise add a few ulps that the fp32 reference does not have.
    if HAS_BIAS:
        bias = to_float32(tl.load(bias_ptr + probes, mask=probe_mask, other=0.0), SOFT_RTNE)
        scores += bias.to(tl.float64)[None, :]
    if SIGMOID:
        # exp of -|s| only (never overflows): sigmoid(s) = 1 / (1 + e) for s >= 0, e / (1 + e) below.
        e = tl.exp(-tl.abs(scores))
        scores = tl.where(scores >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    result = tl.where(valid[:, None], scores.to(tl.float32), float("nan"))
    out_offsets = rows[:, None] * stride_ob + probes[None, :] * stride_oc
    tl.store(out_ptr + out_offsets, result, mask=row_mask[:, None] & probe_mask[None, :])


def launch_probe(
    hidden: torch.Tensor,
    positions: Optional[torch.Tensor],
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    norm_weight: Optional[torch.Tensor],
    out: torch.Tensor,
    norm_eps: float,
    weight_offset: float,
    sigmoid: bool,
    *,
    config: Optional[ProbeConfig] = None,
) -> ProbeConfig:
    """Launch the probe kernel on ``hidden`` ``[B, T, d]``; returns the configuration used.

    ``positions`` ``None`` means row 0 of every sequence. ``config`` overrides the heuristic.
    """
    batch, seq_len, d = hidden.shape
    num_probes = weight.shape[0]
    cfg = config if config is not None else probe_config(batch, num_probes, d)
    # Absent optional tensors are replaced by a real one; their constexpr flag keeps them unread.
    grid = (triton.cdiv(batch, cfg.block_b), triton.cdiv(num_probes, cfg.block_c))
    probe_kernel[grid](
        hidden, hidden if positions is None else positions, weight,
        weight if bias is None else bias, hidden if norm_weight is None else norm_weight, out,
        batch, seq_len, d, float(d), num_probes,
        hidden.stride(0), hidden.stride(1), 0 if positions is None else positions.stride(0), weight.stride(0),
        out.stride(0), out.stride(1),
        float(norm_eps), float(weight_offset),
        HAS_POSITIONS=positions is not None, HAS_BIAS=bias is not None, HAS_NORM=norm_weight is not None,
        SIGMOID=bool(sigmoid), BLOCK_B=cfg.block_b, BLOCK_C=cfg.block_c, BLOCK_K=cfg.block_k,
        BLOCK_N=cfg.block_n, SOFT_RTNE=INTERPRETED, num_warps=cfg.num_warps,
    )
    return cfg
