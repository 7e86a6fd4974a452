"""The ``torch.ops.sasa.*`` custom ops: schema, fake (meta) implementations, and the eager body.

The eager body validates, reshapes to the backend contract (:mod:`.backends.base`), allocates
outputs and hands them to the backend chosen by :mod:`._dispatch` at call time. Because the choice
happens inside the op, ``torch.compile`` sees one opaque op per call and never recompiles when the
backend changes; the fake implementations give it shapes and dtypes.

The ops are declared with ``torch.library.define`` + ``impl`` rather than ``custom_op``: the latter
wraps every call in Python autograd and dynamo-disable layers costing about 17 us per call on CPU
(measured), which is most of a latency-bound probe's budget. The ops are inference-only: there is
no autograd formula.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _validation as V
from ._dispatch import select
from .reference import mode_coefficients

# Output allocator. Tests replace it with one that fills NaN, so an element a kernel forgets to
# write cannot pass unnoticed.
_empty = torch.empty


def _rows(x: Tensor) -> Tensor:
    """``x`` as ``[N, d]`` with unit stride in the last dimension (copies only when it must)."""
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def _probe_out_dtype(hidden: Tensor) -> torch.dtype:
    return torch.float64 if hidden.dtype == torch.float64 else torch.float32


# FRAGMENT: the compiled extension adds its own ops (sasa::_compiled_*) to the same namespace.
_lib = torch.library.Library("sasa", "FRAGMENT")
_lib.define("project(Tensor hs, Tensor hf, str mode, float coef, float eps) -> Tensor")
_lib.define(
    "project_rmsnorm(Tensor hs, Tensor hf, Tensor norm_weight, str mode, float coef, float eps, "
    "float norm_eps, float weight_offset) -> (Tensor, Tensor)"
)
_lib.define(
    "probe(Tensor hidden, Tensor weight, Tensor? bias, Tensor? positions, Tensor? norm_weight, "
    "float norm_eps, float weight_offset, str activation) -> Tensor"
)


class _NoGradient(torch.autograd.Function):
    """Marks outputs computed from inputs that require grad: backward raises instead of
    silently returning no gradient (the dispatcher's default for ops without a formula)."""

    @staticmethod
    def forward(ctx, name, outputs, *inputs):
        ctx.name = name
        return outputs[0] if len(outputs) == 1 else outputs

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(
            f"sasa::{ctx.name} is inference-only and has no gradient; run it under torch.no_grad() or "
            "torch.inference_mode(), or detach its inputs"
        )


def _autograd_kernel(name: str):
    def kernel(*args):
        with torch._C._AutoDispatchBelowAutograd():
            out = getattr(torch.ops.sasa, name).default(*args)
        needs_grad = [a for a in args if isinstance(a, Tensor) and a.requires_grad]
        if needs_grad and torch.is_grad_enabled():
            return _NoGradient.apply(name, out if isinstance(out, tuple) else (out,), *needs_grad)
        return out

    return kernel


def _register(name: str, body, fake) -> None:
    # One device-generic body: the backend, not the dispatch key, decides what runs.
    _lib.impl(name, body, "CompositeExplicitAutograd")
    _lib.impl(name, _autograd_kernel(name), "Autograd")
    torch.library.register_fake(f"sasa::{name}", fake, lib=_lib)


# --- project -------------------------------------------------------------------------------------


def project_op(hs: Tensor, hf: Tensor, mode: str, coef: float, eps: float) -> Tensor:
    V.check_project(hs, hf, mode, coef, eps)
    out = _empty(hs.shape, dtype=hs.dtype, device=hs.device)
    if out.numel() == 0:
        return out
    a, b = mode_coefficients(mode, coef)
    select(hs.device, hs.dtype).project(_rows(hs), _rows(hf), out.view(-1, hs.shape[-1]), a, b, eps)
    return out


def _project_fake(hs, hf, mode, coef, eps):
    V.check_project(hs, hf, mode, coef, eps)
    return hs.new_empty(hs.shape)


_register("project", project_op, _project_fake)


# --- project_rmsnorm -----------------------------------------------------------------------------


def project_rmsnorm_op(
    hs: Tensor, hf: Tensor, norm_weight: Tensor, mode: str, coef: float, eps: float,
    norm_eps: float, weight_offset: float,
) -> tuple[Tensor, Tensor]:
    V.check_project_rmsnorm(hs, hf, norm_weight, mode, coef, eps, norm_eps, weight_offset)
    out = _empty(hs.shape, dtype=hs.dtype, device=hs.device)
    out_normed = _empty(hs.shape, dtype=hs.dtype, device=hs.device)
    if out.numel() == 0:
        return out, out_normed
    a, b = mode_coefficients(mode, coef)
    d = hs.shape[-1]
    select(hs.device, hs.dtype).project_rmsnorm(
        _rows(hs), _rows(hf), norm_weight.contiguous(), out.view(-1, d), out_normed.view(-1, d),
        a, b, eps, norm_eps, weight_offset,
    )
    return out, out_normed


def _project_rmsnorm_fake(hs, hf, norm_weight, mode, coef, eps, norm_eps, weight_offset):
    V.check_project_rmsnorm(hs, hf, norm_weight, mode, coef, eps, norm_eps, weight_offset)
    return hs.new_empty(hs.shape), hs.new_empty(hs.shape)


_register("project_rmsnorm", project_rmsnorm_op, _project_rmsnorm_fake)


# --- probe ---------------------------------------------------------------------------------------


def probe_op(
    hidden: Tensor, weight: Tensor, bias: Optional[Tensor], positions: Optional[Tensor],
    norm_weight: Optional[Tensor], norm_eps: float, weight_offset: float, activation: str,
) -> Tensor:
    V.check_probe(hidden, weight, bias, positions, norm_weight, norm_eps, weight_offset, activation)
    if positions is not None:
        V.check_positions_values(positions, hidden.shape[1])
    batch, num_probes = hidden.shape[0], weight.shape[0]
    out = _empty((batch, num_probes), dtype=_probe_out_dtype(hidden), device=hidden.device)
    if batch == 0:
        return out
    hidden3 = hidden.unsqueeze(1) if positions is None else hidden
    if hidden3.stride(-1) != 1:
        hidden3 = hidden3.contiguous()
    select(hidden.device, hidden.dtype).probe(
        hidden3, positions, weight.contiguous(), None if bias is None else bias.contiguous(),
        None if norm_weight is None else norm_weight.contiguous(), out, norm_eps, weight_offset,
        activation == "sigmoid",
    )
    return out


def _probe_fake(hidden, weight, bias, positions, norm_weight, norm_eps, weight_offset, activation):
    V.check_probe(hidden, weight, bias, positions, norm_weight, norm_eps, weight_offset, activation)
    return hidden.new_empty((hidden.shape[0], weight.shape[0]), dtype=_probe_out_dtype(hidden))


_register("probe", probe_op, _probe_fake)
