"""Property tests: random shapes and values, zero rows, huge and tiny magnitudes, every backend."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sasa_kernels as sk
from tests.numerics import assert_matches_reference, poison_outputs

# Decimal exponent ranges that keep every output finite in the dtype (a residual projection can
# reach a few times |hs|), while still spanning tiny and huge values.
EXPONENTS = {torch.float32: (-18, 18), torch.float16: (-3, 3), torch.bfloat16: (-18, 18)}
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def project_inputs(draw):
    dtype = draw(st.sampled_from(list(EXPONENTS)))
    rows = draw(st.integers(0, 5))
    d = draw(st.integers(1, 300))
    lo, hi = EXPONENTS[dtype]
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    # Each row gets its own magnitude, so one call mixes tiny and huge rows.
    scale_s = 10.0 ** torch.randint(lo, hi + 1, (rows, 1), generator=g).double()
    scale_f = 10.0 ** torch.randint(lo, hi + 1, (rows, 1), generator=g).double()
    hs = (torch.randn(rows, d, generator=g, dtype=torch.float64) * scale_s).to(dtype)
    hf = (torch.randn(rows, d, generator=g, dtype=torch.float64) * scale_f).to(dtype)
    zero_rows = draw(st.lists(st.integers(0, max(rows - 1, 0)), max_size=2)) if rows else []
    for r in zero_rows:
        draw(st.sampled_from([hs, hf]))[r] = 0
    mode = draw(st.sampled_from(["replace", "residual", "interpolate"]))
    coef = draw(st.floats(-1.0, 2.0, allow_nan=False))
    eps = draw(st.sampled_from([1e-6, 1e-12, 1.0]))
    return hs, hf, dict(mode=mode, coef=coef, eps=eps)


@pytest.mark.parametrize("backend", sk.backends("cpu"))
@SETTINGS
@given(data=project_inputs())
def test_project_property(backend, data):
    hs, hf, kwargs = data
    with pytest.MonkeyPatch.context() as mp, sk.use_backend(backend):
        poison_outputs(mp)
        out = sk.project(hs, hf, **kwargs)
    assert torch.isfinite(out).all()
    assert_matches_reference(out, sk.reference.project, (hs, hf), kwargs)


@pytest.mark.parametrize("backend", sk.backends("cpu"))
@SETTINGS
@given(data=project_inputs(), offset=st.sampled_from([0.0, 1.0]))
def test_project_rmsnorm_property(backend, data, offset):
    hs, hf, kwargs = data
    w = torch.linspace(-2, 2, hs.shape[-1]).to(hs.dtype)
    kwargs = dict(kwargs, norm_eps=1e-6, weight_offset=offset)
    with pytest.MonkeyPatch.context() as mp, sk.use_backend(backend):
        poison_outputs(mp)
        out = sk.project_rmsnorm(hs, hf, w, **kwargs)
    assert_matches_reference(out, sk.reference.project_rmsnorm, (hs, hf, w), kwargs)


@pytest.mark.parametrize("backend", sk.backends("cpu"))
@SETTINGS
@given(
    batch=st.integers(0, 9),
    seq=st.integers(1, 7),
    d=st.integers(1, 200),
    num_probes=st.integers(1, 20),
    exponent=st.integers(-3, 3),
    with_norm=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    seed=st.integers(0, 2**31 - 1),
)
def test_probe_property(backend, batch, seq, d, num_probes, exponent, with_norm, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(batch, seq, d, generator=g) * 10.0**exponent).to(dtype)
    positions = torch.randint(0, seq, (batch,), generator=g)
    weight = torch.randn(num_probes, d, generator=g) / d
    bias = torch.randn(num_probes, generator=g)
    norm_weight = torch.rand(d, generator=g).to(dtype) if with_norm else None
    kwargs = dict(positions=positions, norm_weight=norm_weight, activation="none")
    with pytest.MonkeyPatch.context() as mp, sk.use_backend(backend):
        poison_outputs(mp)
        out = sk.probe(hidden, weight, bias, **kwargs)
    assert out.shape == (batch, num_probes)
    assert_matches_reference(out, sk.reference.probe, (hidden, weight, bias), kwargs)
