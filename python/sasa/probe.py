"""``SASAProbe``: fit, evaluate, save and load the linear probe that reads SASA features.

Fitting is class-balanced, L2-regularized logistic regression solved with ``torch.optim.LBFGS`` in
float64 on standardized features. Why torch and not scikit-learn: no extra dependency, the
feature matrix (``F`` = vocabulary size for logits features, tens of thousands of columns) is
already a tensor, and a full-batch deterministic solver in float64 gives the same probe for the
same seed on every machine. The standardization is folded back into the weights, so the saved
probe acts on raw features.

Several probes are fitted at once when rows carry a ``category``: one ``"any"`` probe (every
harmful row against every benign row) plus one per category (that category's harmful rows against
every benign row). At inference they share one ``[B, F] x [F, C]`` matmul.

Saved form (no pickle): ``probe.safetensors`` (``weight`` ``[C, F]``, ``bias`` ``[C]``,
``threshold`` ``[C]``) and ``sasa_config.json`` (the :class:`SASAConfig`, feature kind, category
names, held-out metrics, the model fingerprint, and a SHA-256 over both, so an edited or
truncated file is refused).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from .config import FEATURES, SASAConfig
from .metrics import ProbeMetrics, flag_rows, metrics_at, threshold_for_fpr

WEIGHTS_FILE = "probe.safetensors"
CONFIG_FILE = "sasa_config.json"
FORMAT_VERSION = 1
ANY = "any"
#: Key in :attr:`SASAProbe.metrics` for the decision rule over all probes (only with categories).
COMBINED = "combined (any probe fires)"

PathLike = Union[str, Path]


# --- model fingerprint --------------------------------------------------------------------------


def model_fingerprint(model: torch.nn.Module) -> dict[str, Any]:
    """What must match for a probe to be valid on ``model``.

    ``model_type``, the text model's hidden size, layer count and vocabulary size, and a SHA-256
    of the output head's weights (as float32, so the same checkpoint in bf16 or fp32 agrees).
    """
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {
        "model_type": str(getattr(config, "model_type", "")),
        "hidden_size": int(getattr(text, "hidden_size", -1)),
        "num_hidden_layers": int(getattr(text, "num_hidden_layers", -1)),
        "vocab_size": int(getattr(text, "vocab_size", -1)),
        "head_sha256": _tensor_sha256(head.weight) if head is not None else "",
    }


def _tensor_sha256(weight: Tensor, rows_per_chunk: int = 4096) -> str:
    digest = hashlib.sha256()
    with torch.no_grad():
        for start in range(0, weight.shape[0], rows_per_chunk):  # bounded host memory
            chunk = weight[start:start + rows_per_chunk].detach().to("cpu", torch.float32).contiguous()
            digest.update(chunk.numpy().tobytes())
    return digest.hexdigest()


def check_fingerprint(expected: dict[str, Any], model: torch.nn.Module) -> None:
    """Raise ``ValueError`` naming the first field where ``model`` differs from ``expected``."""
    actual = model_fingerprint(model)
    for key in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "head_sha256"):
        if key in expected and expected[key] != actual[key]:
            raise ValueError(
                f"probe: fitted for a different model: {key} is {expected[key]!r} in the probe "
                f"but {actual[key]!r} in this model"
            )


# --- the probe ----------------------------------------------------------------------------------


@dataclass
class SASAProbe:
    """One or several linear probes over SASA features (label 1 = harmful).

    Attributes:
        weight: float32 ``[C, F]``.
        bias: float32 ``[C]``.
        threshold: float32 ``[C]``: a probability ``>= threshold`` flags the row.
        categories: ``C`` names; the first is ``"any"`` when fitted with categories.
        feature: ``"logits"`` or ``"hidden"``: what ``F`` is.
        config: the :class:`SASAConfig` the features were extracted with (if known).
        metrics: held-out :class:`ProbeMetrics` per category name (each probe at its own
            threshold), plus :data:`COMBINED` for the whole decision when there are categories.
        fingerprint: the model the probe was fitted on (see :func:`model_fingerprint`).
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
    holdout_rows: Optional[Tensor] = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.weight.dim() != 2:
            raise ValueError(f"weight: expected shape [C, F], got {list(self.weight.shape)}")
        num = self.weight.shape[0]
        for name in ("bias", "threshold"):
            value = getattr(self, name)
            if value.shape != (num,):
                raise ValueError(f"{name}: expected shape [{num}], got {list(value.shape)}")
        if len(self.categories) != num:
            raise ValueError(f"categories: expected {num} names, got {len(self.categories)}")
        if self.feature not in FEATURES:
            raise ValueError(f"feature: expected one of {list(FEATURES)}, got {self.feature!r}")

    @property
    def num_probes(self) -> int:
        return self.weight.shape[0]

    @property
    def feature_size(self) -> int:
        return self.weight.shape[1]

    def predict_proba(self, features: Tensor) -> Tensor:
        """Probabilities ``[N, C]`` for raw features ``[N, F]`` (plain torch, float32)."""
        features = _features_matrix(features, "features")
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

    # --- fitting --------------------------------------------------------------------------------

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
                of the decision "any probe fires" stays within ``target_fpr``.
            holdout: share of rows (stratified by label and category) held out for the threshold
                and the metrics. Must leave at least one row of each class on both sides.
            l2: L2 penalty on the standardized weights (mean over rows + ``l2/2 * ||w||^2``).
            seed: makes the split, hence the probe, deterministic.
        """
        x = _features_matrix(features, "features").double().cpu()
        y = _labels_vector(labels, x.shape[0])
        cats = _categories_vector(categories, y)
        if not 0.0 <= target_fpr < 1.0:
            raise ValueError(f"target_fpr: expected a rate in [0, 1), got {target_fpr}")
        if not 0.0 < holdout < 1.0:
            raise ValueError(f"holdout: expected a fraction in (0, 1), got {holdout}")
        if not (isinstance(l2, (int, float)) and l2 >= 0 and math.isfinite(l2)):
            raise ValueError(f"l2: expected a finite number >= 0, got {l2}")
        if not torch.isfinite(x).all():
            raise ValueError("features: contains NaN or infinite values")

        train, held = _stratified_split(y, cats, holdout, seed)
        names = [ANY] + (sorted({c for c in cats if c is not None}) if categories is not None else [])
        # A row is flagged when any probe fires, so each probe gets an equal share of the target
        # rate: the union's false-positive rate on held-out rows then stays within target_fpr.
        per_probe_fpr = target_fpr / len(names)
        weights, biases, thresholds, metrics = [], [], [], {}
        for name in names:
            rows = _rows_for(name, y, cats)
            tr, te = train[rows[train]], held[rows[held]]
            _require_both_classes(name, y[tr], "training")
            _require_both_classes(name, y[te], "held-out")
            w, b = _fit_logistic(x[tr], y[tr], l2=l2, max_iter=max_iter)
            p = torch.sigmoid(x[te] @ w + b)
            thr = threshold_for_fpr(p[y[te] == 0], per_probe_fpr)
            weights.append(w)
            biases.append(b)
            thresholds.append(thr)
            metrics[name] = metrics_at(p, y[te], thr)
        if len(names) > 1:
            # The decision rule itself (any probe at its threshold), scored by the largest margin.
            p_all = torch.sigmoid(x[held] @ torch.stack(weights).T + torch.tensor(biases, dtype=torch.float64))
            margin = (p_all - torch.tensor(thresholds, dtype=torch.float64)).max(dim=1).values
            metrics[COMBINED] = metrics_at(margin, y[held], 0.0)
        return cls(
            weight=torch.stack(weights).float(),
            bias=torch.tensor([float(b) for b in biases], dtype=torch.float32),
            threshold=torch.tensor(thresholds, dtype=torch.float32),
            categories=names,
            feature=feature,
            config=config,
            metrics=metrics,
            fingerprint=fingerprint,
            holdout_rows=held,
        )

    # --- persistence ------------------------------------------------------------------------------

    def save(self, directory: PathLike) -> Path:
        """Write ``probe.safetensors`` and ``sasa_config.json`` into ``directory`` (created)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {
            "weight": self.weight.detach().float().contiguous().cpu(),
            "bias": self.bias.detach().float().contiguous().cpu(),
            "threshold": self.threshold.detach().float().contiguous().cpu(),
        }
        save_file(tensors, str(directory / WEIGHTS_FILE))
        meta = self._metadata()
        meta["sha256"] = _checksum((directory / WEIGHTS_FILE).read_bytes(), meta)
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return directory

    def _metadata(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "sasa_config": None if self.config is None else self.config.to_dict(),
            "feature": self.feature,
            "categories": list(self.categories),
            "threshold": [float(t) for t in self.threshold],
            "feature_size": self.feature_size,
            "metrics": {k: m.to_dict() for k, m in self.metrics.items()},
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def load(cls, directory: PathLike, model: Optional[torch.nn.Module] = None) -> "SASAProbe":
        """Read a probe saved by :meth:`save`; with ``model``, check it was fitted for that model.

        Raises:
            FileNotFoundError: a file is missing.
            ValueError: a file is truncated, edited or malformed, or (with ``model``) the model's
                fingerprint differs (the message names the field).
        """
        from safetensors import SafetensorError
        from safetensors.torch import load

        directory = Path(directory)
        weights_path, config_path = directory / WEIGHTS_FILE, directory / CONFIG_FILE
        for path in (weights_path, config_path):
            if not path.is_file():
                raise FileNotFoundError(f"probe: {path} not found (expected {WEIGHTS_FILE} and {CONFIG_FILE})")
        try:
            meta = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"probe: {config_path} is not valid JSON ({err})") from err
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"probe: {config_path} is not a sasa probe config of format {FORMAT_VERSION}")
        raw = weights_path.read_bytes()
        stored = meta.pop("sha256", None)
        if stored != _checksum(raw, meta):
            raise ValueError(
                f"probe: checksum mismatch in {directory}: {WEIGHTS_FILE} or {CONFIG_FILE} was edited, "
                "truncated or copied from different probes"
            )
        try:
            tensors = load(raw)
        except (SafetensorError, ValueError) as err:
            raise ValueError(f"probe: {weights_path} is corrupted ({err})") from err
        missing = {"weight", "bias", "threshold"} - set(tensors)
        if missing:
            raise ValueError(f"probe: {weights_path} lacks tensor(s) {sorted(missing)}")
        try:
            config = None if meta["sasa_config"] is None else SASAConfig.from_dict(meta["sasa_config"])
            probe = cls(
                weight=tensors["weight"],
                bias=tensors["bias"],
                threshold=tensors["threshold"],
                categories=list(meta["categories"]),
                feature=meta["feature"],
                config=config,
                metrics={k: ProbeMetrics(**v) for k, v in meta["metrics"].items()},
                fingerprint=meta["fingerprint"],
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"probe: {config_path} is missing or has a malformed field ({err})") from err
        if model is not None and probe.fingerprint is not None:
            check_fingerprint(probe.fingerprint, model)
        return probe


# --- helpers ------------------------------------------------------------------------------------


def _checksum(weights: bytes, meta: dict[str, Any]) -> str:
    digest = hashlib.sha256(weights)
    digest.update(json.dumps(meta, sort_keys=True).encode())
    return digest.hexdigest()


def _features_matrix(features: Any, name: str) -> Tensor:
    if not isinstance(features, Tensor) or not features.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor [N, F], got {type(features).__name__}")
    if features.dim() != 2:
        raise ValueError(f"{name}: expected shape [N, F], got {list(features.shape)}")
    return features


def _labels_vector(labels: Any, n: int) -> Tensor:
    y = torch.as_tensor(labels).reshape(-1)
    if y.numel() != n:
        raise ValueError(f"labels: expected {n} labels (one per feature row), got {y.numel()}")
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise ValueError("labels: expected 0 (benign) or 1 (harmful), got non-integer values")
    y = y.long()
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError(f"labels: expected 0 (benign) or 1 (harmful), got values {sorted(set(y.tolist()))}")
    return y


def _categories_vector(categories: Optional[Sequence[Optional[str]]], y: Tensor) -> list[Optional[str]]:
    if categories is None:
        return [None] * y.numel()
    cats = list(categories)
    if len(cats) != y.numel():
        raise ValueError(f"categories: expected {y.numel()} entries (one per row), got {len(cats)}")
    for i, (c, label) in enumerate(zip(cats, y.tolist())):
        if label == 1 and not (isinstance(c, str) and c):
            raise ValueError(f"categories: harmful row {i} has no category name")
    # A benign row's category plays no role: every benign row is a negative for every probe.
    return [c if label == 1 else None for c, label in zip(cats, y.tolist())]


def _rows_for(name: str, y: Tensor, cats: list[Optional[str]]) -> Tensor:
    if name == ANY:
        return torch.ones_like(y, dtype=torch.bool)
    return (y == 0) | torch.tensor([c == name for c in cats], dtype=torch.bool)


def _stratified_split(y: Tensor, cats: list[Optional[str]], holdout: float, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    train, held = [], []
    strata: dict[tuple[int, Optional[str]], list[int]] = {}
    for i, (label, c) in enumerate(zip(y.tolist(), cats)):
        strata.setdefault((label, c), []).append(i)
    for key in sorted(strata, key=lambda k: (k[0], k[1] or "")):
        idx = torch.tensor(strata[key])[torch.randperm(len(strata[key]), generator=g)]
        n_held = int(round(holdout * len(idx)))
        if len(idx) >= 2:
            n_held = min(max(n_held, 1), len(idx) - 1)  # keep both sides of a small stratum
        held.append(idx[:n_held])
        train.append(idx[n_held:])
    return torch.cat(train).sort().values, torch.cat(held).sort().values


def _require_both_classes(name: str, y: Tensor, split: str) -> None:
    if int((y == 1).sum()) == 0 or int((y == 0).sum()) == 0:
        raise ValueError(
            f"labels: the {split} split for probe {name!r} needs both harmful and benign rows "
            f"(has {int((y == 1).sum())} harmful, {int((y == 0).sum())} benign); add data or change holdout"
        )


def _fit_logistic(x: Tensor, y: Tensor, *, l2: float, max_iter: int) -> tuple[Tensor, float]:
    """Class-balanced L2 logistic regression on standardized features; returns raw-space (w, b)."""
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))  # constant columns carry no signal
    z = (x - mean) / std
    pos = float((y == 1).sum())
    neg = float((y == 0).sum())
    # Each class contributes half of the loss, whatever its size.
    sample_weight = torch.where(y == 1, 0.5 / pos, 0.5 / neg).double()
    target = y.double()
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
        history_size=20, line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        logits = z @ w + b
        loss = (sample_weight * torch.nn.functional.binary_cross_entropy_with_logits(
            logits, target, reduction="none")).sum() + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w_std, b_std = w.detach(), float(b.detach())
    w_raw = w_std / std
    return w_raw, b_std - float((w_raw * mean).sum())
