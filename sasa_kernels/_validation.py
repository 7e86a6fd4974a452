"""Argument checks shared by the public functions, the op implementations and the fake kernels.

Every check runs before any kernel launches and raises ``TypeError`` (wrong kind of thing) or
``ValueError`` (right kind, wrong value) with a message that starts with the argument's name.
Only :func:`check_positions_values` reads tensor data; it is skipped while tracing or capturing,
where data is unavailable or a host sync is forbidden (the kernels then write NaN for a bad
position, which a guard counts as flagged).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .reference import ACTIVATIONS, MODES

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _tensor(name: str, x: object) -> Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a floating dtype (float16, bfloat16, float32, float64), got {x.dtype}")
    return x


def _same_device(name: str, x: Tensor, ref_name: str, ref: Tensor) -> None:
    if x.device != ref.device:
        raise ValueError(f"{name}: expected device {ref.device} (the device of {ref_name}), got {x.device}")


def _same_dtype(name: str, x: Tensor, ref_name: str, ref: Tensor) -> None:
    if x.dtype != ref.dtype:
        raise TypeError(f"{name}: expected dtype {ref.dtype} (the dtype of {ref_name}), got {x.dtype}")


def _positive_finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__}")
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name}: expected a finite value > 0, got {value}")
    return value


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite value, got {value}")
    return value


def check_mode(mode: object) -> str:
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    return mode


def check_activation(activation: object) -> str:
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    return activation


def _norm_weight(norm_weight: object, ref_name: str, ref: Tensor, d: int) -> None:
    w = _tensor("norm_weight", norm_weight)
    if w.dim() != 1 or w.shape[0] != d:
        raise ValueError(f"norm_weight: expected shape [{d}] (the last dimension of {ref_name}), got {list(w.shape)}")
    _same_dtype("norm_weight", w, ref_name, ref)
    _same_device("norm_weight", w, ref_name, ref)


def check_project(hs: object, hf: object, mode: object, coef: object, eps: object) -> None:
    hs = _tensor("hs", hs)
    hf = _tensor("hf", hf)
    if hs.dim() < 1:
        raise ValueError("hs: expected at least 1 dimension [..., d], got a 0-d tensor")
    if hf.shape != hs.shape:
        raise ValueError(f"hf: expected the shape of hs {list(hs.shape)}, got {list(hf.shape)} (no broadcasting)")
    if hs.shape[-1] < 1:
        raise ValueError("hs: expected the last dimension d >= 1, got 0")
    _same_dtype("hf", hf, "hs", hs)
    _same_device("hf", hf, "hs", hs)
    check_mode(mode)
    _finite("coef", coef)
    _positive_finite("eps", eps)


def check_project_rmsnorm(
    hs: object, hf: object, norm_weight: object, mode: object, coef: object, eps: object,
    norm_eps: object, weight_offset: object,
) -> None:
    check_project(hs, hf, mode, coef, eps)
    _norm_weight(norm_weight, "hs", hs, hs.shape[-1])  # type: ignore[union-attr]
    _positive_finite("norm_eps", norm_eps)
    _finite("weight_offset", weight_offset)


def check_probe(
    hidden: object, weight: object, bias: object, positions: object, norm_weight: object,
    norm_eps: object, weight_offset: object, activation: object,
) -> None:
    hidden = _tensor("hidden", hidden)
    if positions is None:
        if hidden.dim() != 2:
            raise ValueError(
                f"hidden: expected [B, d] when positions is None (or [B, T, d] with positions), "
                f"got {hidden.dim()}-d shape {list(hidden.shape)}"
            )
    else:
        if hidden.dim() != 3:
            raise ValueError(f"hidden: expected [B, T, d] when positions is given, got shape {list(hidden.shape)}")
        if not isinstance(positions, torch.Tensor):
            raise TypeError(f"positions: expected a torch.Tensor of dtype int64, got {type(positions).__name__}")
        if positions.dtype != torch.int64:
            raise TypeError(f"positions: expected dtype torch.int64, got {positions.dtype}")
        if positions.dim() != 1 or positions.shape[0] != hidden.shape[0]:
            raise ValueError(
                f"positions: expected shape [{hidden.shape[0]}] (one index per row of hidden), got {list(positions.shape)}"
            )
        if positions.device != hidden.device:
            raise ValueError(f"positions: expected device {hidden.device} (the device of hidden), got {positions.device}")
        if hidden.shape[1] == 0 and hidden.shape[0] > 0:
            raise ValueError("hidden: expected T >= 1 so positions can index it, got T = 0")
    d = hidden.shape[-1]
    if d < 1:
        raise ValueError("hidden: expected the last dimension d >= 1, got 0")
    weight = _tensor("weight", weight)
    if weight.dim() != 2 or weight.shape[1] != d:
        raise ValueError(f"weight: expected shape [C, {d}] (C probes over d = hidden's last dimension), got {list(weight.shape)}")
    if weight.shape[0] < 1:
        raise ValueError("weight: expected at least one probe (C >= 1), got C = 0")
    if weight.dtype not in (torch.float32, hidden.dtype):
        raise TypeError(f"weight: expected dtype torch.float32 or {hidden.dtype} (the dtype of hidden), got {weight.dtype}")
    _same_device("weight", weight, "hidden", hidden)
    if bias is not None:
        bias = _tensor("bias", bias)
        if bias.dim() != 1 or bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias: expected shape [{weight.shape[0]}] (one per probe in weight), got {list(bias.shape)}")
        if bias.dtype != weight.dtype:
            raise TypeError(f"bias: expected dtype {weight.dtype} (the dtype of weight), got {bias.dtype}")
        _same_device("bias", bias, "hidden", hidden)
    if norm_weight is not None:
        _norm_weight(norm_weight, "hidden", hidden, d)
    _positive_finite("norm_eps", norm_eps)
    _finite("weight_offset", weight_offset)
    check_activation(activation)


def _data_unavailable(t: Tensor) -> bool:
    if torch.compiler.is_compiling():
        return True
    if t.device.type == "meta" or isinstance(t, torch._subclasses.fake_tensor.FakeTensor):
        return True
    return t.device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def check_positions_values(positions: Tensor | None, seq_len: int) -> None:
    """Raise if any position is outside ``[0, seq_len)``. Reads data (one host sync on GPU)."""
    if positions is None or positions.numel() == 0 or _data_unavailable(positions):
        return
    lo, hi = int(positions.min()), int(positions.max())
    if lo < 0 or hi >= seq_len:
        bad = lo if lo < 0 else hi
        raise ValueError(f"positions: expected every index in [0, {seq_len}) (hidden's T), got {bad}")
