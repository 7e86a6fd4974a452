#!/usr/bin/env python
"""Host overhead: what one tiny call costs in Python and dispatch, not in arithmetic.

    python benchmarks/bench_host.py                # CPU; --device cuda on a GPU

Times, interleaved in the same rounds, on a 1x64 float32 input (where the kernel's own work is a
few nanoseconds): ``torch.add`` of the same shape (the baseline: one plain ATen op through the
dispatcher), ``torch.ops.sasa.project`` (the custom op) and ``sk.project`` (the public function
users call). The ratio to ``torch.add`` is the price of the Python layers on the hot path; the
project's target is ``sk.project`` within 2x of ``torch.add``. ``bench_ops.py`` prints the same
rows as its "host overhead" lines.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _runner as R  # noqa: E402
import torch  # noqa: E402

sk = R.import_sasa_kernels()

SHAPE = (1, 64)
TARGET_RATIO = 2.0  # sk.project / torch.add


def host_fns(device: str) -> dict[str, Callable[[], Any]]:
    """``torch.add`` first (the baseline), then the custom op and the public function."""
    gen = torch.Generator(device=device).manual_seed(0)
    hs = torch.randn(*SHAPE, generator=gen, device=device)
    hf = torch.randn(*SHAPE, generator=gen, device=device)
    return {
        "torch.add": lambda: torch.add(hs, hf),
        "torch.ops.sasa.project": lambda: torch.ops.sasa.project(hs, hf, "replace", 1.0, 1e-6),
        "sk.project": lambda: sk.project(hs, hf, mode="replace"),
    }


def measure_host_overhead(device: str, info: dict, *, budget_s: float = 0.5) -> list[dict]:
    """One record per series: op ``host_overhead``, the median and ``ratio_vs_add``."""
    timings = R.time_interleaved(host_fns(device), device, budget_s=budget_s, min_samples=30)
    base = timings["torch.add"].host_us
    records = []
    for name, t in timings.items():
        records.append({
            "op": "host_overhead", "backend": name, "shape": "x".join(map(str, SHAPE)), "dtype": "fp32",
            "threads": torch.get_num_threads(), "median_us": t.median_us, "p20_us": t.p20_us, "p80_us": t.p80_us,
            "host_us": t.host_us, "samples": t.samples, "ratio_vs_add": t.host_us / base,
            "machine": info["machine"], "date": info["date"],
        })
    return records


def host_lines(records: list[dict]) -> list[str]:
    """The "host overhead" lines of a report (host cost per call, ratio to torch.add)."""
    by = {r["backend"]: r for r in records if r["op"] == "host_overhead"}
    if "torch.add" not in by:
        return []
    cells = [f"{name} {R.fmt_us(r['host_us'])} ({r['ratio_vs_add']:.1f}x)" for name, r in by.items()]
    ratio = by.get("sk.project", {}).get("ratio_vs_add", float("nan"))
    verdict = "within" if ratio <= TARGET_RATIO else "over"
    return [f"host overhead, 1x64 fp32, per call (x torch.add): {', '.join(cells)}; sk.project is {verdict} the "
            f"{TARGET_RATIO:g}x target"]


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--budget-s", type=float, default=1.0, help="seconds of interleaved rounds (default 1)")
    args = ap.parse_args(argv)
    info = R.machine_info(args.device)
    records = measure_host_overhead(args.device, info, budget_s=args.budget_s)
    print(f"# {R.describe(info)}")
    rows = [[r["backend"], R.fmt_us(r["host_us"]), f"{R.fmt_us(r['p20_us'])}..{R.fmt_us(r['p80_us'])}",
             R.fmt_ratio(r["ratio_vs_add"]), str(r["samples"])] for r in records]
    print(R.format_table(rows, ["series", "per call", "p20..p80", "x torch.add", "samples"]))
    print("\n".join(host_lines(records)))
    warning = R.busy_warning(info, torch.get_num_threads())
    if warning:
        print(warning)
    return 0


if __name__ == "__main__":
    sys.exit(main())
