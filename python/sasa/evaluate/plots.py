"""``eval.png``: attack success rate without and with the guard, overall and per group."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_asr(result: Any, path: Path) -> Path:
    """Grouped bars (unguarded, guarded) of ASR for all rows, each category and each carrier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = [("all", result.overall)]
    groups += [(f"category: {k}", v) for k, v in result.by_category.items()]
    groups += [(f"carrier: {k}", v) for k, v in result.by_carrier.items()]
    groups = [(name, m) for name, m in groups if m["harmful"]]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 + 0.9 * len(groups)), 4))
    if not groups:
        ax.text(0.5, 0.5, "no harmful rows: no attack success rate", ha="center", va="center", transform=ax.transAxes)
    else:
        x = np.arange(len(groups))
        unguarded = [m["asr_unguarded"] for _, m in groups]
        guarded = [m["asr_guarded"] for _, m in groups]
        ax.bar(x - 0.2, unguarded, 0.4, label="unguarded model")
        ax.bar(x + 0.2, guarded, 0.4, label="with the SASA guard")
        for xi, (u, g) in enumerate(zip(unguarded, guarded)):
            ax.text(xi - 0.2, u + 0.01, f"{u:.2f}", ha="center", fontsize=7)
            ax.text(xi + 0.2, g + 0.01, f"{g:.2f}", ha="center", fontsize=7)
        ax.set_xticks(x, [f"{name}\n(n={m['harmful']})" for name, m in groups], fontsize=8,
                      rotation=20 if len(groups) > 3 else 0,
                      ha="right" if len(groups) > 3 else "center")
        ax.legend(fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("attack success rate (harmful rows not refused)")
    ax.set_title("sasa eval: attack success rate (refusal = phrase match)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
