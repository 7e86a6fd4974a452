"""The public functions.

A plain eager call (no tracing, no tensor subclass, no input that requires grad) runs the op body
of :mod:`._ops` directly: one validation, the cached backend choice, the kernel. Every other call
goes through ``torch.ops.sasa.*``, so ``torch.compile`` records the op, fake tensors reach the fake
implementation and autograd sees the op's (raising) backward. The results are the same either
way; the direct route only skips the dispatcher's round trip into Python (measured on a 2-core
CPU, 1x64 float32: 2.8 us per call through sk.project, 10.3 us through torch.ops.sasa.project). A
``TorchDispatchMode`` active around a plain eager call therefore sees the op's inner calls (an
allocation and the backend's kernel) instead of ``sasa::project`` itself.

On CPU, ``project`` and ``project_rmsnorm`` first offer a plain call to the backend's fast entry
(:func:`._dispatch.fast_cpu_backend`): with the scalars checked here, it checks the tensors in C++
and runs the kernel, or declines (anything unusual, anything the validator would refuse) and the
call goes on as above. On a 2-core AMD EPYC, 1x64 float32, this took ``sk.project`` from 2.45x to
1.19x the time of a ``torch.add`` of the same shape (``benchmarks/bench_host.py``): reading shapes,
dtypes and devices in Python had cost about 1 us, the C++ dispatcher's autograd fallback 0.6 us.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.nn import Parameter

from . import _ops
from ._dispatch import fast_cpu_backend
from ._validation import plain_project_rmsnorm_scalars, plain_project_scalars
from .reference import mode_coefficients

_is_compiling = torch.compiler.is_compiling
_grad_enabled = torch.is_grad_enabled


def _needs_op(*tensors: object) -> bool:
    """Whether a call with these arguments must go through ``torch.ops.sasa`` (see module doc)."""
    if _is_compiling():
        return True
    grad = _grad_enabled()
    for x in tensors:
        kind = type(x)
        if kind is Tensor or kind is Parameter:
            if grad and x.requires_grad:
                return True
        elif isinstance(x, Tensor):  # fake, functional, DTensor, ...: the dispatcher knows them
            return True
    return False


def project(hs: Tensor, hf: Tensor, *, mode: str = "replace", coef: float = 1.0, eps: float = 1e-6) -> Tensor:
    """Project the safety layer's state onto the fused layer's, row-wise (docs/method.md section 3).

    For each row (the last dimension ``d``)::

        alpha = <hs, hf> / (||hf||^2 + eps)
        out   = a * hs + b * alpha * hf

    with ``(a, b) = (0, 1)`` for ``mode="replace"``, ``(1, coef)`` for ``"residual"`` and
    ``(1 - coef, coef)`` for ``"interpolate"``. A zero ``hf`` row gives ``alpha = 0``.

    Args:
        hs: safety-layer state ``[..., d]``, float16/bfloat16/float32/float64.
        hf: fused-layer state, same shape, dtype and device as ``hs`` (no broadcasting).
        mode: ``"replace"`` (default), ``"residual"`` or ``"interpolate"``.
        coef: lambda for ``residual`` and ``interpolate``; ignored by ``replace``. A real number
            within float32's range.
        eps: added to ``||hf||^2``; at least the smallest normal float32 (about 1.18e-38).

    Returns:
        A new contiguous tensor with the shape and dtype of ``hs``. The fused backends accumulate
        dot products and norms in float64 (see :mod:`sasa_kernels.backends.base`); the ``torch``
        backend, the reference, in float32 (float64 for float64 inputs).

    Raises:
        TypeError, ValueError: on bad input, naming the argument, before any kernel runs.
    """
    if type(hs) is Tensor and type(hf) is Tensor and not _is_compiling():
        fast = fast_cpu_backend()
        if fast is not None and plain_project_scalars(mode, coef, eps):
            a, b = mode_coefficients(mode, coef)
            out = fast.project_if_plain(hs, hf, a, b, eps)
            if out is not None:
                return out
    # _needs_op(hs, hf), written out: this is the call most sensitive to per-call overhead.
    if _is_compiling() or type(hs) is not Tensor or type(hf) is not Tensor or (
        (hs.requires_grad or hf.requires_grad) and _grad_enabled()
    ):
        if _needs_op(hs, hf):
            return torch.ops.sasa.project(hs, hf, mode, coef, eps)
    return _ops.project(hs, hf, mode, coef, eps)


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
        norm_eps: the RMSNorm epsilon (at least the smallest normal float32).
        weight_offset: added to ``norm_weight`` before the multiply (within float32's range).
        hs, hf, mode, coef, eps: as in :func:`project`.
    """
    if type(hs) is Tensor and type(hf) is Tensor and type(norm_weight) is Tensor and not _is_compiling():
        fast = fast_cpu_backend()
        if fast is not None and plain_project_rmsnorm_scalars(mode, coef, eps, norm_eps, weight_offset):
            a, b = mode_coefficients(mode, coef)
            outs = fast.project_rmsnorm_if_plain(hs, hf, norm_weight, a, b, eps, norm_eps, weight_offset)
            if outs is not None:
                return outs
    if _needs_op(hs, hf, norm_weight):
        return torch.ops.sasa.project_rmsnorm(hs, hf, norm_weight, mode, coef, eps, norm_eps, weight_offset)
    return _ops.project_rmsnorm(hs, hf, norm_weight, mode, coef, eps, norm_eps, weight_offset)


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
    """Score each sequence's last prompt token with ``C`` linear probes in one call (docs/method.md section 5).

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
        norm_eps: RMSNorm epsilon (at least the smallest normal float32).
        weight_offset: see :func:`project_rmsnorm`.
        activation: ``"sigmoid"`` (probabilities) or ``"none"`` (raw scores).

    Returns:
        ``[B, C]`` float32 (float64 for float64 ``hidden``).
    """
    if _needs_op(hidden, weight, bias, positions, norm_weight):
        return torch.ops.sasa.probe(hidden, weight, bias, positions, norm_weight, norm_eps, weight_offset, activation)
    return _ops.probe(hidden, weight, bias, positions, norm_weight, norm_eps, weight_offset, activation)
