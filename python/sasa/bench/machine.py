"""Which machine a timing ran on, and was it busy (load average, other processes' CPU time).

A timing taken while other processes compete for the cores is slower and noisier than the same
timing on a quiet machine, and interleaving (which every ``sasa.bench`` timer does) only protects
the ratios, not the absolute milliseconds. :class:`LoadMonitor` records the 1-minute load average
before and after a run and, where ``/proc/stat`` exists (Linux), how many cores' worth of CPU time
*other* processes used while it ran (the machine's busy time minus this process's own).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["LoadMonitor", "LoadReport", "describe_machine", "load_average", "machine_info"]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        if names:
            return names[0]
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info(device: Any = "cpu") -> dict[str, Any]:
    """The machine and software of a run: ``machine`` (GPU name on CUDA, else the CPU model and
    core count), ``threads``, versions of python, torch, transformers and sasa, and the 1-minute
    load average now."""
    import torch
    import transformers

    from sasa_kernels import __version__ as sasa_version

    cores = os.cpu_count() or 1
    info: dict[str, Any] = {"cpu": _cpu_name(), "cores": cores, "threads": torch.get_num_threads(),
                            "device": str(device), "python": platform.python_version(),
                            "torch": torch.__version__, "transformers": transformers.__version__,
                            "sasa": sasa_version, "loadavg": load_average()}
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        info["machine"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda or ""
    else:
        info["machine"] = f"{info['cpu']} ({cores} cores)"
    return info


def describe_machine(info: dict[str, Any]) -> str:
    """One line from :func:`machine_info`."""
    return (f"{info['machine']}, {info['threads']} threads, torch {info['torch']}, transformers "
            f"{info['transformers']}, sasa {info['sasa']}, load average {info['loadavg']}")


def load_average() -> float:
    """The 1-minute load average (NaN where the platform has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return float("nan")


def _busy_cpu_seconds() -> Optional[float]:
    """Seconds of CPU time the whole machine spent busy since boot (``/proc/stat``), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    # guest time is already counted in user time: leave it out of the total.
    total = sum(ticks[:8])
    return (total - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


@dataclass(frozen=True)
class LoadReport:
    """What :class:`LoadMonitor` saw.

    Attributes:
        cores: CPU cores of the machine (``os.cpu_count()``).
        threads: the threads this process computed with (``torch.get_num_threads()`` or given).
        load_start, load_end: 1-minute load average before and after the run (NaN if unknown).
        others_cores: average cores' worth of CPU used by *other* processes during the run
            (NaN where ``/proc/stat`` is missing).
        wall_s: the run's wall-clock seconds.
    """

    cores: int
    threads: int
    load_start: float
    load_end: float
    others_cores: float
    wall_s: float

    @property
    def busy(self) -> bool:
        """True when other work probably slowed the run: other processes used at least half a
        core on average, or the load average before the run was at least half the cores (the
        load after the run includes this process's own threads, so it is compared with
        ``threads + cores / 2``)."""
        half = 0.5 * max(1, self.cores)
        if self.others_cores == self.others_cores:  # not NaN: the direct measurement wins
            return self.others_cores >= half or self.load_start >= half
        return self.load_start >= half or self.load_end >= self.threads + half

    def describe(self) -> str:
        """One line: load average before and after, and other processes' CPU use."""
        others = "" if self.others_cores != self.others_cores else (
            f", other processes used {self.others_cores:.1f} of {self.cores} cores during the run")
        return (f"1-min load average {self.load_start:g} before, {self.load_end:g} after "
                f"({self.cores} cores, {self.threads} threads here){others}")

    def warning(self) -> str:
        """``"WARNING: ..."`` when :attr:`busy`, else ``""``."""
        if not self.busy:
            return ""
        return ("WARNING: the machine was busy (" + self.describe() + "): absolute times include waiting "
                "for other processes and the ratios are noisier; rerun on a quiet machine for numbers to quote")


class LoadMonitor:
    """Context manager: ``with LoadMonitor() as load: ...`` then ``load.report()``.

    ``threads`` defaults to ``torch.get_num_threads()`` when torch is importable, else 1.
    """

    def __init__(self, threads: Optional[int] = None):
        if threads is None:
            try:
                import torch

                threads = torch.get_num_threads()
            except ImportError:
                threads = 1
        self.threads = int(threads)
        self._start: Optional[tuple[float, float, Optional[float], float]] = None
        self._report: Optional[LoadReport] = None

    def __enter__(self) -> "LoadMonitor":
        self._start = (time.perf_counter(), load_average(), _busy_cpu_seconds(), _own_cpu_seconds())
        self._report = None
        return self

    def __exit__(self, *exc: object) -> None:
        self._report = self._measure()

    def _measure(self) -> LoadReport:
        if self._start is None:
            raise RuntimeError("LoadMonitor: use it as a context manager first")
        t0, load0, busy0, own0 = self._start
        wall = max(time.perf_counter() - t0, 1e-9)
        busy1 = _busy_cpu_seconds()
        others = float("nan")
        if busy0 is not None and busy1 is not None:
            others = max(0.0, ((busy1 - busy0) - (_own_cpu_seconds() - own0)) / wall)
        return LoadReport(os.cpu_count() or 1, self.threads, load0, load_average(), round(others, 2), wall)

    def report(self) -> LoadReport:
        """The report of the finished ``with`` block (or, inside it, of the run so far)."""
        return self._report if self._report is not None else self._measure()
