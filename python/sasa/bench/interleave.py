"""The interleaved measurement loop: every series at every point, in rounds.

Per point: ``warmup`` untimed rounds (the first also measures each series' peak memory), then
``rounds`` timed rounds. In round ``r`` the series run in the order rotated by ``r``, so no series
always runs first or right after another (a fixed order lets frequency scaling, caches and the
neighbours' load favour one series). Each call makes exactly ``new_tokens`` tokens per row and
yields one sample of time to first token and one of the per-token cost.

Peak memory is the memory a call needs above what was in use just before it: on CUDA
``torch.cuda.max_memory_allocated`` after a reset; on Linux CPUs the peak resident set size
(``VmHWM``, reset through ``/proc/self/clear_refs``) above the resident size before the call,
after returning freed heap memory to the system (``malloc_trim``). NaN where neither works.
"""

from __future__ import annotations

import ctypes
import gc
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import nn

from sasa.bench.series import Series, generation_kwargs, model_device, time_generate

__all__ = ["Measurement", "Point", "measure", "peak_memory_mib"]


@dataclass(frozen=True)
class Point:
    """One input to time: ``inputs`` (what ``generate`` takes) of ``batch`` rows of ``prompt_len``
    tokens. ``label`` names the model or variant in reports (optional)."""

    batch: int
    prompt_len: int
    inputs: Mapping[str, Any] = field(repr=False, compare=False)
    label: str = ""


@dataclass
class Measurement:
    """Samples of one series at one point: per timed round, time to first token and the
    per-token cost in ms (``round_index`` says which round each sample came from)."""

    series: str
    point: Point
    ttft_ms: list[float] = field(default_factory=list)
    per_token_ms: list[float] = field(default_factory=list)
    round_index: list[int] = field(default_factory=list)
    peak_mib: float = float("nan")


def _status_bytes(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _trim_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_mib(fn: Callable[[], Any], device: torch.device) -> float:
    """Run ``fn`` once; return the extra memory it needed at its peak, in MiB (NaN if unknown)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    _trim_heap()
    before = _status_bytes("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")  # resets VmHWM to the current resident size
    except OSError:
        before = None
    fn()
    peak = _status_bytes("VmHWM")
    if before is None or peak is None:
        return float("nan")
    return max(0, peak - before) / 2**20


def measure(
    model: nn.Module,
    points: Sequence[Point],
    series: Sequence[Series],
    *,
    rounds: int = 5,
    warmup: int = 1,
    new_tokens: int = 8,
    memory: bool = True,
    max_rounds: Optional[int] = None,
    point_budget_s: Optional[float] = None,
    progress: bool = True,
    log: Optional[Callable[[str], None]] = None,
    deadline: Optional[float] = None,
) -> list[Measurement]:
    """Time every series at every point, interleaved (see the module docstring).

    Args:
        model: the model (no guard applied; :class:`sasa.bench.Guarded` applies its own).
        points: the inputs; time them from small to large so one-off start-up costs land early.
        series: the series; put the baseline (:class:`sasa.bench.Unguarded`) among them.
        rounds: timed rounds per point (samples per series), at least 1.
        warmup: untimed rounds before them (peak memory is taken in the first; 0 skips memory).
        new_tokens: tokens per row per call (>= 2 for a per-token cost).
        memory: measure peak memory (in the first warm-up round).
        max_rounds, point_budget_s: keep adding rounds, up to ``max_rounds``, while the point has
            taken less than ``point_budget_s`` seconds (more samples where calls are cheap).
        progress: a tqdm bar on stderr.
        log: called with one line per point (e.g. ``print``).
        deadline: a ``time.perf_counter()`` value: no point starts after it, and no extra round
            (beyond ``rounds``); the result then lacks the points not started.
    """
    if rounds < 1 or warmup < 0 or new_tokens < 1:
        raise ValueError(f"rounds >= 1, warmup >= 0, new_tokens >= 1 expected; got {rounds}, {warmup}, {new_tokens}")
    names = [s.name for s in series]
    if len(set(names)) != len(names):
        raise ValueError(f"series: names must be unique, got {names}")
    device = model_device(model)
    gen = generation_kwargs(model, new_tokens)
    limit = max(rounds, max_rounds or rounds)
    bar = _progress(len(points) * len(series) * (warmup + rounds), progress)
    out: list[Measurement] = []
    try:
        if memory and warmup and points:
            # One-off costs of a process's first calls (thread pools, lazy initialisation) must not
            # count as the first point's memory: one untimed call per series first.
            for s in series:
                with s.session(model) as generate:
                    time_generate(generate, points[0].inputs, new_tokens, device, **gen)
        for point in points:
            t_point = time.perf_counter()
            if deadline is not None and t_point > deadline:
                break
            found = {s.name: Measurement(s.name, point) for s in series}

            def call(s: Series) -> Any:
                with s.session(model) as generate:
                    return time_generate(generate, point.inputs, new_tokens, device, **gen)[0]

            for w in range(warmup):
                for s in series:
                    if w == 0 and memory:
                        found[s.name].peak_mib = peak_memory_mib(lambda: call(s), device)
                    else:
                        call(s)
                    bar.update(1)
            r = 0
            while r < rounds or (r < limit and point_budget_s is not None
                                 and time.perf_counter() - t_point < point_budget_s
                                 and (deadline is None or time.perf_counter() < deadline)):
                if r == rounds:
                    bar.total += len(series)
                shift = r % len(series)
                for s in list(series[shift:]) + list(series[:shift]):
                    timing = call(s)
                    m = found[s.name]
                    m.ttft_ms.append(timing.ttft_ms)
                    m.per_token_ms.append(timing.per_token_ms)
                    m.round_index.append(r)
                    bar.update(1)
                r += 1
            out.extend(found.values())
            if log is not None:
                cells = ", ".join(f"{m.series} {_median(m.ttft_ms):.1f} ms" for m in found.values())
                where = f"{point.label} " if point.label else ""
                log(f"{where}B={point.batch} T={point.prompt_len}: TTFT {cells} "
                    f"({r} rounds, {time.perf_counter() - t_point:.0f} s)")
    finally:
        bar.close()
    return out


def _median(values: Sequence[float]) -> float:
    vals = sorted(v for v in values if v == v)
    if not vals:
        return float("nan")
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else 0.5 * (vals[mid - 1] + vals[mid])


class _NoBar:
    total = 0

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc="timing", unit="call", leave=False)
