"""``calibrate``: SASA features for a labelled manifest, then a fitted and evaluated probe."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .config import SASAConfig
from .data import Example, batches, encode_batch, read_manifest
from .guard import apply_sasa
from .metrics import ProbeMetrics
from .probe import SASAProbe, model_fingerprint

PathLike = Union[str, Path]


@dataclass
class CalibrationReport:
    """What :func:`calibrate` measured: held-out metrics per probe and where the plots went."""

    metrics: dict[str, ProbeMetrics]
    num_examples: int
    plots: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        width = max(16, *(len(name) + 2 for name in self.metrics))
        lines = [f"{'probe':<{width}}{'AUROC':>8}{'acc':>8}{'TPR':>8}{'FPR':>8}{'thresh':>9}{'n(h/b)':>10}"]
        for name, m in self.metrics.items():
            lines.append(
                f"{name:<{width}}{m.auroc:>8.3f}{m.accuracy:>8.3f}{m.tpr:>8.3f}{m.fpr:>8.3f}{m.threshold:>9.4f}"
                f"{f'{m.num_harmful}/{m.num_benign}':>10}"
            )
        return "\n".join(lines)


def extract_features(
    model: nn.Module,
    processor: Any,
    examples: Sequence[Example],
    config: SASAConfig,
    *,
    batch_size: int = 8,
    raw_prompt: bool = False,
    progress: bool = True,
) -> tuple[Tensor, list[Example]]:
    """SASA features ``[N, F]`` for ``examples`` (in the returned order), with a progress bar."""
    from tqdm.auto import tqdm

    guard = apply_sasa(model, config, tokenizer=processor)
    device = next(model.parameters()).device
    rows: list[Tensor] = []
    ordered: list[Example] = []
    try:
        with tqdm(total=len(examples), desc="SASA features", unit="prompt", disable=not progress) as bar:
            for batch in batches(examples, batch_size):
                inputs = encode_batch(processor, batch, raw_prompt=raw_prompt, device=device)
                rows.append(guard.features(**inputs).cpu())
                ordered.extend(batch)
                bar.update(len(batch))
    finally:
        guard.remove()
    return torch.cat(rows), ordered


def calibrate(
    model: nn.Module,
    processor: Any,
    data: Union[PathLike, Sequence[Example]],
    config: SASAConfig,
    *,
    batch_size: int = 8,
    target_fpr: float = 0.05,
    holdout: float = 0.2,
    seed: int = 0,
    raw_prompt: bool = False,
    progress: bool = True,
    plot_dir: Optional[PathLike] = None,
) -> tuple[SASAProbe, CalibrationReport]:
    """Fit a :class:`SASAProbe` for ``model`` on a labelled manifest.

    Args:
        model: a supported Hugging Face causal LM or vision-language model.
        processor: its tokenizer or processor (the chat template is applied when it has one).
        data: a JSONL manifest path (see :mod:`sasa.data`) or parsed examples.
        config: which layers and projection; its ``threshold`` is replaced by the fitted one.
        batch_size, target_fpr, holdout, seed: feature batching and :meth:`SASAProbe.fit` settings.
        raw_prompt: skip the chat template.
        progress: show a tqdm progress bar.
        plot_dir: where to save ``roc.png`` and ``scores.png`` (none when ``None``).
    """
    examples = read_manifest(data) if isinstance(data, (str, Path)) else list(data)
    features, ordered = extract_features(
        model, processor, examples, config, batch_size=batch_size, raw_prompt=raw_prompt, progress=progress
    )
    labels = torch.tensor([e.label for e in ordered])
    has_categories = any(e.category for e in ordered if e.label == 1)
    probe = SASAProbe.fit(
        features, labels,
        categories=[e.category for e in ordered] if has_categories else None,
        target_fpr=target_fpr, holdout=holdout, seed=seed, feature=config.feature,
        config=config, fingerprint=model_fingerprint(model),
    )
    report = CalibrationReport(metrics=probe.metrics, num_examples=len(ordered))
    if plot_dir is not None:
        report.plots = save_plots(probe, features, labels, Path(plot_dir))
    return probe, report


def save_plots(probe: SASAProbe, features: Tensor, labels: Tensor, directory: Path) -> list[Path]:
    """ROC curve and score histograms of the first (``any``) probe on its held-out rows."""
    from .plots import plot_histograms, plot_roc

    if probe.holdout_rows is None:
        raise ValueError("probe: has no held-out rows (plots need a probe fresh from SASAProbe.fit)")
    directory.mkdir(parents=True, exist_ok=True)
    held = probe.holdout_rows
    scores = probe.predict_proba(features[held])[:, 0].double()
    y = labels[held]
    m = probe.metrics[probe.categories[0]]
    return [
        plot_roc(scores, y, directory / "roc.png", title="SASA probe ROC (held-out)", auroc=m.auroc,
                 operating_point=(m.fpr, m.tpr)),
        plot_histograms(scores, y, directory / "scores.png", title="SASA probe scores (held-out)",
                        threshold=m.threshold),
    ]
