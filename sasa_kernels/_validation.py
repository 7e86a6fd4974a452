"""Argument checks shared by the op bodies and the fake kernels (one validator per op).

Every check runs before any kernel launches and raises ``TypeError`` (wrong kind of thing) or
``ValueError`` (right kind, wrong value) with a message that starts with the argument's name.
The checks are straight-line code on the common path (a call costs well under a microsecond);
the messages are built only when something is wrong.

Scalars: any real number (``float``, ``int``, NumPy scalars: :class:`numbers.Real`) except
``bool``. The kernels compute in float32 (their scalars too), so ``coef`` and ``weight_offset``
must lie in float32's finite range and ``eps`` / ``norm_eps`` must be at least the smallest
normal float32 (about 1.18e-38): a smaller epsilon is 0 or subnormal in float32, and an all-zero
row then divides 0 by 0. Under ``torch.compile`` a scalar may be symbolic (``torch.SymFloat``);
its value is checked when the op runs.

Only :func:`check_positions_values` reads tensor data; it is skipped while tracing or capturing,
where data is unavailable or a host sync is forbidden (the kernels then write NaN for a bad
position, which a guard counts as flagged).
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from .reference import ACTIVATIONS, MODES

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_FLOAT_SET = frozenset(FLOAT_DTYPES)
#: The smallest positive normal float32: the least ``eps`` / ``norm_eps`` accepted.
FP32_TINY = float(torch.finfo(torch.float32).tiny)
#: The largest finite float32: the bound on ``|coef|``, ``|weight_offset|`` and ``eps``.
FP32_MAX = float(torch.finfo(torch.float32).max)

_SYMBOLIC = (torch.SymFloat, torch.SymInt)


# --- scalars ---------------------------------------------------------------------------------------


def _real(name: str, value: object) -> float | None:
    """``value`` as a float; ``None`` for a symbolic value (checked when the op runs)."""
    if isinstance(value, _SYMBOLIC):
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number (float, int or a NumPy scalar), got {type(value).__name__}")
    return float(value)


def check_fp32_finite(name: str, value: object) -> None:
    """``value`` is a real number within float32's finite range."""
    if type(value) is float and -FP32_MAX <= value <= FP32_MAX:
        return
    v = _real(name, value)
    if v is not None and not -FP32_MAX <= v <= FP32_MAX:
        raise ValueError(f"{name}: expected a finite value within float32's range (|{name}| <= {FP32_MAX:.8g}), got {v!r}")


def check_epsilon(name: str, value: object) -> None:
    """``value`` is a positive normal float32 number."""
    if type(value) is float and FP32_TINY <= value <= FP32_MAX:
        return
    v = _real(name, value)
    if v is not None and not FP32_TINY <= v <= FP32_MAX:
        raise ValueError(
            f"{name}: expected a finite value >= {FP32_TINY:.8g} (the smallest normal float32; a smaller "
            f"{name} is 0 or subnormal in float32 and an all-zero row would give NaN), got {v!r}"
        )


def check_mode(mode: object) -> None:
    if type(mode) is not str or mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")


def check_activation(activation: object) -> None:
    if type(activation) is not str or activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")


# --- tensors ---------------------------------------------------------------------------------------


def _not_a_tensor(name: str, x: object) -> TypeError:
    return TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")


def _not_float(name: str, dtype: torch.dtype) -> TypeError:
    return TypeError(f"{name}: expected a floating dtype (float16, bfloat16, float32, float64), got {dtype}")


def _float_tensor(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise _not_a_tensor(name, x)
    if x.dtype not in FLOAT_DTYPES:
        raise _not_float(name, x.dtype)
    return x


def _same_device(name: str, x: Tensor, ref_name: str, ref: Tensor) -> None:
    if x.device != ref.device:
        raise ValueError(f"{name}: expected device {ref.device} (the device of {ref_name}), got {x.device}")


def _same_dtype(name: str, x: Tensor, ref_name: str, ref: Tensor) -> None:
    if x.dtype != ref.dtype:
        raise TypeError(f"{name}: expected dtype {ref.dtype} (the dtype of {ref_name}), got {x.dtype}")


def _check_norm_weight(norm_weight: object, ref_name: str, ref: Tensor, d: int) -> None:
    if type(norm_weight) is Tensor and norm_weight.dtype == ref.dtype and norm_weight.shape == (d,) and (
        norm_weight.device == ref.device
    ):
        return
    w = _float_tensor("norm_weight", norm_weight)
    if w.dim() != 1 or w.shape[0] != d:
        raise ValueError(f"norm_weight: expected shape [{d}] (the last dimension of {ref_name}), got {list(w.shape)}")
    _same_dtype("norm_weight", w, ref_name, ref)
    _same_device("norm_weight", w, ref_name, ref)


# --- the ops ---------------------------------------------------------------------------------------


def plain_project_scalars(mode: object, coef: object, eps: object) -> bool:
    """Whether :func:`check_project` accepts these scalars as they are (the common case, quickly).

    ``False`` decides nothing: the full check then accepts or raises.
    """
    return (
        type(mode) is str and mode in MODES and type(coef) is float and -FP32_MAX <= coef <= FP32_MAX
        and type(eps) is float and FP32_TINY <= eps <= FP32_MAX
    )


def plain_project_rmsnorm_scalars(
    mode: object, coef: object, eps: object, norm_eps: object, weight_offset: object,
) -> bool:
    """:func:`plain_project_scalars` for :func:`check_project_rmsnorm`."""
    return (
        plain_project_scalars(mode, coef, eps)
        and type(norm_eps) is float and FP32_TINY <= norm_eps <= FP32_MAX
        and type(weight_offset) is float and -FP32_MAX <= weight_offset <= FP32_MAX
    )


def check_project(hs: object, hf: object, mode: object, coef: object, eps: object) -> None:
    # The common case in straight-line code (about 0.5 us); anything unusual falls through to
    # the checks below, which raise the precise error or accept it (NumPy scalars, ...).
    if type(hs) is Tensor and type(hf) is Tensor:
        shape = hs.shape
        if (
            shape and shape[-1] and shape == hf.shape and hs.dtype in _FLOAT_SET and hf.dtype == hs.dtype
            and hf.device == hs.device and plain_project_scalars(mode, coef, eps)
        ):
            return
    hs = _float_tensor("hs", hs)
    if not isinstance(hf, Tensor):
        raise _not_a_tensor("hf", hf)
    shape = hs.shape
    if len(shape) < 1:
        raise ValueError("hs: expected at least 1 dimension [..., d], got a 0-d tensor")
    if hf.shape != shape:
        raise ValueError(f"hf: expected the shape of hs {list(shape)}, got {list(hf.shape)} (no broadcasting)")
    if shape[-1] < 1:
        raise ValueError("hs: expected the last dimension d >= 1, got 0")
    if hf.dtype != hs.dtype:
        if hf.dtype not in FLOAT_DTYPES:
            raise _not_float("hf", hf.dtype)
        _same_dtype("hf", hf, "hs", hs)
    _same_device("hf", hf, "hs", hs)
    check_mode(mode)
    check_fp32_finite("coef", coef)
    check_epsilon("eps", eps)


def check_project_rmsnorm(
    hs: object, hf: object, norm_weight: object, mode: object, coef: object, eps: object,
    norm_eps: object, weight_offset: object,
) -> None:
    check_project(hs, hf, mode, coef, eps)
    _check_norm_weight(norm_weight, "hs", hs, hs.shape[-1])  # type: ignore[union-attr]
    check_epsilon("norm_eps", norm_eps)
    check_fp32_finite("weight_offset", weight_offset)


def _check_positions(positions: object, hidden: Tensor) -> None:
    if hidden.dim() != 3:
        raise ValueError(f"hidden: expected [B, T, d] when positions is given, got shape {list(hidden.shape)}")
    if not isinstance(positions, Tensor):
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


def _check_probe_weight(weight: object, hidden: Tensor, d: int) -> Tensor:
    weight = _float_tensor("weight", weight)
    if weight.dim() != 2 or weight.shape[1] != d:
        raise ValueError(f"weight: expected shape [C, {d}] (C probes over d = hidden's last dimension), got {list(weight.shape)}")
    if weight.shape[0] < 1:
        raise ValueError("weight: expected at least one probe (C >= 1), got C = 0")
    if weight.dtype != torch.float32 and weight.dtype != hidden.dtype:
        allowed = "torch.float32" if hidden.dtype == torch.float32 else f"torch.float32 or {hidden.dtype}"
        raise TypeError(f"weight: expected dtype {allowed} (the dtype of hidden, or float32), got {weight.dtype}")
    _same_device("weight", weight, "hidden", hidden)
    return weight


def _plain_probe_call(
    hidden: object, weight: object, bias: object, positions: object, norm_weight: object,
    norm_eps: object, weight_offset: object, activation: object,
) -> bool:
    """The common, valid probe call, recognized in straight-line code (False: check in detail)."""
    if type(hidden) is not Tensor or type(weight) is not Tensor or hidden.dtype not in _FLOAT_SET:
        return False
    shape, device = hidden.shape, hidden.device
    if positions is None:
        if len(shape) != 2:
            return False
    elif not (
        type(positions) is Tensor and len(shape) == 3 and shape[1] and positions.dtype == torch.int64
        and positions.shape == shape[:1] and positions.device == device
    ):
        return False
    wshape = weight.shape
    if not (
        shape[-1] and len(wshape) == 2 and wshape[0] and wshape[1] == shape[-1] and weight.device == device
        and (weight.dtype == torch.float32 or weight.dtype == hidden.dtype)
    ):
        return False
    if bias is not None and not (
        type(bias) is Tensor and bias.shape == wshape[:1] and bias.dtype == weight.dtype and bias.device == device
    ):
        return False
    if norm_weight is not None and not (
        type(norm_weight) is Tensor and norm_weight.shape == shape[-1:] and norm_weight.dtype == hidden.dtype
        and norm_weight.device == device
    ):
        return False
    return (
        type(norm_eps) is float and FP32_TINY <= norm_eps <= FP32_MAX
        and type(weight_offset) is float and -FP32_MAX <= weight_offset <= FP32_MAX
        and type(activation) is str and activation in ACTIVATIONS
    )


def check_probe(
    hidden: object, weight: object, bias: object, positions: object, norm_weight: object,
    norm_eps: object, weight_offset: object, activation: object,
) -> None:
    if _plain_probe_call(hidden, weight, bias, positions, norm_weight, norm_eps, weight_offset, activation):
        return
    hidden = _float_tensor("hidden", hidden)
    if positions is None:
        if hidden.dim() != 2:
            raise ValueError(
                f"hidden: expected [B, d] when positions is None (or [B, T, d] with positions), "
                f"got {hidden.dim()}-d shape {list(hidden.shape)}"
            )
    else:
        _check_positions(positions, hidden)
    d = hidden.shape[-1]
    if d < 1:
        raise ValueError("hidden: expected the last dimension d >= 1, got 0")
    weight = _check_probe_weight(weight, hidden, d)
    if bias is not None:
        bias = _float_tensor("bias", bias)
        if bias.dim() != 1 or bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias: expected shape [{weight.shape[0]}] (one per probe in weight), got {list(bias.shape)}")
        _same_dtype("bias", bias, "weight", weight)
        _same_device("bias", bias, "hidden", hidden)
    if norm_weight is not None:
        _check_norm_weight(norm_weight, "hidden", hidden, d)
    check_epsilon("norm_eps", norm_eps)
    check_fp32_finite("weight_offset", weight_offset)
    check_activation(activation)


def _data_unavailable(t: Tensor) -> bool:
    # Fake tensors never get here: the dispatcher sends them to the fake kernel.
    if torch.compiler.is_compiling():
        return True
    device = t.device.type
    return device == "meta" or (device == "cuda" and torch.cuda.is_current_stream_capturing())


def check_positions_values(positions: Tensor | None, seq_len: int) -> None:
    """Raise if any position is outside ``[0, seq_len)``. Reads data (one host sync on GPU)."""
    if positions is None or _data_unavailable(positions):
        return
    n = positions.numel()
    if n == 0:
        return
    if n <= 64 and positions.device.type == "cpu":  # a few indices: cheaper in Python than two ops
        values = positions.tolist()
        lo, hi = min(values), max(values)
    else:
        lo, hi = (int(v) for v in torch.aminmax(positions))
    if lo < 0 or hi >= seq_len:
        bad = lo if lo < 0 else hi
        raise ValueError(f"positions: expected every index in [0, {seq_len}) (hidden's T), got {bad}")
