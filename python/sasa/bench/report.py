"""Turning measurements into records (ratios against the baseline of the same run), a table, a
CSV and a plot.

A record is one series at one point: medians and 20th/80th percentiles of its samples, and ratios
against the baseline series measured in the same rounds. A ratio's spread comes from the paired
per-round ratios (series sample / baseline sample of the same round), which cancels slow drifts
of the machine's speed. Ratios are ``series / baseline``: above 1 means slower than the baseline.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from sasa.bench.interleave import Measurement
from sasa.bench.series import Series

__all__ = ["format_table", "plot_records", "summarize", "write_csv"]

#: Columns of :func:`write_csv`, in order (extra record keys follow).
COLUMNS = (
    "model", "series", "batch", "prompt_len", "samples",
    "ttft_ms", "ttft_p20_ms", "ttft_p80_ms", "ttft_ratio", "ttft_ratio_p20", "ttft_ratio_p80", "expected_ttft_ratio",
    "per_token_ms", "per_token_p20_ms", "per_token_p80_ms", "per_token_ratio", "per_token_ratio_p20",
    "per_token_ratio_p80", "peak_mib", "peak_ratio",
)
NAN = float("nan")


def _quantile(values: Sequence[float], q: float) -> float:
    vals = sorted(v for v in values if v == v)
    if not vals:
        return NAN
    pos = q * (len(vals) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def _ratio(a: float, b: float) -> float:
    return a / b if (a == a and b == b and b > 0) else NAN


def summarize(measurements: Sequence[Measurement], series: Sequence[Series] = (), *,
              baseline: str = "unguarded") -> list[dict[str, Any]]:
    """One record per measurement, with ratios against ``baseline`` at the same point.

    ``series`` (the objects that were measured) supply ``expected_ttft_ratio``.
    """
    by_name = {s.name: s for s in series}
    groups: dict[tuple, dict[str, Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.point.label, m.point.batch, m.point.prompt_len), {})[m.series] = m
    records = []
    for (label, batch, length), found in groups.items():
        base = found.get(baseline)
        for name, m in found.items():
            rec: dict[str, Any] = {"model": label, "series": name, "batch": batch, "prompt_len": length,
                                   "samples": len(m.ttft_ms)}
            for key, values in (("ttft", m.ttft_ms), ("per_token", m.per_token_ms)):
                rec[f"{key}_ms"] = _quantile(values, 0.5)
                rec[f"{key}_p20_ms"] = _quantile(values, 0.2)
                rec[f"{key}_p80_ms"] = _quantile(values, 0.8)
                if base is None:
                    continue
                base_values = getattr(base, f"{key}_ms")
                base_at = dict(zip(base.round_index, base_values))
                paired = [_ratio(v, base_at.get(r, NAN)) for r, v in zip(m.round_index, values)]
                rec[f"{key}_ratio"] = _ratio(rec[f"{key}_ms"], _quantile(base_values, 0.5))
                rec[f"{key}_ratio_p20"] = _quantile(paired, 0.2)
                rec[f"{key}_ratio_p80"] = _quantile(paired, 0.8)
            rec["peak_mib"] = m.peak_mib
            rec["peak_ratio"] = _ratio(m.peak_mib, base.peak_mib) if base is not None else NAN
            expected = NAN
            if name in by_name and base is not None:
                expected = by_name[name].expected_ttft_ratio(_quantile(base.ttft_ms, 0.5),
                                                              _quantile(base.per_token_ms, 0.5))
            rec["expected_ttft_ratio"] = expected
            records.append(rec)
    return records


def _ms(v: Any) -> str:
    if not isinstance(v, (int, float)) or v != v:
        return "-"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def _x(v: Any, flag: bool) -> str:
    if not isinstance(v, (int, float)) or v != v:
        return "-"
    return f"{v:.2f}x" + ("*" if flag and v < 1.0 else "")


def format_table(records: Sequence[Mapping[str, Any]], *, baseline: str = "unguarded") -> str:
    """A fixed-width table: per point and series, absolute times and ratios (with the p20..p80
    spread of the paired ratios). A ratio below 1 for a non-baseline series is marked ``*``."""
    head = ["model", "B", "T", "series", "TTFT ms", "TTFT ratio", "p20..p80", "expected", "ms/token",
            "token ratio", "peak MiB"]
    rows = []
    marked = False
    for r in records:
        other = r["series"] != baseline
        flag = other and any(isinstance(r.get(k), float) and r[k] < 1.0 for k in ("ttft_ratio", "per_token_ratio"))
        marked = marked or flag
        spread = (f"{r['ttft_ratio_p20']:.2f}..{r['ttft_ratio_p80']:.2f}"
                  if other and r.get("ttft_ratio_p20", NAN) == r.get("ttft_ratio_p20", NAN) else "")
        rows.append([str(r.get("model", "")), str(r["batch"]), str(r["prompt_len"]), str(r["series"]),
                     _ms(r.get("ttft_ms")), _x(r.get("ttft_ratio"), other), spread,
                     _x(r.get("expected_ttft_ratio"), False), _ms(r.get("per_token_ms")),
                     _x(r.get("per_token_ratio"), other), _ms(r.get("peak_mib"))])
    if not any(row[0] for row in rows):
        head, rows = head[1:], [row[1:] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.append(f"ratio = series / {baseline} measured in the same rounds (above 1: slower); p20..p80: "
                 "spread of the per-round paired TTFT ratios; ms/token: median decode step")
    if marked:
        lines.append("* below 1: the guard does extra work, so it cannot be faster than the model alone; the "
                     "difference is noise (compare with the spread)")
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "" if v != v else f"{v:.6g}"
    return "" if v is None else str(v)


def write_csv(records: Iterable[Mapping[str, Any]], path: "os.PathLike[str] | str",
              extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Write the records as CSV, one row per series and point: :data:`COLUMNS`, then other record
    keys, then ``extra`` (the same value on every row, e.g. the machine)."""
    rows = [{k: _cell(v) for k, v in dict(r, **(extra or {})).items()} for r in records]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, list(dict.fromkeys([*COLUMNS, *(k for r in rows for k in r)])), restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_records(records: Sequence[Mapping[str, Any]], path: "os.PathLike[str] | str", *, title: str = "",
                 baseline: str = "unguarded") -> Optional[Path]:
    """One PNG: per batch size (columns), the TTFT ratio (expected ratios dashed), the per-token
    ratio and the peak memory against prompt length. None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except ImportError:
        return None
    batches = sorted({r["batch"] for r in records})
    names = list(dict.fromkeys(r["series"] for r in records))
    colors = {n: ("0.3" if n == baseline else f"C{i}") for i, n in enumerate(names)}
    panels = (("ttft_ratio", "TTFT / unguarded"), ("per_token_ratio", "per-token cost / unguarded"),
              ("peak_mib", "peak memory (MiB)"))
    fig, axes = plt.subplots(3, len(batches), figsize=(4.2 * len(batches) + 1.0, 8.4), squeeze=False)
    for j, batch in enumerate(batches):
        mine = [r for r in records if r["batch"] == batch]
        for i, (key, label) in enumerate(panels):
            ax = axes[i][j]
            for name in names:
                pts = sorted((r["prompt_len"], r.get(key, NAN)) for r in mine if r["series"] == name)
                if key != "peak_mib" and name == baseline:
                    continue
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colors[name], label=name)
                if key == "ttft_ratio":
                    exp = sorted((r["prompt_len"], r.get("expected_ttft_ratio", NAN)) for r in mine
                                 if r["series"] == name)
                    if any(e[1] == e[1] for e in exp):
                        ax.plot([p[0] for p in exp], [p[1] for p in exp], "--", color=colors[name], alpha=0.6,
                                label=f"{name} expected")
            if key != "peak_mib":
                ax.axhline(1.0, color="0.5", linewidth=0.8)
            ax.set_xscale("log", base=2)
            lengths = sorted({r["prompt_len"] for r in mine})
            ax.set_xticks(lengths)
            ax.set_xticklabels([str(n) for n in lengths], fontsize=8)
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.grid(True, alpha=0.3)
            ax.set_xlabel("prompt length (tokens)")
            if j == 0:
                ax.set_ylabel(label)
            if i == 0:
                ax.set_title(f"batch {batch}", fontsize=10)
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    columns = max(1, min(len(labels), 2 if len(batches) == 1 else 4))  # a narrow figure: a narrow legend
    fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.025 * -(-len(labels) // columns) + 0.01, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
