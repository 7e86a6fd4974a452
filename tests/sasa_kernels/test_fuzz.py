"""Fuzz of the three public ops against the float64 reference on every CPU backend.

On top of the property tests' values (unrelated, cancelling and aligned rows, any magnitude) it
draws how the call is made: leading dimensions, non-contiguous layouts (strided rows, a strided
last dimension, transposed storage), NumPy scalars, ``positions=None``, weights in either dtype,
bias or not, either activation. Every output starts as NaN (poisoned at the backend), must have
the expected shape, dtype and contiguity, and must satisfy the 2x-eager rule.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import sasa_kernels as sk
from tests.numerics import assert_matches_reference, poison_outputs
from tests.sasa_kernels.cases import ProbeCase, ProjectCase, probe_cases, project_cases

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LAYOUTS = ("contiguous", "leading", "strided_rows", "strided_last", "transposed")


def laid_out(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``x`` ``[N, d]`` in another memory layout (and maybe more dimensions)."""
    n, d = x.shape
    if layout == "contiguous":
        return x.clone()
    if layout == "leading":  # [N, d] -> [1, N, 1, d]
        return x.clone().view(1, n, 1, d)
    if layout == "strided_rows":  # row stride d + 3
        return torch.cat([x, torch.zeros(n, 3, dtype=x.dtype)], 1)[:, :d]
    if layout == "strided_last":  # last-dimension stride 2: the op copies
        return torch.stack([x, torch.zeros_like(x)], -1).view(n, 2 * d)[:, ::2]
    if layout == "transposed":  # column-major storage
        return x.t().contiguous().t()
    raise ValueError(layout)


def scalar(value: float, kind: str):
    return {"float": float(value), "numpy32": np.float32(value), "numpy64": np.float64(value)}[kind]


SCALAR_KINDS = st.sampled_from(["float", "numpy64", "numpy32"])


@pytest.mark.parametrize("backend", sk.backends("cpu"))
@SETTINGS
@given(case=project_cases(), layouts=st.tuples(st.sampled_from(LAYOUTS), st.sampled_from(LAYOUTS)),
       scalars=SCALAR_KINDS, with_norm=st.booleans())
@example(case=ProjectCase(torch.float32, 3, 106, 4511, "independent", mode="replace"),
         layouts=("transposed", "leading"), scalars="float", with_norm=True)
@example(case=ProjectCase(torch.bfloat16, 2, 40, 5, "aligned", mode="residual", coef=0.3),
         layouts=("strided_last", "strided_rows"), scalars="numpy32", with_norm=False)
def test_project_ops_fuzz(backend, case, layouts, scalars, with_norm):
    hs2, hf2 = case.tensors()
    hs, hf = laid_out(hs2, layouts[0]), laid_out(hf2, layouts[1])
    if hs.shape != hf.shape:  # the op never broadcasts: give both the same view
        hf = hf.reshape(hs.shape)
    # numpy32 scalars: use values exactly representable in float32 so the reference sees the same.
    coef = float(np.float32(case.coef)) if scalars == "numpy32" else case.coef
    kwargs = dict(mode=case.mode, coef=scalar(coef, scalars), eps=scalar(case.eps, scalars))
    reference_kwargs = dict(mode=case.mode, coef=coef, eps=float(scalar(case.eps, scalars)))
    w = (1 + 0.1 * torch.linspace(-1, 1, case.d)).to(case.dtype)
    with pytest.MonkeyPatch.context() as mp, sk.use_backend(backend):
        poison_outputs(mp)
        if with_norm:
            norm_kwargs = dict(norm_eps=scalar(1e-5, scalars), weight_offset=scalar(0.0, scalars))
            out = sk.project_rmsnorm(hs, hf, w, **kwargs, **norm_kwargs)
        else:
            out = sk.project(hs, hf, **kwargs)
    outputs = out if with_norm else (out,)
    for o in outputs:
        assert o.shape == hs.shape and o.dtype == hs.dtype and o.is_contiguous()
    if with_norm:
        reference_kwargs.update(norm_eps=float(scalar(1e-5, scalars)), weight_offset=0.0)
        assert_matches_reference(out, sk.reference.project_rmsnorm, (hs, hf, w), reference_kwargs)
    else:
        assert_matches_reference(out, sk.reference.project, (hs, hf), reference_kwargs)


@pytest.mark.parametrize("backend", sk.backends("cpu"))
@SETTINGS
@given(case=probe_cases(), gathered=st.booleans(), strided=st.booleans())
@example(case=ProbeCase(torch.float32, 1, 3, 155, 1, 1942, exponent=1, with_norm=True, cancelling=True, delta=1e-6,
                        with_bias=False), gathered=True, strided=True)
def test_probe_fuzz(backend, case, gathered, strided):
    hidden, weight, bias, positions, norm_weight = case.tensors()
    if gathered:  # rows given directly: [B, d], no positions
        hidden, positions = hidden[torch.arange(case.batch), positions], None
    if strided:  # last dimension strided (copied by the op), weight rows strided
        hidden = torch.stack([hidden, torch.zeros_like(hidden)], -1).flatten(-2)[..., ::2]
        weight = torch.cat([weight, torch.zeros_like(weight)], 1)[:, : case.d]
    kwargs = case.kwargs(positions, norm_weight)
    with pytest.MonkeyPatch.context() as mp, sk.use_backend(backend):
        poison_outputs(mp)
        out = sk.probe(hidden, weight, bias, **kwargs)
    want_dtype = torch.float64 if case.dtype == torch.float64 else torch.float32
    assert out.shape == (case.batch, case.num_probes) and out.dtype == want_dtype
    assert_matches_reference(out, sk.reference.probe, (hidden, weight, bias), kwargs)
