"""Plain PyTorch reference implementations of the SASA kernels.

These functions are the source of truth in tests and the ``torch`` backend. They are written
for clarity, not speed: every reduction accumulates in float32 (float64 when the inputs are
float64), and results are cast back to the input dtype exactly where the fused kernels do it.
(The fused kernels accumulate in float64: see :mod:`sasa_kernels.backends.base`.)

They take the same arguments as the public functions in :mod:`sasa_kernels` but do not validate
them; call the public functions unless you are testing. :func:`project_weighted` is
:func:`project` with the mode already turned into the weights ``(a, b)``, the form the backends
receive.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "project", "project_rmsnorm", "probe", "rmsnorm", "project_weighted", "mode_coefficients", "MODES", "ACTIVATIONS",
]

#: Projection modes (docs/method.md section 3); :func:`mode_coefficients` maps each to ``(a, b)``.
MODES = ("replace", "residual", "interpolate")
ACTIVATIONS = ("sigmoid", "none")


def mode_coefficients(mode: str, coef: float) -> tuple[float, float]:
    """Return ``(a, b)`` such that the projected state is ``a * hs + b * P``, ``P`` the projection."""
    if mode == "replace":
        return 0.0, 1.0
    if mode == "residual":
        return 1.0, float(coef)
    if mode == "interpolate":
        return 1.0 - float(coef), float(coef)
    raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    # fp64 stays fp64 so the reference can serve as its own high-precision oracle.
    return torch.float64 if dtype == torch.float64 else torch.float32


def project(hs: Tensor, hf: Tensor, *, mode: str = "replace", coef: float = 1.0, eps: float = 1e-6) -> Tensor:
    """``a * hs + b * (<hs, hf> / (||hf||^2 + eps)) * hf`` row-wise over the last dimension.

    ``(a, b)`` follow from ``mode`` and ``coef``: see :func:`mode_coefficients`.
    """
    a, b = mode_coefficients(mode, coef)
    return project_weighted(hs, hf, a, b, eps)


def project_weighted(hs: Tensor, hf: Tensor, a: float, b: float, eps: float) -> Tensor:
    """``a * hs + b * P`` with ``P = (<hs, hf> / (||hf||^2 + eps)) * hf``, row-wise.

    :func:`project` with the mode already turned into the weights ``(a, b)`` (see
    :func:`mode_coefficients`): the form the backends receive.
    """
    acc = _acc_dtype(hs.dtype)
    s, f = hs.to(acc), hf.to(acc)
    dot = (s * f).sum(-1, keepdim=True)
    norm_sq = (f * f).sum(-1, keepdim=True)
    alpha = dot / (norm_sq + eps)
    return (a * s + (b * alpha) * f).to(hs.dtype)


def rmsnorm(x: Tensor, weight: Tensor, *, eps: float = 1e-6, weight_offset: float = 0.0) -> Tensor:
    """Hugging Face Llama RMSNorm numerics: normalize in fp32, cast back, multiply by the weight.

    The multiply happens in ``x.dtype`` with ``weight_offset + weight`` rounded to that dtype.
    (Gemma's own module multiplies in fp32 before casting; in half precision the two can differ
    by one unit in the last place.)
    """
    acc = _acc_dtype(x.dtype)
    xf = x.to(acc)
    variance = (xf * xf).mean(-1, keepdim=True)
    normed = (xf * torch.rsqrt(variance + eps)).to(x.dtype)
    return normed * (weight.to(x.dtype) + weight_offset)


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
    """``(h, rmsnorm(h) * (weight_offset + norm_weight))`` with ``h = project(hs, hf, ...)``."""
    h = project(hs, hf, mode=mode, coef=coef, eps=eps)
    return h, rmsnorm(h, norm_weight, eps=norm_eps, weight_offset=weight_offset)


def probe(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    positions: Tensor | None = None,
    norm_weight: Tensor | None = None,
    norm_eps: float = 1e-6,
    weight_offset: float = 0.0,
    activation: str = "sigmoid",
) -> Tensor:
    """Gather each row's last prompt token, optional final RMSNorm, linear probe, activation.

    Returns ``[B, C]`` in float32 (float64 for float64 ``hidden``).
    """
    if positions is not None:
        rows = hidden[torch.arange(hidden.shape[0], device=hidden.device), positions]
    else:
        rows = hidden
    if norm_weight is not None:
        rows = rmsnorm(rows, norm_weight, eps=norm_eps, weight_offset=weight_offset)
    acc = _acc_dtype(hidden.dtype)
    scores = rows.to(acc) @ weight.to(acc).T
    if bias is not None:
        scores = scores + bias.to(acc)
    if activation == "sigmoid":
        scores = torch.sigmoid(scores)
    elif activation != "none":
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    return scores
