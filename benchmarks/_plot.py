"""Plots of benchmark records: time against a swept size, one line per series, one panel per
facet (e.g. dtype and threads), and below it each series' time ratio to a baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

BASELINE_STYLE = {"eager": ("0.45", "--", "s"), "compile": ("black", ":", "^"), "floor": ("0.7", "-", "v")}


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def have_matplotlib() -> bool:
    return _pyplot() is not None


def _tick_us(us: float, _pos: Any = None) -> str:
    return f"{us:g} us" if us < 1e3 else (f"{us / 1e3:g} ms" if us < 1e6 else f"{us / 1e6:g} s")


def plot_sweep(records: Sequence[Mapping[str, Any]], path: Path, *, x: str, facets: Sequence[str],
               baseline: str, title: str, xlabel: str, series: str = "backend",
               order: Sequence[str] = ()) -> Optional[Path]:
    """Write one PNG (log-log time panels, ratio panels below); None without matplotlib or data."""
    plt = _pyplot()
    recs = [r for r in records if isinstance(r.get("median_us"), float) and r["median_us"] == r["median_us"]]
    if plt is None or len({r[x] for r in recs}) < 2:
        return None
    from matplotlib.ticker import FuncFormatter, NullFormatter

    keys = sorted({tuple(r[f] for f in facets) for r in recs}, key=str)
    names = [n for n in list(order) + sorted({r[series] for r in recs}) if any(r[series] == n for r in recs)]
    names = list(dict.fromkeys(names))
    fig, axes = plt.subplots(2, len(keys), figsize=(4.3 * len(keys) + 0.8, 7.2), squeeze=False)
    color = 0
    styles = {}
    for name in names:
        if name in BASELINE_STYLE:
            styles[name] = BASELINE_STYLE[name]
        else:
            styles[name], color = (f"C{color}", "-", "o"), color + 1
    for j, key in enumerate(keys):
        mine = [r for r in recs if tuple(r[f] for f in facets) == key]
        base = {r[x]: r["median_us"] for r in mine if r[series] == baseline}
        top, bottom = axes[0][j], axes[1][j]
        for name in names:
            pts = sorted((r[x], r["median_us"]) for r in mine if r[series] == name)
            c, ls, mk = styles[name]
            top.plot([p[0] for p in pts], [p[1] for p in pts], color=c, linestyle=ls, marker=mk, label=name)
            ratio = [(px, py / base[px]) for px, py in pts if px in base and name != baseline]
            if ratio:
                bottom.plot([p[0] for p in ratio], [p[1] for p in ratio], color=c, linestyle=ls, marker=mk)
        bottom.axhline(1.0, color="0.4", linewidth=1)
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ticks = sorted({r[x] for r in mine})
            ax.set_xticks(ticks)
            ax.set_xticklabels([str(t) for t in ticks], fontsize=7, rotation=45 if len(ticks) > 5 else 0)
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_xlabel(xlabel)
        top.yaxis.set_major_formatter(FuncFormatter(_tick_us))
        bottom.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}x"))
        top.set_title(", ".join(f"{f}={v}" for f, v in zip(facets, key)), fontsize=9)
        if j == 0:
            top.set_ylabel("time per call")
            bottom.set_ylabel(f"time / {baseline} time\n(above 1 = slower)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05 * (-(-len(labels) // 6)), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
