"""``SASAProbe``: the linear probe that reads SASA features, with what it needs to be used safely.

A probe is one or several logistic-regression heads over SASA features (label 1 = harmful), their
decision thresholds, and the facts that make it valid: the :class:`SASAConfig` its features were
extracted with, how its prompts were formatted (:class:`sasa.PromptFormat`) and a fingerprint of
the model it was calibrated on (:mod:`sasa.probe.fingerprint`). It is validated on construction: a
probe that could never fire (a NaN or out-of-range threshold, non-finite weights) is refused,
because a guard with such a probe would pass every request.

Fitting is in :mod:`sasa.probe.fit`; saving and loading (safetensors + JSON, no pickle, checksummed,
written atomically) in :mod:`sasa.probe.files`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from sasa.config import FEATURES, SASAConfig
from sasa.data.prompt_format import PromptFormat
from sasa.metrics import ProbeMetrics, flag_rows
from sasa.probe import files as _files
from sasa.probe import fit as _fit
from sasa.probe.fingerprint import validate_fingerprint
from sasa.probe.fit import ANY, COMBINED, SaturatedThresholdWarning
from sasa.probe.tensors import check_finite, check_thresholds

WEIGHTS_FILE = _files.WEIGHTS_FILE
CONFIG_FILE = _files.CONFIG_FILE

__all__ = ["ANY", "COMBINED", "CONFIG_FILE", "WEIGHTS_FILE", "SASAProbe", "SaturatedThresholdWarning"]


@dataclass
class SASAProbe:
    """One or several linear probes over SASA features (label 1 = harmful).

    Attributes:
        weight: float32 ``[C, F]``, finite.
        bias: float32 ``[C]``, finite.
        threshold: float32 ``[C]`` in ``[0, 1]``: a probability ``>= threshold`` flags the row.
        categories: ``C`` names; the first is ``"any"`` when fitted with categories.
        feature: ``"logits"`` or ``"hidden"``: what ``F`` is.
        config: the :class:`SASAConfig` the features were extracted with (if known).
        metrics: held-out :class:`ProbeMetrics` per category name (each probe at its own
            threshold), plus :data:`COMBINED` for the whole decision when there are categories.
        fingerprint: the model the probe was fitted on (:func:`sasa.model_fingerprint`); ``None``
            only for a probe built by hand (then :meth:`save` needs ``allow_unfingerprinted=True``).
        prompt_format: how the calibration prompts were formatted (chat template or raw); the
            guard formats and checks its inputs the same way. ``None`` when unknown.
        holdout_rows: after :meth:`fit`, the indices of the held-out rows (not saved).
    """

    weight: Tensor
    bias: Tensor
    threshold: Tensor
    categories: list[str]
    feature: str = "logits"
    config: Optional[SASAConfig] = None
    metrics: dict[str, ProbeMetrics] = field(default_factory=dict)
    fingerprint: Optional[dict[str, Any]] = None
    prompt_format: Optional[PromptFormat] = None
    holdout_rows: Optional[Tensor] = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("weight", "bias", "threshold"):
            value = getattr(self, name)
            if not isinstance(value, Tensor) or not value.is_floating_point():
                raise TypeError(f"{name}: expected a floating-point torch.Tensor, got {type(value).__name__}")
        if self.weight.dim() != 2:
            raise ValueError(f"weight: expected shape [C, F], got {list(self.weight.shape)}")
        num = self.weight.shape[0]
        if num == 0 or self.weight.shape[1] == 0:
            raise ValueError(f"weight: expected C >= 1 probes over F >= 1 features, got shape {list(self.weight.shape)}")
        for name in ("bias", "threshold"):
            value = getattr(self, name)
            if value.shape != (num,):
                raise ValueError(f"{name}: expected shape [{num}], got {list(value.shape)}")
        check_finite("weight", self.weight)
        check_finite("bias", self.bias)
        check_thresholds("threshold", self.threshold)
        if isinstance(self.categories, str) or not all(isinstance(c, str) and c for c in self.categories):
            raise TypeError(f"categories: expected a list of {num} non-empty names, got {self.categories!r}")
        self.categories = list(self.categories)
        if len(self.categories) != num:
            raise ValueError(f"categories: expected {num} names, got {len(self.categories)}")
        if self.feature not in FEATURES:
            raise ValueError(f"feature: expected one of {list(FEATURES)}, got {self.feature!r}")
        if self.config is not None:
            if not isinstance(self.config, SASAConfig):
                raise TypeError(f"config: expected a SASAConfig or None, got {type(self.config).__name__}")
            if self.config.feature != self.feature:
                raise ValueError(f"feature: the probe reads {self.feature!r} features but its config says {self.config.feature!r}")
        if not isinstance(self.metrics, dict) or not all(isinstance(m, ProbeMetrics) for m in self.metrics.values()):
            raise TypeError("metrics: expected a dict of name -> ProbeMetrics")
        if self.fingerprint is not None:
            validate_fingerprint(self.fingerprint)
        if self.prompt_format is not None and not isinstance(self.prompt_format, PromptFormat):
            raise TypeError(f"prompt_format: expected a sasa.PromptFormat or None, got {type(self.prompt_format).__name__}")

    def __repr__(self) -> str:
        config = self.config
        layers = "" if config is None else f", layers=({config.safety_layer}, {config.fused_layer}), scope={config.scope!r}"
        thresholds = ", ".join(f"{t:.4g}" for t in self.threshold.tolist())
        auroc = self.metrics.get(self.categories[0])
        quality = "" if auroc is None else f", held-out AUROC={auroc.auroc:.3f}"
        return (
            f"SASAProbe(categories={self.categories}, feature={self.feature!r}, F={self.feature_size}{layers}, "
            f"thresholds=[{thresholds}]{quality}, prompt_format={self.prompt_format.describe() if self.prompt_format else None}, "
            f"fingerprinted={self.fingerprint is not None})"
        )

    @property
    def num_probes(self) -> int:
        return self.weight.shape[0]

    @property
    def feature_size(self) -> int:
        return self.weight.shape[1]

    def predict_proba(self, features: Tensor) -> Tensor:
        """Probabilities ``[N, C]`` for raw features ``[N, F]`` (plain torch, float32)."""
        features = _fit.features_matrix(features, "features")
        if features.shape[1] != self.feature_size:
            raise ValueError(f"features: expected width {self.feature_size}, got {features.shape[1]}")
        w = self.weight.to(features.device)
        return torch.sigmoid(features.float() @ w.T + self.bias.to(features.device))

    def decide(self, probabilities: Tensor) -> Tensor:
        """Bool ``[N]``: flagged when any probe's probability reaches its threshold, or is NaN.

        ``probabilities`` is ``[N, C]`` (``[N]`` is accepted for a single probe).
        """
        if probabilities.dim() == 1 and self.num_probes == 1:
            probabilities = probabilities[:, None]
        if probabilities.dim() != 2 or probabilities.shape[1] != self.num_probes:
            raise ValueError(
                f"probabilities: expected shape [N, {self.num_probes}] (one column per probe), "
                f"got {list(probabilities.shape)}"
            )
        return flag_rows(probabilities, self.threshold)

    @classmethod
    def fit(
        cls,
        features: Tensor,
        labels: Union[Tensor, Sequence[int]],
        *,
        categories: Optional[Sequence[Optional[str]]] = None,
        target_fpr: float = 0.05,
        holdout: float = 0.2,
        l2: float = 1e-2,
        seed: int = 0,
        feature: str = "logits",
        config: Optional[SASAConfig] = None,
        fingerprint: Optional[dict[str, Any]] = None,
        prompt_format: Optional[PromptFormat] = None,
        max_iter: int = 200,
    ) -> "SASAProbe":
        """Fit class-balanced L2 logistic regression; choose thresholds on a held-out split.

        Args:
            features: ``[N, F]`` SASA features (e.g. from ``SASAGuard.features``).
            labels: ``[N]`` with 0 = benign, 1 = harmful.
            categories: optional per-row category names (``None`` for benign rows is fine). When
                given, an ``"any"`` probe plus one probe per category are fitted.
            target_fpr: the false-positive rate the decision is calibrated for, on held-out benign
                rows. With ``C`` probes each threshold is chosen for ``target_fpr / C``, so the rate
                of the decision "any probe fires" stays within ``target_fpr``. When held-out benign
                scores saturate at 1.0 no threshold can meet it: the threshold is then 1.0 (the
                probe still fires on saturated scores), the metrics report the real rate, and a
                :class:`SaturatedThresholdWarning` says so. ``fit`` never returns a probe that
                cannot fire.
            holdout: share of rows (stratified by label and category) held out for the threshold
                and the metrics. Must leave at least one row of each class on both sides.
            l2: L2 penalty on the standardized weights (mean over rows + ``l2/2 * ||w||^2``).
            seed: makes the split, hence the probe, deterministic.
            feature, config, fingerprint, prompt_format: recorded on the probe (see the class
                attributes). :func:`sasa.calibrate` fills all of them; a probe saved without a
                fingerprint needs an explicit opt-in.
        """
        result = _fit.fit_probes(
            features, labels, categories, target_fpr=target_fpr, holdout=holdout, l2=l2, seed=seed, max_iter=max_iter
        )
        return cls(
            weight=result.weight,
            bias=result.bias,
            threshold=result.threshold,
            categories=result.names,
            feature=feature,
            config=config,
            metrics=result.metrics,
            fingerprint=fingerprint,
            prompt_format=prompt_format,
            holdout_rows=result.holdout_rows,
        )

    def save(self, directory: Union[str, Path], *, allow_unfingerprinted: bool = False) -> Path:
        """Write ``probe.safetensors`` and ``sasa_config.json`` into ``directory``, atomically.

        Other files in ``directory`` (plots) are kept. Either the whole new probe is in place or,
        after a failure, the previous one is untouched.

        Raises:
            ValueError: the probe has no model fingerprint (pass ``fingerprint=`` to :meth:`fit`,
                or opt out with ``allow_unfingerprinted=True`` for a probe built by hand: such a
                probe then loads only with ``SASAProbe.load(..., require_fingerprint=False)``).
        """
        if self.fingerprint is None and not allow_unfingerprinted:
            raise ValueError(
                "probe: has no model fingerprint, so nothing would stop it being applied to another model; "
                "fit it with fingerprint=sasa.model_fingerprint(model) (sasa.calibrate does), or pass "
                "allow_unfingerprinted=True for a probe built by hand"
            )
        return _files.save(self, Path(directory))

    @classmethod
    def load(
        cls,
        directory: Union[str, Path],
        model: Optional[torch.nn.Module] = None,
        *,
        require_fingerprint: bool = True,
    ) -> "SASAProbe":
        """Read a probe saved by :meth:`save`; with ``model``, check it was fitted for that model.

        Args:
            directory: the probe directory.
            model: if given, the probe's fingerprint must match it (see :mod:`sasa.probe.fingerprint`).
            require_fingerprint: with ``model``, a probe saved without a fingerprint is refused
                unless this is ``False`` (the escape hatch for probes built by hand).

        Raises:
            FileNotFoundError: a file is missing.
            ValueError: a file is truncated, edited or malformed; the probe could never fire; or
                (with ``model``) the fingerprint is missing or differs (the message names the field).
        """
        return _files.load(cls, Path(directory), model, require_fingerprint=require_fingerprint)
