"""``layers.png`` (the four per-block measures against depth) and ``grid.png`` (the pair heat map)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_PANELS = (
    ("probe_auroc", "probe AUROC\n(k-fold CV)", (0.4, 1.02)),
    ("cosine_gap", "cosine gap\n(bb - bh)", None),
    ("fusion_similarity", "fusion similarity\n(image vs text twin)", None),
    ("refusal_rate", "refusal rate\n(logit lens, harmful)", (-0.02, 1.02)),
)


def plot_layers(result: Any, path: Path) -> Path:
    """Four stacked panels sharing the block axis; the recommended blocks drawn as vertical lines."""
    plt = _pyplot()
    s, f = result.recommended
    blocks = [layer.layer for layer in result.layers]
    fig, axes = plt.subplots(len(_PANELS), 1, figsize=(7, 8), sharex=True)
    for ax, (name, label, limits) in zip(axes, _PANELS):
        values = [getattr(layer, name) for layer in result.layers]
        if all(v is None for v in values):
            ax.text(0.5, 0.5, "not measured (see notes in locate.json)", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
        else:
            ys = [math.nan if v is None else v for v in values]
            ax.plot(blocks, ys, marker="o")
        ax.axvline(s, color="tab:red", linestyle="--", linewidth=1, label=f"safety block {s}")
        ax.axvline(f, color="tab:green", linestyle="--", linewidth=1, label=f"fused block {f}")
        ax.set_ylabel(label, fontsize=9)
        if limits is not None:
            ax.set_ylim(*limits)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    axes[-1].set_xlabel("decoder block (0-based; H after block i, last prompt token)")
    axes[-1].set_xticks(blocks if len(blocks) <= 40 else blocks[::max(1, len(blocks) // 20)])
    fig.suptitle("sasa locate: per-block measures")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_grid(result: Any, path: Path) -> Path:
    """Heat map of held-out AUROC over (safety block, fused block); the recommendation outlined."""
    import numpy as np

    plt = _pyplot()
    safety = sorted({c.safety_layer for c in result.grid})
    fused = sorted({c.fused_layer for c in result.grid})
    values = np.full((len(safety), len(fused)), np.nan)
    for cell in result.grid:
        values[safety.index(cell.safety_layer), fused.index(cell.fused_layer)] = cell.auroc
    fig, ax = plt.subplots(figsize=(max(4.8, 1.6 + 0.7 * len(fused)), max(3.4, 1.4 + 0.5 * len(safety))))
    low = max(0.0, float(np.nanmin(values)) - 0.01)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=low, vmax=1.0, aspect="auto", origin="lower")
    if len(safety) * len(fused) <= 400:
        middle = (low + 1.0) / 2
        for i in range(len(safety)):
            for j in range(len(fused)):
                if not np.isnan(values[i, j]):
                    ax.text(j, i, f"{values[i, j]:.3f}", ha="center", va="center", fontsize=7,
                            color="black" if values[i, j] > middle else "white")
    s, f = result.recommended
    i, j = safety.index(s), fused.index(f)
    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
    ax.set_xticks(range(len(fused)), [str(v) for v in fused])
    ax.set_yticks(range(len(safety)), [str(v) for v in safety])
    ax.set_xlabel("fused block f")
    ax.set_ylabel("safety block s")
    ax.set_title(f"held-out AUROC of a SASA probe (scope=last)\nred: recommended s={s}, f={f}", fontsize=9)
    fig.colorbar(image, ax=ax, label="AUROC")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
