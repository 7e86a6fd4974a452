"""The fast CPU entries of the public functions (sasa_kernels._api, csrc/entry.h *_if_plain).

They run before validation, so the properties that matter are: they run plain CPU calls and give
the validated path's bits; they decline (``None``) everything else, above all anything the
validator would refuse; forcing a backend and dispatch modes still work; the output poisoning
of the tests reaches them.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import sasa_kernels as sk
from sasa_kernels import _dispatch
from sasa_kernels._validation import check_project, check_project_rmsnorm

cpp = _dispatch._registry.get("cpp")
pytestmark = pytest.mark.skipif(
    cpp is None or cpp.project_if_plain is None, reason="the cpp backend (the compiled extension) is not built"
)

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class Recorder(TorchDispatchMode):
    """Records the name of every op that reaches the dispatcher's Python key."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def _rand(shape, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).to(dtype)


@pytest.fixture
def counted(monkeypatch):
    """Count the cpp backend's calls: fast entries (``fast``) and the validated path (``slow``)."""
    calls = {"fast": 0, "slow": 0}
    for name, kind in (("project_if_plain", "fast"), ("project_rmsnorm_if_plain", "fast"),
                       ("project", "slow"), ("project_rmsnorm", "slow")):
        real = getattr(cpp, name)

        def spy(*args, _real=real, _kind=kind, **kwargs):
            out = _real(*args, **kwargs)
            if _kind == "slow" or out is not None:
                calls[_kind] += 1
            return out

        monkeypatch.setattr(cpp, name, spy)
    return calls


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(7,), (3, 1), (2, 5), (2, 3, 127), (0, 4)], ids=str)
def test_plain_calls_take_the_fast_entry_and_match_the_validated_path(counted, shape, dtype):
    hs, hf, w = _rand(shape, dtype, 0), _rand(shape, dtype, 1), _rand(shape[-1:], dtype, 2)
    out = sk.project(hs, hf, mode="residual", coef=0.25)
    h, normed = sk.project_rmsnorm(hs, hf, w, mode="interpolate", coef=0.5, weight_offset=1.0)
    assert counted == {"fast": 2, "slow": 0}
    # The validated path through the same backend: the same kernel, so the same bits.
    assert torch.equal(out, cpp.project(hs, hf, 1.0, 0.25, 1e-6))
    ref_h, ref_normed = cpp.project_rmsnorm(hs, hf, w, 0.5, 0.5, 1e-6, 1e-6, 1.0)
    assert torch.equal(h, ref_h) and torch.equal(normed, ref_normed)
    assert out.shape == shape and out.dtype == dtype and out.is_contiguous()


def test_strided_rows_take_the_fast_entry(counted):
    base = _rand((6, 16), seed=3)
    hs, hf = base[::2, 1:9], _rand((8, 3), seed=4).t()  # row-strided, and a transposed (copied) one
    assert not hs.is_contiguous() and hf.stride(-1) != 1
    out = sk.project(hs, hf)
    assert counted["fast"] == 1
    assert torch.equal(out, cpp.project(hs.contiguous(), hf.contiguous(), 0.0, 1.0, 1e-6))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: (_rand((2, 8)).double(), _rand((2, 8), seed=1).double()), id="float64"),
        pytest.param(lambda: (_rand((2, 8)).requires_grad_(), _rand((2, 8), seed=1)), id="requires-grad"),
        pytest.param(lambda: (_rand((2, 8)), _rand((2, 8), seed=1).requires_grad_()), id="hf-requires-grad"),
        pytest.param(lambda: (torch.nn.Parameter(_rand((2, 8))), _rand((2, 8), seed=1)), id="parameter"),
    ],
)
def test_calls_that_need_more_than_the_kernel_are_declined(counted, make):
    hs, hf = make()
    out = sk.project(hs, hf)
    assert counted["fast"] == 0
    expected = sk.reference.project(hs.detach(), hf.detach())
    torch.testing.assert_close(out.detach(), expected)
    if hs.requires_grad or hf.requires_grad:
        assert out.requires_grad  # through torch.ops.sasa.project, whose backward raises
        with pytest.raises(RuntimeError, match="inference-only"):
            out.sum().backward()


def test_no_grad_lets_inputs_that_require_grad_take_the_fast_entry(counted):
    hs = _rand((2, 8)).requires_grad_()
    with torch.no_grad():
        out = sk.project(hs, _rand((2, 8), seed=1))
    assert counted["fast"] == 1 and not out.requires_grad


def test_inference_mode_takes_the_fast_entry(counted):
    hs, hf = _rand((2, 8)), _rand((2, 8), seed=1)
    with torch.inference_mode():
        inner = _rand((2, 8), seed=2)
        sk.project(hs, hf)
        sk.project(inner, hf)
    assert counted["fast"] == 2


def test_autocast_and_dispatch_modes_go_through_the_dispatcher(counted):
    hs, hf = _rand((2, 8)), _rand((2, 8), seed=1)
    expected = sk.project(hs, hf)
    counted["fast"] = 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cpp.project_if_plain(hs, hf, 0.0, 1.0, 1e-6) is None
        assert torch.equal(sk.project(hs, hf), expected)

    with Recorder() as mode:
        assert torch.equal(sk.project(hs, hf), expected)
    assert counted["fast"] == 0
    assert "sasa._compiled_project.default" in mode.ops  # the mode still sees the compiled op


@pytest.mark.parametrize("op", ["project_rmsnorm", "probe"])
def test_dispatch_modes_still_see_every_compiled_op(op):
    """The entries go straight to the CPU kernel only when nothing is layered on the dispatch."""
    hs, hf, w = _rand((2, 3, 8)), _rand((2, 3, 8), seed=1), _rand((8,), seed=2)
    if op == "project_rmsnorm":
        call = lambda: sk.project_rmsnorm(hs, hf, w)  # noqa: E731
    else:
        weight, positions = _rand((4, 8), seed=3), torch.tensor([2, 0])
        call = lambda: sk.probe(hs, weight, positions=positions, norm_weight=w)  # noqa: E731
    expected = call()

    with Recorder() as mode:
        got = call()
    for a, b in zip(got if isinstance(got, tuple) else (got,), expected if isinstance(expected, tuple) else (expected,)):
        assert torch.equal(a, b)
    assert f"sasa._compiled_{op}.default" in mode.ops


def test_forcing_another_backend_skips_the_fast_entry(counted, monkeypatch):
    hs, hf = _rand((2, 8)), _rand((2, 8), seed=1)
    with sk.use_backend("torch"):
        sk.project(hs, hf)
    monkeypatch.setenv("SASA_BACKEND", "torch")
    sk.project(hs, hf)
    assert counted == {"fast": 0, "slow": 0}
    with sk.use_backend("cpp"):  # forcing cpp itself keeps it
        sk.project(hs, hf)
    assert counted == {"fast": 1, "slow": 0}


def test_registering_a_backend_recomputes_the_fast_choice(monkeypatch):
    assert _dispatch.fast_cpu_backend() is cpp

    class PlainCpp(type(cpp)):
        project_if_plain = None
        project_rmsnorm_if_plain = None

        def __init__(self):
            pass

    monkeypatch.setitem(_dispatch._registry, "cpp", cpp)  # restored afterwards
    try:
        _dispatch.register_backend(PlainCpp())
        assert _dispatch.fast_cpu_backend() is None  # select() now picks a backend without one
    finally:
        _dispatch.register_backend(cpp)
    assert _dispatch.fast_cpu_backend() is cpp


def _tensor_variants():
    d = 6
    shapes = [(2, d), (3, d), (2, d + 1), (d,), (), (2, 0), (1, d)]
    dtypes = [torch.float32, torch.float16, torch.float64, torch.int32]
    out = []
    for shape, dtype in itertools.product(shapes, dtypes):
        t = torch.ones(shape, dtype=torch.float32).to(dtype) if dtype != torch.int32 else torch.ones(shape, dtype=dtype)
        out.append(t)
    out.append(torch.ones(2, d, device="meta"))
    return out


def test_the_fast_entries_accept_nothing_the_validator_refuses():
    """Every combination the C++ check accepts is one the Python validator accepts too."""
    variants = _tensor_variants()
    weights = [torch.ones(6), torch.ones(7), torch.ones(6, dtype=torch.float16), torch.ones(1, 6),
               torch.ones(6, device="meta"), torch.ones(6, dtype=torch.float64)]
    accepted = 0
    for hs, hf in itertools.product(variants, repeat=2):
        if cpp.project_if_plain(hs, hf, 0.0, 1.0, 1e-6) is not None:
            accepted += 1
            check_project(hs, hf, "replace", 1.0, 1e-6)  # must not raise
        for w in weights:
            if cpp.project_rmsnorm_if_plain(hs, hf, w, 0.0, 1.0, 1e-6, 1e-6, 0.0) is not None:
                check_project_rmsnorm(hs, hf, w, "replace", 1.0, 1e-6, 1e-6, 0.0)
    assert accepted >= 8  # the plain pairs were accepted (the property is not vacuous)


@pytest.mark.parametrize("mode, coef, eps", [("replace", 1, 1e-6), ("residual", 0.5, 0.0), ("sideways", 1.0, 1e-6)])
def test_scalars_the_fast_path_does_not_know_are_left_to_the_validator(counted, mode, coef, eps):
    hs, hf = _rand((2, 8)), _rand((2, 8), seed=1)
    if eps == 0.0 or mode == "sideways":
        with pytest.raises(ValueError, match="eps" if eps == 0.0 else "mode"):
            sk.project(hs, hf, mode=mode, coef=coef, eps=eps)
    else:
        out = sk.project(hs, hf, mode=mode, coef=coef, eps=eps)  # an int coef: validated, then run
        assert torch.equal(out, cpp.project(hs, hf, 0.0, 1.0, eps))
    assert counted["fast"] == 0


def test_poisoning_reaches_the_fast_entries(monkeypatch):
    from tests.numerics import poison_outputs

    hs, hf = _rand((2, 8)), _rand((2, 8), seed=1)
    given = []
    real = cpp.project_if_plain

    def record(*args, **kwargs):
        given.append(kwargs.get("out"))
        return real(*args, **kwargs)

    monkeypatch.setattr(cpp, "project_if_plain", record)
    poison_outputs(monkeypatch)
    sk.project(hs, hf)
    assert len(given) == 1 and given[0] is not None  # a NaN-filled buffer was handed to the kernel
