"""Numerical helpers shared by the kernel tests.

The tolerance rule (the project's reference-first rule): a kernel's max-abs error against the
float64 reference may be at most twice the error of the PyTorch eager reference run in the same
dtype, plus a small atol of one unit in the last place of the largest reference value (never below
the dtype's smallest normal number, so results in the subnormal range are not held to more bits
than they have).

Unwritten outputs: :func:`poison_outputs` hands every backend NaN-filled output buffers, so an
element a kernel forgets to write fails the rule (NaN counts as an infinite error).
"""

from __future__ import annotations

from typing import Callable, Sequence

import pytest
import torch

import sasa_kernels as sk
from sasa_kernels import _dispatch
from sasa_kernels.backends.base import empty_rows, empty_scores

LOW_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def to64(x):
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.double()
    return x


def max_err(actual: torch.Tensor, truth: torch.Tensor) -> float:
    if actual.numel() == 0:
        return 0.0
    diff = (actual.double() - truth).abs()
    # NaN anywhere (an unwritten, poisoned element) must fail, so it is made infinite here.
    return float(torch.nan_to_num(diff, nan=float("inf")).max())


def assert_matches_reference(
    actual: torch.Tensor | Sequence[torch.Tensor],
    reference_fn: Callable,
    args: tuple,
    kwargs: dict,
    *,
    atol_ulps: float = 1.0,
) -> None:
    """Check ``actual`` against ``reference_fn`` under the 2x-eager rule.

    ``args`` hold the low-precision inputs the kernel saw; the reference runs once on them (the
    eager baseline in that dtype) and once on float64 copies (the truth).
    """
    truth = reference_fn(*[to64(a) for a in args], **{k: to64(v) for k, v in kwargs.items()})
    eager = reference_fn(*args, **kwargs)
    if isinstance(truth, torch.Tensor):
        truth, eager, actual = (truth,), (eager,), (actual,)
    for i, (a, e, t) in enumerate(zip(actual, eager, truth)):
        assert a.shape == t.shape, f"output {i}: shape {tuple(a.shape)} != {tuple(t.shape)}"
        assert a.dtype == e.dtype, f"output {i}: dtype {a.dtype} != {e.dtype}"
        scale = float(t.abs().max()) if t.numel() else 0.0
        finfo = torch.finfo(a.dtype)
        atol = max(atol_ulps * finfo.eps * scale, finfo.tiny)
        err, eager_err = max_err(a, t), max_err(e, t)
        assert err <= 2 * eager_err + atol, (
            f"output {i}: max error {err:.3e} > 2 * eager error {eager_err:.3e} + atol {atol:.3e}"
        )


def _nan(t: torch.Tensor) -> torch.Tensor:
    return t.fill_(float("nan"))


def _poisoning(name: str, method: Callable) -> Callable:
    # The backend contract (sasa_kernels.backends.base): outputs passed as out=... are written.
    # The fast CPU entries (*_if_plain) take the same arguments and outputs.
    if name in ("project", "project_if_plain"):
        def poisoned(hs, hf, a, b, eps, out=None):
            return method(hs, hf, a, b, eps, out=_nan(empty_rows(hs) if out is None else out))
    elif name in ("project_rmsnorm", "project_rmsnorm_if_plain"):
        def poisoned(hs, hf, norm_weight, a, b, eps, norm_eps, weight_offset, out=None, out_normed=None):
            out = _nan(empty_rows(hs) if out is None else out)
            out_normed = _nan(empty_rows(hs) if out_normed is None else out_normed)
            return method(hs, hf, norm_weight, a, b, eps, norm_eps, weight_offset, out=out, out_normed=out_normed)
    else:
        def poisoned(hidden, positions, weight, bias, norm_weight, norm_eps, weight_offset, sigmoid, out=None):
            out = _nan(empty_scores(hidden, weight) if out is None else out)
            return method(hidden, positions, weight, bias, norm_weight, norm_eps, weight_offset, sigmoid, out=out)
    return poisoned


def poison_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every output a backend writes start as NaN, so an element a kernel does not write
    fails the test: each registered backend is given NaN-filled output buffers instead of
    allocating its own, until ``monkeypatch`` is undone."""
    for backend in _dispatch._registry.values():
        for name in ("project", "project_rmsnorm", "probe", "project_if_plain", "project_rmsnorm_if_plain"):
            method = getattr(backend, name)
            if method is not None:
                monkeypatch.setattr(backend, name, _poisoning(name, method))


@pytest.fixture
def poisoned_outputs(monkeypatch):
    """:func:`poison_outputs` as a fixture."""
    poison_outputs(monkeypatch)


def backend_params() -> list:
    """(device, backend) pairs: every CPU backend here, and every CUDA one marked ``cuda``."""
    params = [pytest.param("cpu", name, id=f"cpu-{name}") for name in sk.backends("cpu")]
    cuda_ok = torch.cuda.is_available()
    for name in ("triton", "cuda", "torch"):
        usable = cuda_ok and name in sk.backends("cuda")
        params.append(
            pytest.param(
                "cuda", name, id=f"cuda-{name}",
                marks=[pytest.mark.cuda, pytest.mark.skipif(not usable, reason=f"{name} not usable on CUDA here")],
            )
        )
    return params
