"""Shared benchmark harness: machine description, timers, long-format CSV, tables and plots.

Every script in ``benchmarks/`` imports this module by path (``sys.path`` gets the script's own
folder), so it works from a plain checkout or with only the package installed. Nothing here knows
about SASA ops: the helpers take *records* (plain dicts, one per measurement) and are meant to be
reused by other benchmarks, e.g. a time-to-first-token benchmark::

    import _common as H
    info = H.machine_info("cuda")
    t = H.time_fn(lambda: model.generate(**inputs, max_new_tokens=1), "cuda", budget_s=2.0)
    records.append(H.record(info, op="ttft", backend="sasa-last", shape="B=4 T=512",
                            rows=4, d=4096, dtype="bfloat16", timing=t, prompt_len=512))
    H.write_csv(out / "ttft.csv", records)                     # extra keys become extra columns
    H.plot_sweep(records, out / "ttft.png", x="prompt_len", series="backend",
                 baseline="generate", title="TTFT", machine=info["machine"])
    print(H.format_table(records, ["op", "shape", "backend", "median_us"]))

Conventions:

- Times are microseconds per call: ``median_us``, ``p20_us``, ``p80_us`` (20th/80th percentiles).
- ``speedup_vs_X = median_us(X) / median_us(this)``, measured in the same run: > 1 means faster
  than ``X``. Speed is reported, never asserted.
- On CUDA the timer is ``triton.testing.do_bench`` (GPU time between CUDA events, L2 flushed
  before each call), and ``host_us`` is the wall-clock cost per call of a back-to-back loop (what
  a Python caller pays when launch overhead dominates). On CPU both are the wall-clock loop.
"""

from __future__ import annotations

import csv
import datetime as _dt
import gc
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

#: Columns every CSV written by :func:`write_csv` starts with (extra record keys follow, in order).
STANDARD_COLUMNS = (
    "op", "backend", "shape", "rows", "d", "dtype", "threads",
    "median_us", "p20_us", "p80_us", "gbps", "machine", "version", "date",
)


# --------------------------------------------------------------------------------------------
# Imports and machine description
# --------------------------------------------------------------------------------------------


def import_sasa_kernels():
    """Import ``sasa_kernels``: the installed package, else the checkout this file lives in."""
    try:
        import sasa_kernels  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT))
        import sasa_kernels  # noqa: F401
    return sys.modules["sasa_kernels"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5,
        )
        if out.returncode != 0:
            return ""
        commit = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def load_average() -> float:
    """1-minute load average (NaN where unknown). Compare with ``cpu_count``: on a shared machine a
    load near the core count means the timings include waiting for other processes."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return float("nan")


def busy_warning(info: Mapping[str, Any]) -> str:
    """A warning line when the machine was busy at the start or now (``""`` otherwise)."""
    cores = info.get("cpu_count") or 1
    now = load_average()
    before = info.get("loadavg", float("nan"))
    worst = max(v for v in (now, before, 0.0) if v == v)
    if worst < 0.5 * cores:
        return ""
    return (f"WARNING: the machine was busy (1-min load average {before} at start, {now} at the end, "
            f"{cores} cores): timings include time spent waiting for other processes")


def utc_now() -> str:
    """UTC timestamp, ISO 8601 to the second (``2026-11-27T21:30:00Z``)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def machine_info(device: str = "cpu") -> dict:
    """Describe the machine and software a benchmark runs on.

    ``machine`` is a short human name: the GPU name on CUDA, else the CPU model and core count.
    ``threads`` is ``torch.get_num_threads()`` at the time of the call.
    """
    device_type = torch.device(device).type
    cpu = _cpu_model()
    cores = os.cpu_count() or 0
    info: dict[str, Any] = {
        "device": device_type,
        "cpu_model": cpu,
        "cpu_count": cores,
        "threads": torch.get_num_threads(),
        "gpu_name": "",
        "gpu_count": 0,
        "cuda": torch.version.cuda or "",
        "torch": torch.__version__,
        "triton": "",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sasa_kernels": "",
        "git": _git_commit(),
        "date": utc_now(),
        "loadavg": load_average(),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        pass
    try:
        info["sasa_kernels"] = import_sasa_kernels().__version__
        from sasa_kernels.backends import compiled  # the C++/CUDA extension, when built

        info["extension"] = compiled.build_info()
    except ImportError:
        pass
    if device_type == "cuda" and torch.cuda.is_available():
        info["gpu_name"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
        info["machine"] = info["gpu_name"]
    else:
        info["machine"] = f"{cpu} ({cores} cores)"
    version = info["sasa_kernels"] or "?"
    info["version"] = f"{version}+{info['git']}" if info["git"] else version
    return info


def describe_machine(info: Mapping[str, Any]) -> str:
    """One line: machine, threads and software versions."""
    parts = [
        str(info["machine"]),
        f"threads={info['threads']}",
        f"torch {info['torch']}",
        f"triton {info['triton'] or 'absent'}",
        f"sasa_kernels {info['version']}",
    ]
    if info.get("cuda"):
        parts.insert(2, f"CUDA {info['cuda']}")
    return ", ".join(parts)


def safe_name(text: str) -> str:
    """``text`` reduced to ``[A-Za-z0-9._-]`` (for folder names such as ``NVIDIA-H100-80GB-HBM3``)."""
    out = "".join(c if c.isalnum() or c in "._-" else "-" for c in text.strip())
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-") or "unknown"


def default_results_dir(name: str) -> Path:
    """``benchmarks/results/<name>-<UTC date>``."""
    return RESULTS_DIR / f"{safe_name(name)}-{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%d')}"


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Microseconds per call. ``timer`` says how they were measured."""

    median_us: float
    p20_us: float
    p80_us: float
    samples: int
    timer: str
    host_us: float = float("nan")

    def as_dict(self) -> dict:
        return asdict(self)


def _percentiles(values: Sequence[float]) -> tuple[float, float, float]:
    vals = sorted(values)

    def q(p: float) -> float:  # linear interpolation, like numpy's default
        pos = p * (len(vals) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(vals) - 1)
        return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)

    return q(0.5), q(0.2), q(0.8)


def sync(device: str) -> None:
    """Wait for queued work on ``device`` (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_wall(
    fn: Callable[[], Any],
    device: str = "cpu",
    *,
    budget_s: float = 0.2,
    warmup_s: float = 0.05,
    min_reps: int = 5,
    max_samples: int = 200,
    min_sample_s: float = 1e-3,
) -> Timing:
    """Wall-clock loop: warm up, then time samples of back-to-back calls; per-call statistics.

    Calls shorter than ``min_sample_s`` are batched (``inner`` calls per sample) so the clock's
    resolution does not matter. Stops after ``budget_s`` of samples, but never with fewer than
    ``min_reps`` samples (a slow call therefore costs about ``(min_reps + 2)`` calls). On CUDA the
    device is synchronized around each sample, so the result includes GPU time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        sync(device)
        start = time.perf_counter()
        fn()  # first call (may allocate, load, autotune)
        sync(device)
        first = time.perf_counter() - start
        est = first
        warm_start = time.perf_counter()
        while True:  # at least one warm call, then until warmup_s has passed
            t0 = time.perf_counter()
            fn()
            sync(device)
            est = min(est, time.perf_counter() - t0)
            if time.perf_counter() - warm_start >= warmup_s:
                break
        inner = max(1, int(min_sample_s / max(est, 1e-9)))
        samples: list[float] = []
        total = 0.0
        while len(samples) < max_samples and (total < budget_s or len(samples) < min_reps):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            sync(device)
            dt = time.perf_counter() - t0
            samples.append(dt / inner)
            total += dt
    finally:
        if was_enabled:
            gc.enable()
    med, p20, p80 = _percentiles(samples)
    return Timing(med * 1e6, p20 * 1e6, p80 * 1e6, len(samples) * inner, "wall", med * 1e6)


def time_host_loop(fn: Callable[[], Any], device: str, *, budget_s: float = 0.02, min_calls: int = 10) -> float:
    """Microseconds per call of ``fn`` called back to back, with one synchronize at the end.

    This is the steady-state cost a caller sees: the larger of the host-side overhead (Python,
    dispatch, launch) and the device time.
    """
    fn()
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    one = max(time.perf_counter() - t0, 1e-7)
    n = max(min_calls, min(10000, int(budget_s / one)))
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / n * 1e6


def time_cuda(fn: Callable[[], Any], *, rep_ms: int = 100, warmup_ms: int = 25, host: bool = True) -> Timing:
    """GPU time per call with ``triton.testing.do_bench`` (CUDA events, L2 flushed before each call).

    Falls back to a CUDA-event loop when triton is missing. ``host_us`` is filled by
    :func:`time_host_loop` unless ``host=False``.
    """
    try:
        from triton.testing import do_bench

        med, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        timing = Timing(med * 1e3, p20 * 1e3, p80 * 1e3, -1, "do_bench")
    except ImportError:
        timing = _time_cuda_events(fn, rep_ms=rep_ms, warmup_ms=warmup_ms)
    if host:
        timing.host_us = time_host_loop(fn, "cuda")
    return timing


def _time_cuda_events(fn: Callable[[], Any], *, rep_ms: int, warmup_ms: int) -> Timing:
    flush = torch.empty(256 * 1024 * 1024 // 4, dtype=torch.int32, device="cuda")
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        fn()
    end.record()
    torch.cuda.synchronize()
    est_ms = max(start.elapsed_time(end) / 5, 1e-4)
    for _ in range(max(1, int(warmup_ms / est_ms))):
        fn()
    n = max(5, min(1000, int(rep_ms / est_ms)))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for i in range(n):
        flush.zero_()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    med, p20, p80 = _percentiles([s.elapsed_time(e) for s, e in zip(starts, ends)])
    return Timing(med * 1e3, p20 * 1e3, p80 * 1e3, n, "cuda_events")


def time_fn(fn: Callable[[], Any], device: str = "cpu", *, budget_s: float = 0.2, min_reps: int = 5) -> Timing:
    """Time ``fn`` on ``device``: :func:`time_cuda` on CUDA, :func:`time_wall` elsewhere.

    ``budget_s`` is roughly the measuring time per call site (warm-up excluded); ``min_reps`` the
    fewest samples the wall-clock timer takes however slow the call (do_bench decides its own).
    """
    if torch.device(device).type == "cuda":
        return time_cuda(fn, rep_ms=max(10, int(budget_s * 1000)), warmup_ms=max(5, int(budget_s * 250)))
    return time_wall(fn, device, budget_s=budget_s, min_reps=min_reps)


# --------------------------------------------------------------------------------------------
# Records and CSV
# --------------------------------------------------------------------------------------------


def record(info: Mapping[str, Any], *, op: str, backend: str, shape: str, rows: int, d: int, dtype: str,
           timing: Optional[Timing] = None, nbytes: Optional[float] = None, **extra: Any) -> dict:
    """One long-format row: the :data:`STANDARD_COLUMNS`, then ``extra`` keys in order.

    ``gbps`` is ``nbytes / median`` (decimal GB/s) when ``nbytes`` is given. A missing timing (a
    failed or skipped measurement) leaves the times NaN; say why in an ``note=`` extra.
    """
    nan = float("nan")
    med = timing.median_us if timing else nan
    row = {
        "op": op, "backend": backend, "shape": shape, "rows": rows, "d": d, "dtype": dtype,
        "threads": info.get("threads", torch.get_num_threads()),
        "median_us": med,
        "p20_us": timing.p20_us if timing else nan,
        "p80_us": timing.p80_us if timing else nan,
        "gbps": (nbytes / (med * 1e3)) if (nbytes and med == med and med > 0) else nan,
        "machine": info.get("machine", ""),
        "version": info.get("version", ""),
        "date": info.get("date", utc_now()),
    }
    if nbytes:
        row["bytes"] = int(nbytes)
    if timing is not None:
        row["host_us"] = timing.host_us
        row["timer"] = timing.timer
        row["samples"] = timing.samples
    row.update(extra)
    return row


def _fmt_cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return ""
        return f"{value:.6g}"
    return "" if value is None else str(value)


def write_csv(path: os.PathLike | str, records: Iterable[Mapping[str, Any]],
              columns: Optional[Sequence[str]] = None) -> Path:
    """Write ``records`` as a long-format CSV (one row per measurement).

    Columns: ``columns`` if given, else :data:`STANDARD_COLUMNS` present in any record followed by
    every other key in first-seen order. Missing values and NaN are written as empty cells.
    """
    records = list(records)
    if columns is None:
        seen: list[str] = []
        for rec in records:
            for key in rec:
                if key not in seen:
                    seen.append(key)
        columns = [c for c in STANDARD_COLUMNS if c in seen] + [c for c in seen if c not in STANDARD_COLUMNS]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for rec in records:
            writer.writerow([_fmt_cell(rec.get(c)) for c in columns])
    return path


def read_csv(path: os.PathLike | str) -> list[dict]:
    """Read a CSV from :func:`write_csv`; numeric-looking cells become int/float, empty -> NaN."""
    out = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            conv: dict[str, Any] = {}
            for key, val in row.items():
                if val == "":
                    conv[key] = float("nan")
                    continue
                try:
                    conv[key] = int(val)
                except ValueError:
                    try:
                        conv[key] = float(val)
                    except ValueError:
                        conv[key] = val
            out.append(conv)
    return out


def write_json(path: os.PathLike | str, obj: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path


def add_speedups(records: list[dict], baselines: Sequence[str], *, group_keys: Sequence[str],
                 value: str = "median_us", series: str = "backend") -> None:
    """Add ``speedup_vs_<b>`` = value(b) / value(record) within each group (same ``group_keys``).

    E.g. ``add_speedups(recs, ["eager", "compile"], group_keys=["op", "shape", "dtype", "threads"])``.
    """
    index: dict[tuple, dict[str, float]] = {}
    for rec in records:
        key = tuple(rec.get(k) for k in group_keys)
        index.setdefault(key, {})[rec[series]] = rec.get(value, float("nan"))
    for rec in records:
        key = tuple(rec.get(k) for k in group_keys)
        mine = rec.get(value, float("nan"))
        for base in baselines:
            ref = index[key].get(base, float("nan"))
            rec[f"speedup_vs_{base}"] = ref / mine if (mine == mine and ref == ref and mine > 0) else float("nan")


# --------------------------------------------------------------------------------------------
# Text tables
# --------------------------------------------------------------------------------------------


def fmt_us(us: Any) -> str:
    """Human time from microseconds: ``3.2 us``, ``41.0 us``, ``1.25 ms``, ``2.10 s``."""
    if not isinstance(us, (int, float)) or us != us:
        return "-"
    if us < 100:
        return f"{us:.1f} us"
    if us < 1e4:
        return f"{us:.0f} us" if us < 1000 else f"{us / 1e3:.2f} ms"
    if us < 1e6:
        return f"{us / 1e3:.1f} ms"
    return f"{us / 1e6:.2f} s"


def _tick_us(us: float) -> str:
    if us < 1e3:
        return f"{us:g} us"
    if us < 1e6:
        return f"{us / 1e3:g} ms"
    return f"{us / 1e6:g} s"


def fmt_ratio(x: Any) -> str:
    """``2.31x`` (``-`` for NaN/missing)."""
    if not isinstance(x, (int, float)) or x != x:
        return "-"
    return f"{x:.2f}x"


def fmt_num(x: Any, digits: int = 1) -> str:
    if not isinstance(x, (int, float)) or x != x:
        return "-"
    return f"{x:.{digits}f}"


def format_table(records: Sequence[Mapping[str, Any]], columns: Sequence[str],
                 headers: Optional[Sequence[str]] = None,
                 formatters: Optional[Mapping[str, Callable[[Any], str]]] = None) -> str:
    """Fixed-width text table of ``records``; ``formatters`` maps a column to a cell formatter.

    Numbers are right-aligned, text left-aligned. Returns the table as one string.
    """
    formatters = dict(formatters or {})
    headers = list(headers or columns)
    cells = []
    for rec in records:
        row = []
        for col in columns:
            val = rec.get(col)
            row.append(formatters[col](val) if col in formatters else _fmt_cell(val))
        cells.append(row)
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [
        all(_looks_numeric(r[i]) for r in cells if r[i] not in ("", "-")) and any(r[i] not in ("", "-") for r in cells)
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _looks_numeric(text: str) -> bool:
    t = text.replace(" us", "").replace(" ms", "").replace(" s", "").replace("x", "").replace("%", "")
    try:
        float(t.split(" ")[0])
        return True
    except ValueError:
        return False


def pivot_table(records: Sequence[Mapping[str, Any]], row_keys: Sequence[str], col_key: str,
                cell: Callable[[Mapping[str, Any]], str], *, col_order: Optional[Sequence[str]] = None,
                row_headers: Optional[Sequence[str]] = None) -> str:
    """Compact table: one line per distinct ``row_keys`` tuple, one column per ``col_key`` value.

    ``cell(record)`` renders the record that falls in each cell (``-`` where none does). Keeps the
    first-seen order of rows; columns follow ``col_order`` (then first-seen order).
    """
    rows: dict[tuple, dict[str, Mapping[str, Any]]] = {}
    cols: list[str] = list(col_order or [])
    for rec in records:
        key = tuple(rec.get(k) for k in row_keys)
        rows.setdefault(key, {})[str(rec[col_key])] = rec
        if str(rec[col_key]) not in cols:
            cols.append(str(rec[col_key]))
    cols = [c for c in cols if any(c in r for r in rows.values())]
    flat = []
    for key, by_col in rows.items():
        line = {f"_k{i}": v for i, v in enumerate(key)}
        line.update({c: cell(by_col[c]) if c in by_col else "-" for c in cols})
        flat.append(line)
    columns = [f"_k{i}" for i in range(len(row_keys))] + cols
    headers = list(row_headers or row_keys) + cols
    return format_table(flat, columns, headers)


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def _pyplot():
    """``matplotlib.pyplot`` with the Agg backend, or ``None`` when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def have_matplotlib() -> bool:
    return _pyplot() is not None


#: Fixed styles for the baselines so every plot reads the same way.
_BASELINE_STYLE = {
    "eager": {"color": "0.35", "linestyle": "--", "marker": "s"},
    "compile": {"color": "black", "linestyle": ":", "marker": "^"},
}


def _series_style(name: str, i: int) -> dict:
    if name in _BASELINE_STYLE:
        return dict(_BASELINE_STYLE[name])
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:cyan"]
    return {"color": colors[i % len(colors)], "linestyle": "-", "marker": "o"}


def plot_sweep(
    records: Sequence[Mapping[str, Any]],
    path: os.PathLike | str,
    *,
    x: str,
    y: str = "median_us",
    series: str = "backend",
    facets: Sequence[str] = (),
    baseline: Optional[str] = None,
    title: str = "",
    machine: str = "",
    xlabel: Optional[str] = None,
    ylabel: str = "time per call",
    logx: bool = True,
    logy: bool = True,
    series_order: Optional[Sequence[str]] = None,
) -> Optional[Path]:
    """One PNG: ``y`` against ``x``, one line per ``series`` value, one panel per ``facets`` combo.

    With ``baseline`` (a ``series`` value, e.g. ``"eager"``), a second row of panels shows the
    speedup ``y(baseline) / y(series)`` at the same ``x`` (log scale, a line at 1 = parity).
    Filter ``records`` to one sweep before calling (e.g. fixed ``d``). Returns the path, or
    ``None`` when matplotlib is missing or nothing is plottable (the caller may say so).
    """
    plt = _pyplot()
    if plt is None:
        return None
    recs = [r for r in records if isinstance(r.get(y), (int, float)) and r[y] == r[y] and r[y] > 0]
    if not recs:
        return None
    facet_vals = sorted({tuple(r.get(f) for f in facets) for r in recs}, key=lambda t: tuple(map(str, t)))
    names = list(series_order or [])
    for r in recs:
        if r[series] not in names:
            names.append(r[series])
    names = [n for n in names if any(r[series] == n for r in recs)]
    styles = {n: _series_style(n, i) for i, n in enumerate([n for n in names if n not in _BASELINE_STYLE])}
    styles.update({n: dict(_BASELINE_STYLE[n]) for n in names if n in _BASELINE_STYLE})

    from matplotlib import ticker

    def x_axis(ax, xs):
        if logx:
            ax.set_xscale("log", base=2)
        ticks = sorted(set(xs))
        if len(ticks) <= 12:  # label the measured points themselves: 1, 64, 4096 ...
            ax.set_xticks(ticks)
            ax.set_xticklabels([f"{t:g}" for t in ticks], rotation=45 if len(ticks) > 5 else 0, fontsize=8)
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())

    def y_log(ax, fmt):  # after plotting: the tick density depends on the data's range
        ax.set_yscale("log")
        lo, hi = ax.get_ylim()
        narrow = hi / max(lo, 1e-300) < 8
        subs = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0) if narrow else (1.0, 2.0, 5.0)
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: fmt(v)))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())

    y_fmt = _tick_us if y.endswith("_us") else (lambda v: f"{v:g}")
    nrows = 2 if baseline else 1
    ncols = max(1, len(facet_vals))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols + 0.6, 3.3 * nrows + 1.3), squeeze=False)
    for j, fv in enumerate(facet_vals):
        in_facet = [r for r in recs if tuple(r.get(f) for f in facets) == fv]
        xs = [r[x] for r in in_facet]
        base_at = {r[x]: r[y] for r in in_facet if baseline is not None and r[series] == baseline}
        ax = axes[0][j]
        for name in names:
            pts = sorted((r[x], r[y]) for r in in_facet if r[series] == name)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, **styles[name])
        ax.set_title(", ".join(f"{f}={v}" for f, v in zip(facets, fv)), fontsize=10)
        if j == 0:
            ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if logy:
            y_log(ax, y_fmt)
        x_axis(ax, xs)
        ax.set_xlabel(xlabel or x)
        if baseline is not None:
            axr = axes[1][j]
            for name in names:
                pts = sorted((r[x], base_at[r[x]] / r[y]) for r in in_facet if r[series] == name and r[x] in base_at)
                if pts and name != baseline:
                    axr.plot([p[0] for p in pts], [p[1] for p in pts], label=name, **styles[name])
            axr.axhline(1.0, color="0.35", linestyle="--", linewidth=1)
            if j == 0:
                axr.set_ylabel(f"speedup vs {baseline}\n(x, > 1 = faster)")
            y_log(axr, lambda v: f"{v:g}x")
            axr.grid(True, which="both", alpha=0.3)
            x_axis(axr, xs)
            axr.set_xlabel(xlabel or x)
    handles, labels = [], []
    for j in range(ncols):
        for h, lab in zip(*axes[0][j].get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    # A narrow (one-panel) figure gets a two-column legend so long labels are not cut off.
    legend_cols = min(len(labels), 6 if ncols > 1 else 2)
    fig.legend(handles, labels, loc="lower center", fontsize=9, ncol=legend_cols, frameon=False)
    fig.suptitle(f"{title}\n{machine}" if machine else title, fontsize=11)
    legend_rows = -(-len(labels) // legend_cols)
    fig.tight_layout(rect=(0, (0.06 if nrows == 2 else 0.1) * legend_rows, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
