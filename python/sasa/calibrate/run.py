"""``calibrate``: SASA features for a labelled manifest, then a fitted and evaluated probe."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from sasa._types import PathLike
from sasa.config import SASAConfig
from sasa.data.manifest import Example, batches, check_images_supported, encode_batch, read_manifest
from sasa.data.prompt_format import PromptFormat
from sasa.guard.apply import apply_sasa
from sasa.metrics import ProbeMetrics
from sasa.probe.fingerprint import model_fingerprint
from sasa.probe.fit import COMBINED
from sasa.probe.sasa_probe import SASAProbe


@dataclass
class CalibrationReport:
    """What :func:`calibrate` measured: held-out metrics per probe and where the plots went."""

    metrics: dict[str, ProbeMetrics]
    num_examples: int
    plots: list[Path] = field(default_factory=list)
    #: The calibration features ``[N, F]`` and labels ``[N]`` (for plots made later).
    features: Optional[Tensor] = field(default=None, repr=False)
    labels: Optional[Tensor] = field(default=None, repr=False)

    def summary(self) -> str:
        """A table: each probe's held-out AUROC, accuracy, TPR, FPR and threshold."""
        width = max(16, *(len(name) + 2 for name in self.metrics))
        lines = [f"{'probe':<{width}}{'AUROC':>8}{'acc':>8}{'TPR':>8}{'FPR':>8}{'thresh':>9}{'n(h/b)':>10}"]
        for name, m in self.metrics.items():
            # The combined row is the decision over every probe at its own threshold: it has none of its own.
            threshold = f"{'-':>9}" if name == COMBINED else f"{m.threshold:>9.4f}"
            lines.append(
                f"{name:<{width}}{m.auroc:>8.3f}{m.accuracy:>8.3f}{m.tpr:>8.3f}{m.fpr:>8.3f}{threshold}"
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
    prompt_format: Optional[PromptFormat] = None,
    raw_prompt: bool = False,
    progress: bool = True,
) -> tuple[Tensor, list[Example]]:
    """SASA features ``[N, F]`` for ``examples`` (in the returned order), with a progress bar.

    Prompts are formatted with ``prompt_format`` (default: the processor's chat template unless
    ``raw_prompt``).
    """
    from tqdm.auto import tqdm

    check_images_supported(processor, examples)
    fmt = prompt_format if prompt_format is not None else PromptFormat.of(processor, raw=raw_prompt)
    guard = apply_sasa(model, config, tokenizer=processor)
    device = next(model.parameters()).device
    rows: list[Tensor] = []
    ordered: list[Example] = []
    try:
        with tqdm(total=len(examples), desc="SASA features", unit="prompt", disable=not progress) as bar:
            for batch in batches(examples, batch_size):
                inputs = encode_batch(processor, batch, prompt_format=fmt, device=device)
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
        processor: its tokenizer or processor. Prompts are formatted with its chat template when
            it has one (unless ``raw_prompt``); the probe records that format
            (:attr:`SASAProbe.prompt_format`) and the guard then formats and checks its inputs the
            same way.
        data: a JSONL manifest path (see :mod:`sasa.data`) or parsed examples.
        config: which layers and projection; its ``threshold`` is replaced by the fitted one.
        batch_size, target_fpr, holdout, seed: feature batching and :meth:`SASAProbe.fit` settings.
        raw_prompt: skip the chat template.
        progress: show a tqdm progress bar.
        plot_dir: where to save ``roc.png`` and ``scores.png`` (none when ``None``; skipped with a
            warning when matplotlib is not installed).

    The probe carries the model's fingerprint (:func:`sasa.model_fingerprint`), so it can be saved
    and is refused on any other model.
    """
    examples = read_manifest(data) if isinstance(data, (str, Path)) else list(data)
    fmt = PromptFormat.of(processor, raw=raw_prompt)
    fingerprint = model_fingerprint(model)  # before the long part: a meta-device model fails here
    features, ordered = extract_features(
        model, processor, examples, config, batch_size=batch_size, prompt_format=fmt, progress=progress
    )
    labels = torch.tensor([e.label for e in ordered])
    has_categories = any(e.category for e in ordered if e.label == 1)
    probe = SASAProbe.fit(
        features, labels,
        categories=[e.category for e in ordered] if has_categories else None,
        target_fpr=target_fpr, holdout=holdout, seed=seed, feature=config.feature,
        config=config, fingerprint=fingerprint, prompt_format=fmt,
    )
    report = CalibrationReport(metrics=probe.metrics, num_examples=len(ordered))
    report.features, report.labels = features, labels
    if plot_dir is not None:
        report.plots = save_plots(probe, features, labels, Path(plot_dir), model_name=_model_name(model))
    return probe, report


def save_plots(probe: SASAProbe, features: Tensor, labels: Tensor, directory: Path, *, model_name: str = "") -> list[Path]:
    """ROC curve and score histograms of the first (``any``) probe on its held-out rows.

    Returns the paths written; ``[]`` (with a warning) when matplotlib is not installed, so a
    missing plotting library never costs the user the probe.
    """
    from sasa.calibrate.plots import plot_histograms, plot_roc, plotting_available

    if probe.holdout_rows is None:
        raise ValueError("probe: has no held-out rows (plots need a probe fresh from SASAProbe.fit)")
    if not plotting_available():
        return []
    directory.mkdir(parents=True, exist_ok=True)
    held = probe.holdout_rows
    scores = probe.predict_proba(features[held])[:, 0].double()
    y = labels[held]
    name = probe.categories[0]
    m = probe.metrics[name]
    config = probe.config
    where = "" if config is None else f", blocks {config.safety_layer}->{config.fused_layer}, scope {config.scope}"
    subject = f"probe '{name}'{where}" + (f"\n{model_name}" if model_name else "")
    return [
        plot_roc(scores, y, directory / "roc.png", title=f"SASA ROC (held-out), {subject}", auroc=m.auroc,
                 operating_point=(m.fpr, m.tpr)),
        plot_histograms(scores, y, directory / "scores.png", title=f"SASA scores (held-out), {subject}",
                        threshold=m.threshold),
    ]


def _model_name(model: nn.Module) -> str:
    path = getattr(model.config, "_name_or_path", "") or ""
    return f"{type(model).__name__} {path}".strip()
