"""Bad input: the right exception type, a message naming the argument, and no kernel launched."""

from __future__ import annotations

import pytest
import torch

import sasa_kernels as sk
from sasa_kernels import _dispatch, _ops


@pytest.fixture(autouse=True)
def no_kernel_may_run(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a backend was selected although the input is invalid")

    monkeypatch.setattr(_ops, "select", forbidden)


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
    if not isinstance(args["coef"], float) or not isinstance(args["mode"], str):
        pytest.skip("the op schema itself rejects non-float coef / non-str mode")
    with pytest.raises((exc, RuntimeError), match=name):
        torch.ops.sasa.project(args["hs"], args["hf"], args["mode"], args["coef"], args["eps"])


RMSNORM_CASES = [
    (dict(norm_weight=torch.ones(D + 1)), ValueError, "norm_weight"),
    (dict(norm_weight=torch.ones(1, D)), ValueError, "norm_weight"),
    (dict(norm_weight=torch.ones(D, dtype=torch.float16)), TypeError, "norm_weight"),
    (dict(norm_weight=torch.ones(D, device="meta")), ValueError, "norm_weight"),
    (dict(norm_weight=None), TypeError, "norm_weight"),
    (dict(norm_eps=0.0), ValueError, "norm_eps"),
    (dict(weight_offset=float("inf")), ValueError, "weight_offset"),
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
