"""The public functions: validate, then call the ``torch.ops.sasa`` op."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _validation as V


def project(hs: Tensor, hf: Tensor, *, mode: str = "replace", coef: float = 1.0, eps: float = 1e-6) -> Tensor:
    """Project the safety layer's state onto the fused layer's, row-wise (SASA.md §3).

    For each row (the last dimension ``d``)::

        alpha = <hs, hf> / (||hf||^2 + eps)
        out   = a * hs + b * alpha * hf

    with ``(a, b) = (0, 1)`` for ``mode="replace"``, ``(1, coef)`` for ``"residual"`` and
    ``(1 - coef, coef)`` for ``"interpolate"``. A zero ``hf`` row gives ``alpha = 0``.

    Args:
        hs: safety-layer state ``[..., d]``, float16/bfloat16/float32/float64.
        hf: fused-layer state, same shape, dtype and device as ``hs`` (no broadcasting).
        mode: ``"replace"`` (default), ``"residual"`` or ``"interpolate"``.
        coef: lambda for ``residual`` and ``interpolate``; ignored by ``replace``.
        eps: added to ``||hf||^2``; must be > 0.

    Returns:
        A new tensor with the shape and dtype of ``hs``. Dot products and norms accumulate in
        float32 (float64 for float64 inputs). Inputs not contiguous in the last dimension are
        copied to contiguous memory first.

    Raises:
        TypeError, ValueError: on bad input, naming the argument, before any kernel runs.
    """
    V.check_project(hs, hf, mode, coef, eps)
    return torch.ops.sasa.project(hs, hf, mode, float(coef), float(eps))


def project_rmsnorm(
    hs: Tensor,
    hf: Tensor,
    norm_weight: Tensor,
    *,
    mode: str = "replace",
    coef: float = 1.0,
    eps: float = 1e-6,
    norm_eps: float = 1e-6,
    weight_offset: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """:func:`project` fused with the next block's input RMSNorm, in one pass.

    Returns ``(h, normed)`` where ``h = project(hs, hf, mode=..., coef=..., eps=...)`` and
    ``normed = rmsnorm(h) * (weight_offset + norm_weight)`` with Hugging Face Llama numerics:
    normalize in float32, cast to ``h``'s dtype, multiply by the weight in that dtype.
    ``weight_offset=1.0`` gives Gemma's ``(1 + w)`` convention.

    Args:
        norm_weight: ``[d]``, same dtype and device as ``hs``.
        norm_eps: the RMSNorm epsilon (> 0).
        weight_offset: added to ``norm_weight`` before the multiply.
        hs, hf, mode, coef, eps: as in :func:`project`.
    """
    V.check_project_rmsnorm(hs, hf, norm_weight, mode, coef, eps, norm_eps, weight_offset)
    return torch.ops.sasa.project_rmsnorm(
        hs, hf, norm_weight, mode, float(coef), float(eps), float(norm_eps), float(weight_offset)
    )


def probe(
    hidden: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    *,
    positions: Optional[Tensor] = None,
    norm_weight: Optional[Tensor] = None,
    norm_eps: float = 1e-6,
    weight_offset: float = 0.0,
    activation: str = "sigmoid",
) -> Tensor:
    """Score each sequence's last prompt token with ``C`` linear probes in one launch (SASA.md §5).

    Args:
        hidden: ``[B, T, d]`` with ``positions``, or ``[B, d]`` without.
        weight: ``[C, d]`` probe weights, float32 or ``hidden``'s dtype.
        bias: ``[C]`` (dtype of ``weight``) or ``None``.
        positions: int64 ``[B]``: index in ``T`` of each row's last prompt token; works for left-
            and right-padded batches. Every index must lie in ``[0, T)``; this is checked eagerly.
            (Under ``torch.compile`` or CUDA graph capture it cannot be; kernels then return NaN
            for that row, which a fail-closed guard counts as flagged.)
        norm_weight: ``[d]`` (dtype of ``hidden``): if given, the final RMSNorm (Llama numerics,
            ``weight_offset + norm_weight``) is applied to the gathered rows first.
        norm_eps: RMSNorm epsilon (> 0).
        weight_offset: see :func:`project_rmsnorm`.
        activation: ``"sigmoid"`` (probabilities) or ``"none"`` (raw scores).

    Returns:
        ``[B, C]`` float32 (float64 for float64 ``hidden``).
    """
    V.check_probe(hidden, weight, bias, positions, norm_weight, norm_eps, weight_offset, activation)
    # The range of positions (a data check: one host sync on a GPU) is checked once, in the op.
    return torch.ops.sasa.probe(
        hidden, weight, bias, positions, norm_weight, float(norm_eps), float(weight_offset), activation
    )
