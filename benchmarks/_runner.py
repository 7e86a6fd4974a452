"""The shared runner of the benchmark scripts here: machine, interleaved timing, records, output.

Each script in this folder is one concern (the kernels, the host overhead, time to first token)
and declares *what* to measure; this module says *how*, the same way for all of them:

- :func:`time_interleaved` times several callables in rounds, the order rotated every round, so
  no series always runs first (on CPU: wall clock, calls batched to at least ``min_sample_s``; on
  CUDA: events around each call with the L2 cache flushed first, plus the host-side cost).
- A *record* is a plain dict, one per series and point; :func:`write_csv` writes them as one
  long-format CSV (one row per series and point); :func:`format_table` prints them.
- Ratios are ``series time / baseline time`` measured in the same rounds: above 1 = slower.

Scripts import this file by path (``sys.path`` gets this folder), so they run from a plain
checkout. Nothing here imports ``sasa``; the kernel benchmarks need ``sasa_kernels`` and torch only.
"""

from __future__ import annotations

import csv
import datetime as dt
import gc
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


def import_sasa_kernels() -> Any:
    """``sasa_kernels``: the installed package, else the checkout this folder belongs to."""
    try:
        import sasa_kernels
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT))
        import sasa_kernels
    return sasa_kernels


def import_sasa() -> Any:
    """``sasa``: the installed package, else the checkout's ``python/`` folder (after sasa_kernels)."""
    import_sasa_kernels()
    try:
        import sasa
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT / "python"))
        import sasa
    return sasa


# --- the machine -------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine() or "unknown CPU"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return platform.machine() or "unknown CPU"


def _git_version() -> str:
    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""

    try:
        commit = git("rev-parse", "--short", "HEAD")
        return commit + ("-dirty" if commit and git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def load_average() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return float("nan")


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """The machine and software: ``machine`` (GPU name on CUDA, else CPU model and cores),
    ``threads``, versions, git commit, date and the 1-minute load average at the start."""
    sk = import_sasa_kernels()
    cores = os.cpu_count() or 1
    info: dict[str, Any] = {
        "device": torch.device(device).type, "cpu": _cpu_model(), "cores": cores,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "cuda": torch.version.cuda or "",
        "python": platform.python_version(), "sasa_kernels": sk.__version__, "git": _git_version(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "loadavg": load_average(),
    }
    # The backends automatic dispatch can use here, first choice first ("torch" alone on a CPU:
    # the extension is not built, so the kernels are the PyTorch reference).
    info["kernels"] = ",".join(sk.backends(info["device"])) or "?"
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = ""
    if info["device"] == "cuda":
        info["machine"] = torch.cuda.get_device_name(0)
    else:
        info["machine"] = f"{info['cpu']} ({cores} cores)"
    return info


def describe(info: Mapping[str, Any]) -> str:
    """One line: machine, threads, versions, the kernel backends available, load average at the start."""
    cuda = f", CUDA {info['cuda']}" if info.get("device") == "cuda" else ""
    return (f"{info['machine']}, threads={info['threads']}, torch {info['torch']}{cuda}, triton "
            f"{info.get('triton') or 'absent'}, sasa_kernels {info['sasa_kernels']}+{info.get('git') or '?'} "
            f"(backends {info.get('kernels') or '?'}), "
            f"load average {info['loadavg']}")


def busy_warning(info: Mapping[str, Any], threads: int) -> str:
    """A warning when the load average showed other work: at the start above half the cores, or
    at the end above this run's own ``threads`` plus half the cores. ``""`` otherwise."""
    cores = int(info.get("cores") or 1)
    start, end = info.get("loadavg", float("nan")), load_average()
    if not (start >= 0.5 * cores or end >= threads + 0.5 * cores):
        return ""
    return (f"WARNING: the machine was busy (1-min load average {start} at the start, {end} at the end, {cores} "
            f"cores, {threads} threads here): absolute times include waiting for other processes")


def results_dir(info: Mapping[str, Any]) -> Path:
    """``benchmarks/results/<machine>-<UTC date>``, the machine's name reduced to ``[A-Za-z0-9._-]``."""
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in str(info["machine"]))
    while "--" in name:
        name = name.replace("--", "-")
    return RESULTS_DIR / f"{name.strip('-') or 'unknown'}-{str(info['date'])[:10].replace('-', '')}"


# --- timing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Microseconds per call: median and 20th/80th percentiles of ``samples`` samples; ``host_us``
    is the back-to-back cost per call a Python caller sees (CUDA only; the median on CPU)."""

    median_us: float
    p20_us: float
    p80_us: float
    samples: int
    timer: str
    host_us: float


def quantile(values: Sequence[float], q: float) -> float:
    vals = sorted(values)
    pos = q * (len(vals) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _host_us(fn: Callable[[], Any], device: str, budget_s: float = 0.02) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    calls = max(10, min(10000, int(budget_s / max(time.perf_counter() - t0, 1e-7))))
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / calls * 1e6


def time_interleaved(fns: Mapping[str, Callable[[], Any]], device: str = "cpu", *, budget_s: float = 0.3,
                     min_samples: int = 10, max_samples: int = 500, min_sample_s: float = 1e-3) -> dict[str, Timing]:
    """Time every callable of ``fns`` in interleaved rounds; per-call statistics per name.

    Each callable is called once untimed (allocation, compilation, autotuning) and then once per
    round, rounds rotating the order, until ``budget_s`` seconds of rounds are spent and every
    series has ``min_samples`` samples (at most ``max_samples``). On CPU a sample is
    ``ceil(min_sample_s / one call)`` calls back to back, so the clock's resolution never matters.
    """
    names = list(fns)
    cuda = torch.device(device).type == "cuda"
    inner: dict[str, int] = {}
    for name in names:
        fns[name]()
        _sync(device)
        t0 = time.perf_counter()
        fns[name]()
        _sync(device)
        inner[name] = 1 if cuda else max(1, math.ceil(min_sample_s / max(time.perf_counter() - t0, 1e-9)))
    flush = torch.empty(64 * 2**20, dtype=torch.int32, device=device) if cuda else None
    samples: dict[str, list[float]] = {n: [] for n in names}
    gc_was_on = gc.isenabled()
    gc.disable()
    start = time.perf_counter()
    try:
        rnd = 0
        while rnd < max_samples and (rnd < min_samples or time.perf_counter() - start < budget_s):
            order = names[rnd % len(names):] + names[: rnd % len(names)]
            events = []
            for name in order:
                fn = fns[name]
                if cuda:
                    flush.zero_()  # the L2 cache holds nothing of the inputs
                    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    begin.record()
                    fn()
                    end.record()
                    events.append((name, begin, end))
                    continue
                t0 = time.perf_counter()
                for _ in range(inner[name]):
                    fn()
                samples[name].append((time.perf_counter() - t0) / inner[name] * 1e6)
            if events:
                torch.cuda.synchronize()
                for name, begin, end in events:
                    samples[name].append(begin.elapsed_time(end) * 1e3)
            rnd += 1
    finally:
        if gc_was_on:
            gc.enable()
    out = {}
    for name in names:
        vals = samples[name]
        med = quantile(vals, 0.5)
        host = _host_us(fns[name], device) if cuda else med
        out[name] = Timing(med, quantile(vals, 0.2), quantile(vals, 0.8), len(vals),
                           "cuda-events" if cuda else "wall", host)
    return out


# --- output ------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.6g}"
    return "" if value is None else str(value)


def write_csv(path: "os.PathLike[str] | str", records: Iterable[Mapping[str, Any]],
              first: Sequence[str] = ()) -> Path:
    """Long-format CSV, one row per record: the ``first`` columns, then every other key in the
    order first seen. NaN and missing values are empty cells."""
    records = list(records)
    columns = [c for c in first if any(c in r for r in records)]
    for rec in records:
        columns += [k for k in rec if k not in columns]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows([_cell(rec.get(c)) for c in columns] for rec in records)
    return path


def write_json(path: "os.PathLike[str] | str", obj: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path


def fmt_us(us: Any) -> str:
    """``3.2 us``, ``412 us``, ``1.25 ms``, ``2.10 s`` (``-`` for NaN or missing)."""
    if not isinstance(us, (int, float)) or us != us:
        return "-"
    if us < 100:
        return f"{us:.1f} us"
    if us < 1000:
        return f"{us:.0f} us"
    return f"{us / 1e3:.3g} ms" if us < 1e6 else f"{us / 1e6:.2f} s"


def fmt_ratio(x: Any, mark_above: Optional[float] = None) -> str:
    """``1.23x``; with ``mark_above``, a ratio above it gets a trailing ``!``."""
    if not isinstance(x, (int, float)) or x != x:
        return "-"
    return f"{x:.2f}x" + ("!" if mark_above is not None and x > mark_above else "")


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Fixed-width text table of already formatted cells (numbers right-aligned)."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def numeric(i: int) -> bool:
        cells = [r[i] for r in rows if r[i] not in ("", "-")]
        return bool(cells) and all(c[:1].isdigit() for c in cells)

    right = [numeric(i) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])
