"""``SASAConfig``: which layers, how to project, how to read and decide (docs/method.md sections 3-5)."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from typing import Any

from sasa_kernels._validation import FP32_TINY as EPS_MIN
from sasa_kernels._validation import check_epsilon, check_fp32_finite
from sasa_kernels.reference import MODES

SCOPES = ("last", "all")
FEATURES = ("logits", "hidden")


@dataclass(frozen=True)
class SASAConfig:
    """Settings of one SASA guard. Validates itself on construction.

    Args:
        safety_layer: 0-based decoder-block index ``s`` (like ``model.layers[s]``); its output ``H``
            (the residual stream *after* block ``s``) is the state that gets projected.
        fused_layer: 0-based decoder-block index ``f > s``; ``H`` after block ``f`` is projected onto.
            Both are checked against the model's layer count in :func:`sasa.apply_sasa`.
        mode: ``"replace"`` (default), ``"residual"`` (``H_s + coef * P``) or ``"interpolate"``
            (``(1 - coef) * H_s + coef * P``).
        coef: lambda for ``residual`` / ``interpolate`` (ignored by ``replace``).
        eps: added to ``||H_f||^2`` in the projection; at least float32's smallest normal number
            (:data:`EPS_MIN`), at most float32's largest.
        scope: ``"last"`` (the default: project the last prompt token only; one token through the
            blocks against a read-only view of the normal pass's keys and values) or ``"all"``
            (project every prompt token and re-run blocks ``s+1..L-1`` over the prompt; the
            paper-faithful variant, about ``(L-1-s)/L`` of a prefill more).
        feature: ``"logits"`` (the output head applied to the final state) or ``"hidden"`` (the
            final-normed state itself).
        threshold: a probability ``p >= threshold`` flags the row; in ``[0, 1]``.
        refusal_text: what a flagged row answers.
        fail_closed: a NaN or failed score flags the row (``False``: it passes, with a log line).
        compile_augmented: ``scope="last"`` only: run the augmented token's blocks ``s+2..L-1`` as
            one ``torch.compile`` graph after the normal forward, instead of eagerly block by block
            inside it (:mod:`sasa.guard.compiled_pass`). The first call of each new shape compiles
            (seconds); if compiling fails, the guard logs a warning and runs the pass eagerly. Scores
            agree with the eager pass to rounding, not bit for bit. Not part of a probe's identity.
    """

    safety_layer: int
    fused_layer: int
    mode: str = "replace"
    coef: float = 1.0
    eps: float = 1e-6
    scope: str = "last"
    feature: str = "logits"
    threshold: float = 0.5
    refusal_text: str = "I'm sorry, but I can't help with that."
    fail_closed: bool = True
    compile_augmented: bool = False

    def __post_init__(self) -> None:
        for name in ("safety_layer", "fused_layer"):
            value = getattr(self, name)
            # bool is an int subclass; True as a layer index is almost surely a mistake.
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise TypeError(f"{name}: expected an int (0-based decoder-block index), got {value!r}")
            if value < 0:
                raise ValueError(f"{name}: expected a 0-based decoder-block index >= 0, got {value}")
        if self.safety_layer >= self.fused_layer:
            raise ValueError(
                f"safety_layer ({self.safety_layer}) must be smaller than fused_layer ({self.fused_layer})"
            )
        _check_choice("mode", self.mode, MODES)
        _check_choice("scope", self.scope, SCOPES)
        _check_choice("feature", self.feature, FEATURES)
        # The kernels' own bounds (the projection accumulates from float32 values): an eps that is
        # zero in float32 would make a zero H_f row 0/0 = NaN, a coef beyond float32 overflows.
        _check_real("coef", self.coef)
        check_fp32_finite("coef", self.coef)
        _check_real("eps", self.eps)
        check_epsilon("eps", self.eps)
        _check_real("threshold", self.threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold: expected a probability in [0, 1], got {self.threshold}")
        if not isinstance(self.refusal_text, str):
            raise TypeError(f"refusal_text: expected a str, got {type(self.refusal_text).__name__}")
        if not isinstance(self.fail_closed, bool):
            raise TypeError(f"fail_closed: expected a bool, got {self.fail_closed!r}")
        if not isinstance(self.compile_augmented, bool):
            raise TypeError(f"compile_augmented: expected a bool, got {self.compile_augmented!r}")
        if self.compile_augmented and self.scope != "last":
            raise ValueError(f"compile_augmented: compiles the scope='last' pass only; this config has scope={self.scope!r}")
        for name in ("coef", "eps", "threshold"):  # numpy scalars in, plain floats stored (JSON, hashing)
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("safety_layer", "fused_layer"):
            object.__setattr__(self, name, int(getattr(self, name)))

    def replace(self, **changes: Any) -> "SASAConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """JSON text; :meth:`from_json` reads it back into an equal config."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SASAConfig":
        if not isinstance(data, dict):
            raise TypeError(f"SASAConfig data: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"SASAConfig: unknown field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "SASAConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"SASAConfig JSON: not valid JSON ({err})") from err
        return cls.from_dict(data)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")


def _check_real(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise TypeError(f"{name}: expected a finite number, got {value!r}")
