"""The ``torch.ops.sasa.*`` custom ops: schema, op bodies, fake (meta) implementations.

Each op body validates (:mod:`._validation`) and hands the call to the backend
:func:`._dispatch.select` picks at call time, which allocates and computes the outputs (the
contract: :mod:`.backends.base`). The fake
implementation next to it runs the same validator and only computes shapes and dtypes. Because the
backend is chosen inside the op, ``torch.compile`` sees one opaque op per call and never
recompiles when the backend changes.

The public functions (:mod:`._api`) call these bodies directly for plain eager calls and go
through ``torch.ops.sasa.*`` otherwise (tracing, tensor subclasses, inputs that require grad), so
every call is validated exactly once on its way to a kernel.

The ops are declared with ``torch.library.define`` + ``impl`` rather than ``custom_op``, whose
per-call Python layers cost about 17 us on CPU (measured), most of a small probe's budget. They
are inference-only: :func:`torch.library.register_autograd` installs a backward that raises, so an
output computed from inputs that require grad cannot silently get no gradient.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._dispatch import select
from ._validation import check_positions_values, check_probe, check_project, check_project_rmsnorm
from .reference import mode_coefficients

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


def _probe_out_dtype(hidden: Tensor) -> torch.dtype:
    return torch.float64 if hidden.dtype == torch.float64 else torch.float32


def _no_gradient(name: str):
    def backward(ctx, *grads):
        raise RuntimeError(
            f"sasa::{name} is inference-only and has no gradient; run it under torch.no_grad() or "
            "torch.inference_mode(), or detach its inputs"
        )

    return backward


def _register(name: str, body, fake) -> None:
    # One device-generic body: the backend, not the dispatch key, decides what runs.
    _lib.impl(name, body, "CompositeExplicitAutograd")
    torch.library.register_fake(f"sasa::{name}", fake, lib=_lib)
    torch.library.register_autograd(f"sasa::{name}", _no_gradient(name), lib=_lib)


# --- project -------------------------------------------------------------------------------------


def project(hs: Tensor, hf: Tensor, mode: str, coef: float, eps: float) -> Tensor:
    check_project(hs, hf, mode, coef, eps)
    a, b = mode_coefficients(mode, coef)
    return select(hs.device, hs.dtype).project(hs, hf, a, b, float(eps))


def _project_fake(hs, hf, mode, coef, eps):
    check_project(hs, hf, mode, coef, eps)
    return hs.new_empty(hs.shape)


_register("project", project, _project_fake)


# --- project_rmsnorm -----------------------------------------------------------------------------


def project_rmsnorm(
    hs: Tensor, hf: Tensor, norm_weight: Tensor, mode: str, coef: float, eps: float,
    norm_eps: float, weight_offset: float,
) -> tuple[Tensor, Tensor]:
    check_project_rmsnorm(hs, hf, norm_weight, mode, coef, eps, norm_eps, weight_offset)
    a, b = mode_coefficients(mode, coef)
    return select(hs.device, hs.dtype).project_rmsnorm(
        hs, hf, norm_weight, a, b, float(eps), float(norm_eps), float(weight_offset)
    )


def _project_rmsnorm_fake(hs, hf, norm_weight, mode, coef, eps, norm_eps, weight_offset):
    check_project_rmsnorm(hs, hf, norm_weight, mode, coef, eps, norm_eps, weight_offset)
    return hs.new_empty(hs.shape), hs.new_empty(hs.shape)


_register("project_rmsnorm", project_rmsnorm, _project_rmsnorm_fake)


# --- probe ---------------------------------------------------------------------------------------


def probe(
    hidden: Tensor, weight: Tensor, bias: Optional[Tensor], positions: Optional[Tensor],
    norm_weight: Optional[Tensor], norm_eps: float, weight_offset: float, activation: str,
) -> Tensor:
    check_probe(hidden, weight, bias, positions, norm_weight, norm_eps, weight_offset, activation)
    if positions is not None:
        check_positions_values(positions, hidden.shape[1])
    return select(hidden.device, hidden.dtype).probe(
        hidden, positions, weight, bias, norm_weight, float(norm_eps), float(weight_offset), activation == "sigmoid"
    )


def _probe_fake(hidden, weight, bias, positions, norm_weight, norm_eps, weight_offset, activation):
    check_probe(hidden, weight, bias, positions, norm_weight, norm_eps, weight_offset, activation)
    return hidden.new_empty((hidden.shape[0], weight.shape[0]), dtype=_probe_out_dtype(hidden))


_register("probe", probe, _probe_fake)
