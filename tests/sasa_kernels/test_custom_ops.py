"""The torch.library contract: opcheck on every backend, torch.compile(fullgraph=True) per op,
static and dynamic shapes."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

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


def _dynamic_step(hs, hf, w, hidden, pw, pb, positions, coef):
    # As _guard_step, with the coefficient passed in (a Python float argument of the compiled code).
    h, normed = sk.project_rmsnorm(hs, hf, w, mode="residual", coef=coef)
    projected = sk.project(hs, hf, mode="interpolate", coef=coef)
    scores = sk.probe(hidden, pw, pb, positions=positions, norm_weight=w)
    return h + projected, normed, scores


def _dynamic_inputs(device, rows, seq, batch, d=40):
    g = torch.Generator().manual_seed(rows * 100 + batch)
    hs, hf = (torch.randn(2, rows, d, generator=g).to(device) for _ in range(2))
    w = torch.rand(d, generator=g).to(device)
    hidden = torch.randn(batch, seq, d, generator=g).to(device)
    pw, pb = torch.randn(3, d, generator=g).to(device), torch.randn(3, generator=g).to(device)
    positions = torch.randint(0, seq, (batch,), generator=g).to(device)
    return hs, hf, w, hidden, pw, pb, positions


# (rows, T, B): never 0 or 1 (dynamo specializes those), and in the first shape all sizes distinct
# (2 leading rows, d = 40, C = 3 probes too), so duck sizing does not tie two of them together.
SHAPES = ((6, 4, 5), (9, 7, 2), (3, 6, 8))


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_compile_dynamic_true_traces_once_for_every_shape(device, backend):
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(_dynamic_step, fullgraph=True, dynamic=True, backend=counter)
    compiles = []
    with sk.use_backend(backend):
        for rows, seq, batch in SHAPES:
            inputs = _dynamic_inputs(device, rows, seq, batch)
            for a, e in zip(compiled(*inputs, 0.5), _dynamic_step(*inputs, 0.5)):
                torch.testing.assert_close(a, e)
            compiles.append(counter.frame_count)
    # Symbolic shapes: nothing is compiled after the first call. (The first call may compile
    # twice: dynamo restarts its analysis once to specialize the float argument.)
    assert compiles[0] >= 1 and compiles[1:] == [compiles[0]] * (len(SHAPES) - 1), compiles


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_compile_mark_dynamic(device, backend):
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(_dynamic_step, fullgraph=True, backend=counter)
    compiles = []
    with sk.use_backend(backend):
        for rows, seq, batch in SHAPES:
            inputs = _dynamic_inputs(device, rows, seq, batch)
            hs, hf, w, hidden, pw, pb, positions = inputs
            for t in (hs, hf):
                torch._dynamo.mark_dynamic(t, 1)
            torch._dynamo.mark_dynamic(hidden, 0)
            torch._dynamo.mark_dynamic(hidden, 1)
            torch._dynamo.mark_dynamic(positions, 0)
            for a, e in zip(compiled(*inputs, 0.5), _dynamic_step(*inputs, 0.5)):
                torch.testing.assert_close(a, e)
            compiles.append(counter.frame_count)
    assert compiles[0] >= 1 and compiles[1:] == [compiles[0]] * (len(SHAPES) - 1), compiles


def test_compile_dynamic_still_validates():
    torch._dynamo.reset()
    compiled = torch.compile(_dynamic_step, fullgraph=True, dynamic=True)
    hs, hf, w, hidden, pw, pb, positions = _dynamic_inputs("cpu", 3, 4, 3)
    with pytest.raises(Exception, match="hf: expected the shape of hs"):
        compiled(hs, hf[:, :2], w, hidden, pw, pb, positions, 0.5)
    # A scalar argument is specialized when traced, so a bad value is refused at trace time too.
    with pytest.raises(Exception, match="coef: expected a finite value"):
        compiled(hs, hf, w, hidden, pw, pb, positions, float("nan"))


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
