"""Turning the ``probe`` argument of :func:`sasa.apply_sasa` into validated tensors, and folding it.

A probe is either a ``(weight, bias)`` pair (``weight`` ``[C, F]`` or ``[F]``, ``bias`` ``[C]``, a
scalar or ``None``) or an object with ``weight`` and ``bias`` attributes of those shapes and,
optionally, ``threshold`` (a float or ``[C]``) and ``categories`` (``C`` names). ``F`` is the
feature size: the output head's width for ``feature="logits"``, the hidden size for ``"hidden"``.

A probe that could never fire would silently pass every request, so non-finite weights or biases,
and thresholds that are NaN or outside ``[0, 1]``, are refused here (and by :class:`sasa.SASAProbe`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from sasa.data.inputs import describe as _describe


@dataclass
class ProbeTensors:
    """A validated probe: float32 tensors on the model's device."""

    weight: Tensor  # [C, F]
    bias: Tensor  # [C]
    threshold: Optional[Tensor]  # [C] or None (then the config's threshold applies)
    categories: Optional[list[str]]

    def to(self, device: torch.device) -> "ProbeTensors":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return ProbeTensors(move(self.weight), move(self.bias), move(self.threshold), self.categories)


def probe_tensors(probe: Any, feature_size: int, feature: str, device: torch.device) -> ProbeTensors:
    """Validate ``probe`` against the feature size; raise TypeError/ValueError naming the problem."""
    threshold = categories = None
    if isinstance(probe, (tuple, list)):
        if len(probe) != 2:
            raise ValueError(f"probe: expected a (weight, bias) pair, got a sequence of length {len(probe)}")
        weight, bias = probe
    elif hasattr(probe, "weight") and hasattr(probe, "bias"):
        weight, bias = probe.weight, probe.bias
        threshold = getattr(probe, "threshold", None)
        categories = getattr(probe, "categories", None)
    else:
        raise TypeError(
            "probe: expected a (weight [C, F], bias [C]) pair or an object with .weight and .bias, "
            f"got {type(probe).__name__}"
        )
    if not isinstance(weight, Tensor) or not weight.is_floating_point():
        raise TypeError(f"probe weight: expected a floating-point torch.Tensor, got {_describe(weight)}")
    if weight.device.type == "meta":
        raise ValueError("probe weight: is on the meta device (no values); load the probe's weights first")
    if weight.dim() == 1:
        weight = weight.unsqueeze(0)
    if weight.dim() != 2:
        raise ValueError(f"probe weight: expected shape [C, F] or [F], got {list(weight.shape)}")
    num = weight.shape[0]
    if num == 0:
        raise ValueError("probe weight: expected at least one probe (C >= 1), got C = 0")
    if weight.shape[1] != feature_size:
        raise ValueError(
            f"probe weight: width {weight.shape[1]} does not match the feature size {feature_size} "
            f"(feature={feature!r}: {'the output head width' if feature == 'logits' else 'the hidden size'})"
        )
    if bias is None:
        bias = torch.zeros(num)
    elif isinstance(bias, (int, float)):
        bias = torch.full((num,), float(bias))
    elif isinstance(bias, Tensor):
        bias = bias.reshape(-1) if bias.dim() == 0 else bias
        if bias.shape != (num,):
            raise ValueError(f"probe bias: expected shape [{num}] (one per probe), got {list(bias.shape)}")
    else:
        raise TypeError(f"probe bias: expected a torch.Tensor, a number or None, got {_describe(bias)}")
    if bias.device.type == "meta":
        raise ValueError("probe bias: is on the meta device (no values); load the probe's weights first")
    check_finite("probe weight", weight)
    check_finite("probe bias", bias)
    thr = None
    if threshold is not None:
        thr = torch.as_tensor(threshold, dtype=torch.float32).reshape(-1)
        if thr.numel() == 1:
            thr = thr.expand(num).clone()
        if thr.shape != (num,):
            raise ValueError(f"probe threshold: expected a float or shape [{num}], got {list(thr.shape)}")
        check_thresholds("probe threshold", thr)
    if categories is not None:
        categories = [str(c) for c in categories]
        if len(categories) != num:
            raise ValueError(f"probe categories: expected {num} names, got {len(categories)}")
    return ProbeTensors(
        weight=weight.detach().to(device=device, dtype=torch.float32).contiguous(),
        bias=bias.detach().to(device=device, dtype=torch.float32).contiguous(),
        threshold=None if thr is None else thr.to(device),
        categories=categories,
    )


def check_finite(name: str, values: Tensor) -> None:
    """A NaN or infinite probe weight makes every score NaN or saturated: refuse it."""
    if values.device.type == "meta":
        raise ValueError(f"{name}: is on the meta device (no values)")
    bad = ~torch.isfinite(values.detach())
    if bool(bad.any()):
        raise ValueError(f"{name}: contains {int(bad.sum())} NaN or infinite value(s); a probe must be finite")


def check_thresholds(name: str, thresholds: Tensor) -> None:
    """Thresholds are probabilities: a NaN one never compares true and one above 1 never fires."""
    values = thresholds.detach().double().reshape(-1)
    bad = [float(v) for v in values if not 0.0 <= float(v) <= 1.0]
    if bad:
        raise ValueError(f"{name}: expected probabilities in [0, 1], got {bad[:4]} (such a probe could never fire)")


def fold_into_hidden(probe: ProbeTensors, head: nn.Linear) -> ProbeTensors:
    """``w . (W z + b_lm) + c == (W^T w) . z + (w . b_lm + c)``: the logits probe in hidden space.

    Exact for a linear head (docs/method.md section 5); the vocabulary-size matmul then happens once here,
    not per request. Computed in float32.
    """
    head_weight = head.weight.detach().float()  # [V, d]
    weight = probe.weight @ head_weight  # [C, d]
    bias = probe.bias.clone()
    if head.bias is not None:
        bias = bias + probe.weight @ head.bias.detach().float()
    return ProbeTensors(weight.contiguous(), bias, probe.threshold, probe.categories)
