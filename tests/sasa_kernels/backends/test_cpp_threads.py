"""The cpp backend really runs on several threads.

at::parallel_for is inlined from ATen's headers; with torch's OpenMP backend it is silently serial
unless the extension is compiled and linked with OpenMP. This reads per-thread CPU time from /proc.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import sasa_kernels as sk

pytestmark = [
    pytest.mark.skipif("cpp" not in sk.backends("cpu"), reason="the cpp backend is not built"),
    pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc"),
]


def _cpu_ticks_per_thread() -> dict[str, int]:
    ticks = {}
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[task.name] = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks


def test_rows_are_split_over_threads():
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs at least 2 CPU cores")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # whatever an earlier test left: this test needs two
    try:
        _check_rows_are_split()
    finally:
        torch.set_num_threads(threads)


def _check_rows_are_split():
    x = torch.randn(2048, 2048)
    out = torch.empty_like(x)
    with sk.use_backend("cpp"):
        sk.project(x, x)  # wakes the thread pool
        before = _cpu_ticks_per_thread()
        for _ in range(60):
            torch.ops.sasa._compiled_project(x, x, out, 0.0, 1.0, 1e-6)
        after = _cpu_ticks_per_thread()
    worked = [t for t, ticks in after.items() if ticks - before.get(t, 0) >= 3]
    assert len(worked) >= 2, f"only {len(worked)} thread(s) did work: the cpp kernels ran serially"
