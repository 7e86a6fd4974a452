"""Every op on every usable backend against the float64 reference (the 2x-eager rule).

Sizes: d in 1, 7, 127, 4095, 4096, 5120; 1 to 3 leading dimensions; non-contiguous and empty
inputs; float32, float16, bfloat16; every projection mode. Outputs are poisoned with NaN first.
"""

from __future__ import annotations

import pytest
import torch

import sasa_kernels as sk
from tests.numerics import LOW_DTYPES, assert_matches_reference, backend_params

pytestmark = pytest.mark.usefixtures("poisoned_outputs")

DIMS = (1, 7, 127, 4095, 4096, 5120)
LEADING = ((3,), (2, 3), (2, 1, 2))
MODES = ("replace", "residual", "interpolate")
BACKENDS = backend_params()


def _inputs(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    hs = torch.randn(shape, generator=g).to(dtype)
    hf = torch.randn(shape, generator=g).to(dtype)
    return hs.to(device), hf.to(device)


def _weight(d, dtype, device, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (1 + 0.1 * torch.randn(d, generator=g)).to(dtype).to(device)


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("dtype", LOW_DTYPES, ids=str)
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("leading", LEADING, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_project(device, backend, dtype, d, leading, mode):
    hs, hf = _inputs((*leading, d), dtype, device)
    kwargs = dict(mode=mode, coef=0.3, eps=1e-6)
    with sk.use_backend(backend):
        out = sk.project(hs, hf, **kwargs)
    assert_matches_reference(out, sk.reference.project, (hs, hf), kwargs)


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("dtype", LOW_DTYPES, ids=str)
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("leading", LEADING, ids=str)
@pytest.mark.parametrize("mode,offset", [("replace", 0.0), ("residual", 1.0), ("interpolate", 0.0)])
def test_project_rmsnorm(device, backend, dtype, d, leading, mode, offset):
    hs, hf = _inputs((*leading, d), dtype, device)
    w = _weight(d, dtype, device)
    kwargs = dict(mode=mode, coef=0.7, eps=1e-6, norm_eps=1e-5, weight_offset=offset)
    with sk.use_backend(backend):
        out = sk.project_rmsnorm(hs, hf, w, **kwargs)
    assert_matches_reference(out, sk.reference.project_rmsnorm, (hs, hf, w), kwargs)


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("dtype", LOW_DTYPES, ids=str)
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("num_probes", (1, 5))
@pytest.mark.parametrize("with_norm", (False, True), ids=("no-norm", "norm"))
def test_probe_gathered(device, backend, dtype, d, num_probes, with_norm):
    g = torch.Generator().manual_seed(d)
    hidden = torch.randn(3, 6, d, generator=g).to(dtype).to(device)
    positions = torch.tensor([5, 0, 3], device=device)  # right-padded, left-padded, middle
    weight = (torch.randn(num_probes, d, generator=g) / d**0.5).to(device)
    bias = torch.randn(num_probes, generator=g).to(device)
    norm_weight = _weight(d, dtype, device) if with_norm else None
    kwargs = dict(positions=positions, norm_weight=norm_weight, norm_eps=1e-6, weight_offset=0.0, activation="sigmoid")
    with sk.use_backend(backend):
        out = sk.probe(hidden, weight, bias, **kwargs)
    assert out.dtype == torch.float32 and out.shape == (3, num_probes)
    assert_matches_reference(out, sk.reference.probe, (hidden, weight, bias), kwargs)


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("dtype", LOW_DTYPES, ids=str)
@pytest.mark.parametrize("activation", ("sigmoid", "none"))
def test_probe_rows_low_precision_weight(device, backend, dtype, activation):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, 127, generator=g).to(dtype).to(device)
    weight = torch.randn(3, 127, generator=g).to(dtype).to(device)  # weight in hidden's dtype
    bias = torch.randn(3, generator=g).to(dtype).to(device)
    kwargs = dict(activation=activation, norm_weight=_weight(127, dtype, device), weight_offset=1.0)
    with sk.use_backend(backend):
        out = sk.probe(hidden, weight, bias, **kwargs)
    assert_matches_reference(out, sk.reference.probe, (hidden, weight, bias), kwargs)


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("dtype", LOW_DTYPES, ids=str)
def test_non_contiguous_inputs(device, backend, dtype):
    g = torch.Generator().manual_seed(3)
    # Last dimension strided (made contiguous by the op layer) and leading dimensions that
    # cannot be flattened into one uniform row stride.
    hs = torch.randn(4, 6, 2 * 131, generator=g).to(dtype).to(device)[:, ::2, ::2]
    hf = torch.randn(3, 131, 4, generator=g).to(dtype).to(device).permute(2, 0, 1)
    assert hs.stride(-1) == 2 and hf.stride(-1) == 4
    w = _weight(131, dtype, device)
    with sk.use_backend(backend):
        out = sk.project(hs, hf, mode="interpolate", coef=0.25)
        out2 = sk.project_rmsnorm(hs, hf, w)
        hidden = torch.randn(3, 5, 262, generator=g).to(dtype).to(device)[..., ::2]
        weight = torch.randn(8, 131, generator=g)[::2].to(device)
        positions = torch.tensor([4, 2, 0], device=device)
        scores = sk.probe(hidden, weight, positions=positions, norm_weight=w)
    assert_matches_reference(out, sk.reference.project, (hs, hf), dict(mode="interpolate", coef=0.25))
    assert_matches_reference(out2, sk.reference.project_rmsnorm, (hs, hf, w), {})
    assert_matches_reference(scores, sk.reference.probe, (hidden, weight), dict(positions=positions, norm_weight=w))


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0, 7), (2, 0, 7), (0, 4096)], ids=str)
def test_empty_inputs(device, backend, shape):
    hs = torch.randn(shape, device=device)
    w = torch.ones(shape[-1], device=device)
    with sk.use_backend(backend):
        assert sk.project(hs, hs).shape == shape
        h, n = sk.project_rmsnorm(hs, hs, w)
        assert h.shape == n.shape == shape
        scores = sk.probe(torch.randn(0, 3, shape[-1], device=device), torch.randn(2, shape[-1], device=device),
                          positions=torch.zeros(0, dtype=torch.long, device=device))
        assert scores.shape == (0, 2) and scores.dtype == torch.float32


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("dtype", LOW_DTYPES, ids=str)
def test_zero_fused_row_gives_alpha_zero(device, backend, dtype):
    hs = torch.randn(3, 64).to(dtype).to(device)
    hf = torch.randn(3, 64).to(dtype).to(device)
    hf[1] = 0
    with sk.use_backend(backend):
        replaced = sk.project(hs, hf)
        residual = sk.project(hs, hf, mode="residual", coef=2.0)
    assert torch.equal(replaced[1], torch.zeros_like(replaced[1]))  # alpha = 0, not NaN
    assert torch.equal(residual[1], hs[1])
    assert torch.isfinite(replaced.float()).all()


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_large_batch_many_probes(device, backend):
    g = torch.Generator().manual_seed(5)
    hidden = torch.randn(4096, 2, 16, generator=g).to(device)
    positions = torch.randint(0, 2, (4096,), generator=g).to(device)
    weight = torch.randn(64, 16, generator=g).to(device)
    bias = torch.randn(64, generator=g).to(device)
    with sk.use_backend(backend):
        out = sk.probe(hidden, weight, bias, positions=positions, activation="none")
    assert_matches_reference(out, sk.reference.probe, (hidden, weight, bias), dict(positions=positions, activation="none"))


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_float64_runs_on_a_backend_that_supports_it(device, backend):
    # fp64 goes to the torch backend automatically; forcing a backend without fp64 raises.
    hs = torch.randn(2, 9, dtype=torch.float64, device=device)
    auto = sk.project(hs, hs * 2)
    torch.testing.assert_close(auto, sk.reference.project(hs, hs * 2), rtol=0, atol=0)
    with sk.use_backend(backend):
        if torch.float64 in sk._dispatch._registry[backend].dtypes:
            sk.project(hs, hs)
        else:
            with pytest.raises(sk.BackendUnavailableError, match="float64"):
                sk.project(hs, hs)
