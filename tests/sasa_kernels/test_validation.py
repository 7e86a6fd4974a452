"""Bad input: the right exception type, a message naming the argument, and no kernel launched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sasa_kernels as sk
from sasa_kernels import _dispatch, _ops

FP32_TINY = float(torch.finfo(torch.float32).tiny)  # 1.1754944e-38
FP32_MAX = float(torch.finfo(torch.float32).max)


@pytest.fixture(autouse=True)
def no_kernel_may_run(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a backend was selected although the input is invalid")

    monkeypatch.setattr(_ops, "select", forbidden)
    # The fast CPU entries run before validation: each must decline (None) every invalid call.
    for backend in _dispatch._registry.values():
        for name in ("project_if_plain", "project_rmsnorm_if_plain"):
            real = getattr(backend, name)
            if real is not None:
                def must_decline(*args, _real=real, _name=name, **kwargs):
                    out = _real(*args, **kwargs)
                    if out is not None:
                        raise AssertionError(f"{_name} ran a kernel although the input is invalid")
                    return out

                monkeypatch.setattr(backend, name, must_decline)


D = 8
x = torch.randn(2, D)
w = torch.ones(D)

PROJECT_CASES = [
    # (kwargs overriding the good call, exception type, argument named in the message)
    (dict(hs=[1.0]), TypeError, "hs"),
    (dict(hs=torch.ones(2, D, dtype=torch.int32)), TypeError, "hs"),
    (dict(hs=torch.tensor(1.0), hf=torch.tensor(1.0)), ValueError, "hs"),
    (dict(hf=torch.randn(2, D + 1)), ValueError, "hf"),
    (dict(hf=torch.randn(1, D)), ValueError, "hf"),  # would broadcast: refused
    (dict(hf=torch.randn(2, D, dtype=torch.float64)), TypeError, "hf"),
    (dict(hf=torch.randn(2, D, device="meta")), ValueError, "hf"),
    (dict(hs=torch.randn(2, 0), hf=torch.randn(2, 0)), ValueError, "hs"),
    (dict(mode="project"), ValueError, "mode"),
    (dict(mode=None), ValueError, "mode"),
    (dict(coef="0.5"), TypeError, "coef"),
    (dict(coef=float("nan")), ValueError, "coef"),
    (dict(eps=0.0), ValueError, "eps"),
    (dict(eps=-1e-6), ValueError, "eps"),
    (dict(eps=float("inf")), ValueError, "eps"),
    # 0 or subnormal in float32, where the kernels compute: a zero hf row would give 0/0 = NaN
    (dict(eps=1e-300), ValueError, "eps"),
    (dict(eps=1e-39), ValueError, "eps"),
    (dict(eps=1e39), ValueError, "eps"),  # infinite in float32
    (dict(coef=1e300), ValueError, "coef"),
    (dict(coef=-1e39), ValueError, "coef"),
    (dict(coef=True), TypeError, "coef"),
    (dict(coef=np.bool_(True)), TypeError, "coef"),
    (dict(coef=torch.tensor(0.5)), TypeError, "coef"),
    (dict(eps=np.float64(1e-300)), ValueError, "eps"),
]


def _project_call(hs=x, hf=x, mode="replace", coef=1.0, eps=1e-6):
    return sk.project(hs, hf, mode=mode, coef=coef, eps=eps)


@pytest.mark.parametrize("override,exc,name", PROJECT_CASES)
def test_project_rejects(override, exc, name):
    with pytest.raises(exc, match=rf"^{name}:"):
        _project_call(**override)


@pytest.mark.parametrize("override,exc,name", PROJECT_CASES)
def test_project_op_rejects_the_same(override, exc, name):
    # Calling the registered op directly validates too.
    args = dict(hs=x, hf=x, mode="replace", coef=1.0, eps=1e-6) | override
    if type(args["coef"]) is not float or type(args["eps"]) is not float or not isinstance(args["mode"], str):
        pytest.skip("the op schema itself converts or rejects non-float scalars and a non-str mode")
    with pytest.raises((exc, RuntimeError), match=name):
        torch.ops.sasa.project(args["hs"], args["hf"], args["mode"], args["coef"], args["eps"])


RMSNORM_CASES = [
    (dict(norm_weight=torch.ones(D + 1)), ValueError, "norm_weight"),
    (dict(norm_weight=torch.ones(1, D)), ValueError, "norm_weight"),
    (dict(norm_weight=torch.ones(D, dtype=torch.float16)), TypeError, "norm_weight"),
    (dict(norm_weight=torch.ones(D, device="meta")), ValueError, "norm_weight"),
    (dict(norm_weight=None), TypeError, "norm_weight"),
    (dict(norm_eps=0.0), ValueError, "norm_eps"),
    (dict(norm_eps=1e-300), ValueError, "norm_eps"),
    (dict(weight_offset=float("inf")), ValueError, "weight_offset"),
    (dict(weight_offset=1e300), ValueError, "weight_offset"),
    (dict(weight_offset=False), TypeError, "weight_offset"),
    (dict(mode="nope"), ValueError, "mode"),
    (dict(hf=torch.randn(3, D)), ValueError, "hf"),
]


@pytest.mark.parametrize("override,exc,name", RMSNORM_CASES)
def test_project_rmsnorm_rejects(override, exc, name):
    args = dict(hs=x, hf=x, norm_weight=w) | override
    kwargs = {k: v for k, v in override.items() if k not in ("hs", "hf", "norm_weight")}
    with pytest.raises(exc, match=rf"^{name}:"):
        sk.project_rmsnorm(args["hs"], args["hf"], args["norm_weight"], **kwargs)


H = torch.randn(3, 5, D)
P = torch.tensor([0, 4, 2])
PW = torch.randn(2, D)

PROBE_CASES = [
    (dict(hidden=torch.randn(D)), ValueError, "hidden"),  # 1-D hidden
    (dict(hidden=torch.randn(3, D)), ValueError, "hidden"),  # 2-D with positions
    (dict(positions=None), ValueError, "hidden"),  # 3-D without positions
    (dict(hidden=torch.ones(3, 5, D, dtype=torch.int64)), TypeError, "hidden"),
    (dict(positions=[0, 1, 2]), TypeError, "positions"),
    (dict(positions=P.int()), TypeError, "positions"),
    (dict(positions=P.float()), TypeError, "positions"),
    (dict(positions=P[:2]), ValueError, "positions"),
    (dict(positions=P[None]), ValueError, "positions"),
    (dict(positions=torch.tensor([0, 5, 1])), ValueError, "positions"),  # == T
    (dict(positions=torch.tensor([0, -1, 1])), ValueError, "positions"),
    (dict(positions=torch.zeros(3, dtype=torch.long, device="meta")), ValueError, "positions"),
    (dict(weight=torch.randn(2, D + 1)), ValueError, "weight"),
    (dict(weight=torch.randn(D)), ValueError, "weight"),
    (dict(weight=torch.randn(0, D)), ValueError, "weight"),
    (dict(weight=torch.randn(2, D, dtype=torch.float16)), TypeError, "weight"),
    (dict(weight=torch.randn(2, D, device="meta")), ValueError, "weight"),
    (dict(bias=torch.randn(3)), ValueError, "bias"),
    (dict(bias=torch.randn(2, 1)), ValueError, "bias"),
    (dict(bias=torch.randn(2, dtype=torch.float64)), TypeError, "bias"),
    (dict(bias=torch.randn(2, device="meta")), ValueError, "bias"),
    (dict(norm_weight=torch.ones(D - 1)), ValueError, "norm_weight"),
    (dict(norm_weight=torch.ones(D, dtype=torch.bfloat16)), TypeError, "norm_weight"),
    (dict(norm_eps=-1.0), ValueError, "norm_eps"),
    (dict(norm_eps=1e-45), ValueError, "norm_eps"),
    (dict(weight_offset=-3.5e38), ValueError, "weight_offset"),
    (dict(activation="relu"), ValueError, "activation"),
    (dict(weight_offset="1"), TypeError, "weight_offset"),
    (dict(hidden=torch.randn(3, 0, D)), ValueError, "hidden"),
]


@pytest.mark.parametrize("override,exc,name", PROBE_CASES)
def test_probe_rejects(override, exc, name):
    args = dict(hidden=H, weight=PW, bias=None, positions=P) | override
    hidden, weight, bias = args.pop("hidden"), args.pop("weight"), args.pop("bias")
    with pytest.raises(exc, match=rf"^{name}:"):
        sk.probe(hidden, weight, bias, **args)


def test_messages_say_what_was_expected():
    with pytest.raises(ValueError) as info:
        sk.project(x, torch.randn(2, D + 1))
    assert "expected the shape of hs [2, 8]" in str(info.value) and "[2, 9]" in str(info.value)
    with pytest.raises(ValueError) as info:
        sk.probe(H, PW, positions=torch.tensor([0, 9, 1]))
    assert "[0, 5)" in str(info.value) and "9" in str(info.value)


def test_epsilon_bound_is_named():
    with pytest.raises(ValueError) as info:
        sk.project(x, x, eps=1e-300)
    assert str(info.value).startswith("eps:") and "1.1754944e-38" in str(info.value) and "1e-300" in str(info.value)
    with pytest.raises(ValueError, match=r"^coef: .*3\.4028235e\+38"):
        sk.project(x, x, mode="residual", coef=1e300)


def test_weight_dtype_message_names_each_allowed_dtype_once():
    with pytest.raises(TypeError) as info:
        sk.probe(H, PW.half(), positions=P)
    message = str(info.value)
    assert message.startswith("weight: expected dtype torch.float32 (") and "or torch.float32" not in message
    with pytest.raises(TypeError, match=r"^weight: expected dtype torch.float32 or torch.bfloat16 \("):
        sk.probe(H.bfloat16(), PW.half(), positions=P)


class TestAccepted:
    """Values at the edges of what is allowed run, and NumPy scalars work like floats."""

    @pytest.fixture(autouse=True)
    def no_kernel_may_run(self):  # overrides the module's fixture: these calls must run
        yield

    def test_smallest_normal_eps_keeps_alpha_zero_for_a_zero_row(self):
        hf = x.clone()
        hf[1] = 0
        for backend in sk.backends("cpu"):
            with sk.use_backend(backend):
                out = sk.project(x, hf, eps=FP32_TINY)
                _, normed = sk.project_rmsnorm(x, hf, w, eps=FP32_TINY, norm_eps=FP32_TINY)
            assert torch.equal(out[1], torch.zeros(D)), backend  # alpha = 0, not NaN
            assert torch.isfinite(out).all() and torch.isfinite(normed).all(), backend

    def test_fp32_range_edges(self):
        sk.project(x, x, mode="residual", coef=FP32_MAX, eps=FP32_MAX)
        sk.project_rmsnorm(x, x, w, weight_offset=-FP32_MAX)

    @pytest.mark.parametrize("make", [np.float32, np.float64, np.int64, int], ids=lambda t: t.__name__)
    def test_numpy_and_int_scalars(self, make):
        coef, eps, offset = make(2), make(1), make(1)
        expected = sk.project(x, x * 2, mode="residual", coef=2.0, eps=1.0)
        torch.testing.assert_close(sk.project(x, x * 2, mode="residual", coef=coef, eps=eps), expected, rtol=0, atol=0)
        h, normed = sk.project_rmsnorm(x, x * 2, w, mode="residual", coef=coef, eps=eps, norm_eps=eps, weight_offset=offset)
        torch.testing.assert_close(h, expected, rtol=0, atol=0)
        scores = sk.probe(H, PW, positions=P, norm_weight=w, norm_eps=eps, weight_offset=offset)
        torch.testing.assert_close(scores, sk.probe(H, PW, positions=P, norm_weight=w, norm_eps=1.0, weight_offset=1.0))
