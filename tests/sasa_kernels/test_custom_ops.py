"""The torch.library contract: opcheck on every backend, torch.compile(fullgraph=True) per op."""

from __future__ import annotations

import pytest
import torch

import sasa_kernels as sk
from tests.numerics import backend_params

BACKENDS = backend_params()


def _samples(device, dtype):
    g = torch.Generator().manual_seed(0)
    hs = torch.randn(2, 3, 40, generator=g).to(dtype).to(device)
    hf = torch.randn(2, 3, 40, generator=g).to(dtype).to(device)
    w = torch.rand(40, generator=g).to(dtype).to(device)
    hidden = torch.randn(3, 4, 40, generator=g).to(dtype).to(device)
    pw = torch.randn(2, 40, generator=g).to(device)
    pb = torch.randn(2, generator=g).to(device)
    positions = torch.tensor([3, 0, 1], device=device)
    return hs, hf, w, hidden, pw, pb, positions


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_opcheck(device, backend, dtype):
    hs, hf, w, hidden, pw, pb, positions = _samples(device, dtype)
    with sk.use_backend(backend):
        torch.library.opcheck(torch.ops.sasa.project.default, (hs, hf, "residual", 0.5, 1e-6))
        torch.library.opcheck(
            torch.ops.sasa.project_rmsnorm.default, (hs, hf, w, "interpolate", 0.3, 1e-6, 1e-6, 1.0)
        )
        torch.library.opcheck(
            torch.ops.sasa.probe.default, (hidden, pw, pb, positions, w, 1e-6, 0.0, "sigmoid")
        )
        torch.library.opcheck(
            torch.ops.sasa.probe.default, (hidden[:, 0], pw, None, None, None, 1e-6, 0.0, "none")
        )


def _guard_step(hs, hf, w, hidden, pw, pb, positions):
    # The shape of the SASA hot path: project + fused norm, then probe, plus surrounding math.
    h, normed = sk.project_rmsnorm(hs, hf, w, mode="replace")
    projected = sk.project(hs, hf, mode="residual", coef=0.5)
    scores = sk.probe(hidden + 1, pw, pb, positions=positions, norm_weight=w)
    return h * 2, normed + projected, scores.sum(-1)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_compile_fullgraph(device, backend):
    torch._dynamo.reset()
    inputs = _samples(device, torch.float32)
    with sk.use_backend(backend):
        expected = _guard_step(*inputs)
        compiled = torch.compile(_guard_step, fullgraph=True)
        actual = compiled(*inputs)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)


def test_compile_validates_at_trace_time():
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, b: sk.project(a, b), fullgraph=True)
    with pytest.raises(Exception, match="hf: expected the shape of hs"):
        compiled(torch.randn(2, 4), torch.randn(2, 5))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ("triton", "cuda", "torch"))
def test_cuda_graph_capture_and_replay(backend):
    if backend not in sk.backends("cuda"):
        pytest.skip(f"{backend} not usable on CUDA here")
    hs, hf, w, hidden, pw, pb, positions = _samples("cuda", torch.bfloat16)
    with sk.use_backend(backend):
        expected = _guard_step(hs, hf, w, hidden, pw, pb, positions)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside capture (Triton compiles, allocator settles)
            _guard_step(hs, hf, w, hidden, pw, pb, positions)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = _guard_step(hs, hf, w, hidden, pw, pb, positions)
        hs.mul_(-1)  # new inputs in the same buffers: replay must see them
        expected = _guard_step(hs, hf, w, hidden, pw, pb, positions)
        graph.replay()
        torch.cuda.synchronize()
    for a, e in zip(captured, expected):
        torch.testing.assert_close(a, e)


def test_inference_only_backward_raises_instead_of_a_silent_zero_gradient():
    x = torch.randn(2, 8, requires_grad=True)
    w = torch.ones(8)
    outputs = [
        sk.project(x, x.detach()),
        sk.project_rmsnorm(x, x.detach(), w)[1],
        sk.probe(x, torch.randn(3, 8)),
    ]
    for out in outputs:
        assert out.requires_grad
        with pytest.raises(RuntimeError, match="inference-only and has no gradient"):
            out.sum().backward()
    with torch.no_grad():
        assert not sk.project(x, x).requires_grad
    with torch.inference_mode():
        assert not sk.project(x, x).requires_grad
