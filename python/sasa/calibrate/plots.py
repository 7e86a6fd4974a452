"""Calibration plots: ROC curve and benign-vs-harmful score histograms (PNG, matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from sasa.metrics import roc_curve


def plotting_available() -> bool:
    """Whether matplotlib is installed; warns once (on the ``sasa`` logger) when it is not."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        import logging

        logging.getLogger("sasa").warning(
            "sasa: matplotlib is not installed, so no plots were written; pip install 'sasa-kernels[hf]' (or matplotlib)"
        )
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(scores: torch.Tensor, labels: torch.Tensor, path: Path, *, title: str, auroc: float,
             operating_point: Optional[tuple[float, float]] = None) -> Path:
    plt = _pyplot()
    fpr, tpr = roc_curve(scores, labels)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr.numpy(), tpr.numpy(), label=f"probe (AUROC {auroc:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    if operating_point is not None:
        ax.scatter([operating_point[0]], [operating_point[1]], color="red", zorder=3, label="threshold")
    ax.set_xlabel("false positive rate (benign flagged)")
    ax.set_ylabel("true positive rate (harmful flagged)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_histograms(scores: torch.Tensor, labels: torch.Tensor, path: Path, *, title: str, threshold: float) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = torch.linspace(0, 1, 41).numpy()
    labels = labels.bool()
    ax.hist(scores[~labels].numpy(), bins=bins, alpha=0.6, label=f"benign (n={int((~labels).sum())})")
    ax.hist(scores[labels].numpy(), bins=bins, alpha=0.6, label=f"harmful (n={int(labels.sum())})")
    ax.axvline(threshold, color="red", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("probe probability (held-out rows)")
    ax.set_ylabel("rows")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
