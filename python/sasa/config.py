"""``SASAConfig``: which layers, how to project, how to read and decide (SASA.md sections 3-5)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

MODES = ("replace", "residual", "interpolate")
SCOPES = ("all", "last")
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
        eps: added to ``||H_f||^2`` in the projection; must be > 0.
        scope: ``"all"`` (project every prompt token and re-run blocks ``s+1..L-1`` over the prompt)
            or ``"last"`` (project the last prompt token only; one token through the blocks against
            a read-only view of the normal pass's keys and values).
        feature: ``"logits"`` (the output head applied to the final state) or ``"hidden"`` (the
            final-normed state itself).
        threshold: a probability ``p >= threshold`` flags the row; in ``[0, 1]``.
        refusal_text: what a flagged row answers.
        fail_closed: a NaN or failed score flags the row (``False``: it passes, with a log line).
    """

    safety_layer: int
    fused_layer: int
    mode: str = "replace"
    coef: float = 1.0
    eps: float = 1e-6
    scope: str = "all"
    feature: str = "logits"
    threshold: float = 0.5
    refusal_text: str = "I'm sorry, but I can't help with that."
    fail_closed: bool = True

    def __post_init__(self) -> None:
        for name in ("safety_layer", "fused_layer"):
            value = getattr(self, name)
            # bool is an int subclass; True as a layer index is almost surely a mistake.
            if not isinstance(value, int) or isinstance(value, bool):
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
        _check_real("coef", self.coef)
        _check_real("eps", self.eps)
        if not self.eps > 0:
            raise ValueError(f"eps: expected a number > 0, got {self.eps}")
        _check_real("threshold", self.threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold: expected a probability in [0, 1], got {self.threshold}")
        if not isinstance(self.refusal_text, str):
            raise TypeError(f"refusal_text: expected a str, got {type(self.refusal_text).__name__}")
        if not isinstance(self.fail_closed, bool):
            raise TypeError(f"fail_closed: expected a bool, got {self.fail_closed!r}")

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
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name}: expected a finite number, got {value!r}")
