#!/usr/bin/env python
"""The sasa_kernels ops against PyTorch eager, torch.compile and the memory floor, in one run.

    python benchmarks/bench_ops.py --device cpu --quick        # a small grid; on CPU compiling each shape dominates
    python benchmarks/bench_ops.py --device cpu --full         # rows 1..32768, d 896..8192, 1 and 2 threads
    python benchmarks/bench_ops.py --device cuda --quick --budget-s 150 --print summary
    python benchmarks/bench_ops.py --ops project --dtypes fp32 --threads 1,2

The series and grids are declared in ``_kernel_cases.py``; every point times them interleaved
(``_runner.time_interleaved``). Ratios are time ratios, ``series / baseline``: above 1 = slower.
``ratio_vs_compile`` above 1 (marked ``!``) means the sasa kernel loses to ``torch.compile``;
``ratio_vs_floor`` says how far it is from a copy of the same bytes. The host-overhead rows
(``bench_host.py``) come first. Writes ``ops.csv`` (long format), ``ops_table.txt``,
``ops_summary.txt``, ``ops_machine.json`` and one PNG per op and sweep to ``--out`` (default
``benchmarks/results/<machine>-<date>``). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _kernel_cases as K  # noqa: E402
import _plot  # noqa: E402
import _runner as R  # noqa: E402
import bench_host  # noqa: E402
import torch  # noqa: E402

sk = K.sk
FIRST_COLUMNS = ("op", "backend", "shape", "rows", "d", "dtype", "threads", "median_us", "p20_us", "p80_us",
                 "ratio_vs_eager", "ratio_vs_compile", "ratio_vs_floor", "gbps")


def _max_abs_err(out, ref) -> float:
    outs, refs = (out, ref) if isinstance(out, tuple) else ((out,), (ref,))
    return max(float((o.float() - r.float()).abs().max()) for o, r in zip(outs, refs)) if outs else 0.0


def run(device: str, grid: K.Grid, ops: list[str], backends: list[str], info: dict, *, compile_: bool = True,
        budget_s: Optional[float] = None, log: Callable[[str], None] = print) -> list[dict]:
    """Every (threads, op, dtype, shape) of ``grid``: records with ratios to the baselines.

    With ``budget_s``: past it, compiling is skipped (noted); past 1.5x, the rest is skipped.
    """
    K.raise_recompile_limits()
    configs = [(t, op, dt, s) for t in grid.threads for op in ops for dt in grid.dtypes for s in grid.shapes[op]]
    start = time.perf_counter()
    records: list[dict] = []
    for i, (threads, op, dtname, shape) in enumerate(configs):
        spent = time.perf_counter() - start
        if budget_s is not None and spent > 1.5 * budget_s:
            log(f"budget of {budget_s:.0f} s spent: skipped the last {len(configs) - i} configurations")
            break
        torch.set_num_threads(threads)
        dtype = K.DTYPES[dtname]
        with_compile = compile_ and not (budget_s is not None and spent > budget_s)
        t0 = time.perf_counter()
        common = {"op": op, "shape": shape.label(op), "rows": shape.rows, "d": shape.d, "dtype": dtname,
                  "threads": threads, "C": "" if op in K.PROJECT_OPS else shape.C,
                  "T": "" if op in K.PROJECT_OPS else shape.T, "device": device, "machine": info["machine"],
                  "version": f"{info['sasa_kernels']}+{info['git']}", "date": info["date"]}
        nbytes = K.bytes_moved(op, shape, dtype)
        try:
            fns = K.series_fns(op, shape, dtype, device, backends, compile_=with_compile)
            ref = fns["eager"]()
            errors = {name: _max_abs_err(fn(), ref) for name, fn in fns.items() if name.startswith(("sasa:", "compile"))}
            timings = R.time_interleaved(fns, device, budget_s=grid.budget_s, min_samples=grid.min_samples)
        except Exception as exc:  # one broken point must not hide the others: record it, go on
            records.append({**common, "backend": "-", "note": f"failed: {type(exc).__name__}: {exc}"[:200]})
            log(f"[{i + 1}/{len(configs)}] {op} {shape.label(op)} {dtname}: FAILED {exc}")
            continue
        point = []
        for name, t in timings.items():
            point.append({**common, "backend": name, "median_us": t.median_us, "p20_us": t.p20_us,
                          "p80_us": t.p80_us, "host_us": t.host_us, "samples": t.samples, "timer": t.timer,
                          "bytes": nbytes, "gbps": nbytes / (t.median_us * 1e3),
                          "max_abs_err": errors.get(name, float("nan")),
                          "note": "" if with_compile or not compile_ else "compile skipped: over --budget-s"})
        for rec in point:
            for base in ("eager", "compile", "floor"):
                ref_us = timings[base].median_us if base in timings else float("nan")
                rec[f"ratio_vs_{base}"] = rec["median_us"] / ref_us
        records.extend(point)
        cells = "  ".join(f"{r['backend']}={R.fmt_us(r['median_us'])}" for r in point)
        log(f"[{i + 1}/{len(configs)}] {op:<15} {shape.label(op):<22} {dtname} thr={threads}  {cells}  "
            f"({time.perf_counter() - t0:.1f} s)")
    return records


def full_table(records: list[dict]) -> str:
    rows = [[r["op"], r["shape"], r["dtype"], str(r["threads"]), r["backend"], R.fmt_us(r.get("median_us")),
             f"{R.fmt_us(r.get('p20_us'))}..{R.fmt_us(r.get('p80_us'))}", str(r.get("samples", "")),
             R.fmt_ratio(r.get("ratio_vs_eager")),
             R.fmt_ratio(r.get("ratio_vs_compile"), 1.0 if r["backend"].startswith("sasa:") else None),
             R.fmt_ratio(r.get("ratio_vs_floor")), str(r.get("note", ""))[:60]] for r in records]
    return R.format_table(rows, ["op", "shape", "dtype", "thr", "series", "median", "p20..p80", "n", "/eager",
                                 "/compile", "/floor", "note"])


def summary_table(records: list[dict], backends: list[str]) -> str:
    """One line per point: the baselines' times, then each backend's time and its ratios."""
    points: dict[tuple, dict[str, dict]] = {}
    for r in records:
        points.setdefault((r["op"], r["shape"], r["dtype"], r["threads"]), {})[r["backend"]] = r
    header = ["op", "shape", "dtype", "thr", "eager", "compile", "floor"]
    for b in backends:
        header += [f"sasa:{b}", "/compile", "/floor"]
    rows = []
    for (op, shape, dtype, thr), by in points.items():
        row = [op, shape, dtype, str(thr)] + [R.fmt_us(by.get(s, {}).get("median_us")) for s in header[4:7]]
        for b in backends:
            rec = by.get(f"sasa:{b}", {})
            row += [R.fmt_us(rec.get("median_us")), R.fmt_ratio(rec.get("ratio_vs_compile"), 1.0),
                    R.fmt_ratio(rec.get("ratio_vs_floor"))]
        rows.append(row)
    return R.format_table(rows, header)


LEGEND = ("ratios are time / baseline time measured in the same interleaved rounds (above 1 = slower); "
          "! = the sasa kernel is slower than torch.compile; floor = a preallocated copy of the same bytes")


def make_plots(records: list[dict], grid: K.Grid, out: Path, machine: str, backends: list[str]) -> list[Path]:
    order = ["eager", "compile", "floor"] + [f"sasa:{b}" for b in backends]
    paths = []
    for op, base in grid.plots.items():
        mine = [r for r in records if r["op"] == op and "median_us" in r]
        unit = "rows" if op in K.PROJECT_OPS else "B"
        for suffix, x, keep, label in (("", "rows", lambda r: r["d"] == base.d, f"{unit} (d={base.d})"),
                                       ("_d", "d", lambda r: r["rows"] == base.rows, f"d ({unit}={base.rows})")):
            path = _plot.plot_sweep([r for r in mine if keep(r)], out / f"{op}{suffix}.png", x=x,
                                    facets=("dtype", "threads"), baseline="compile", order=order, xlabel=label,
                                    title=f"sasa_kernels {op}: time against {x}\n{machine}")
            if path:
                paths.append(path)
    return paths


def main(argv: Optional[list[str]] = None, *, default_grid: str = "quick") -> int:
    threads = torch.get_num_threads()
    try:
        return _main(argv, default_grid=default_grid)
    finally:
        torch.set_num_threads(threads)  # run in-process (tests, notebooks): leave the caller's setting


def _main(argv: Optional[list[str]], *, default_grid: str) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    grp = ap.add_mutually_exclusive_group()
    for name, text in (("quick", "a small grid (default)"), ("full", "the full grid"), ("smoke", "quick.py's grid"),
                       ("tiny", "seconds: a smoke test of the script itself")):
        grp.add_argument(f"--{name}", dest="grid", action="store_const", const=name, help=text)
    ap.add_argument("--ops", default=",".join(K.OPS), help=f"comma list out of {','.join(K.OPS)}")
    ap.add_argument("--dtypes", help="comma list out of fp32,bf16,fp16 (default: the grid's)")
    ap.add_argument("--threads", help="CPU thread counts, e.g. 1,2 (default: the grid's)")
    ap.add_argument("--backends", help="only these of sk.backends(device), comma list")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--budget-s", type=float, help="past this many seconds skip compiling; past 1.5x stop")
    ap.add_argument("--out", help="results folder (default benchmarks/results/<machine>-<date>)")
    ap.add_argument("--no-save", action="store_true", help="write no files")
    ap.add_argument("--print", dest="print_", default="table", choices=["table", "summary", "compact", "none"],
                    help="print every series (table), one line per point (summary; compact is the same), or nothing")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available")
    grid = K.make_grid(args.grid or default_grid, args.device)
    if args.dtypes:
        grid.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        if any(d not in K.DTYPES for d in grid.dtypes):
            ap.error(f"--dtypes: choose from {list(K.DTYPES)}")
    if args.threads:
        grid.threads = [int(t) for t in args.threads.split(",")]
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    if any(o not in K.OPS for o in ops):
        ap.error(f"--ops: choose from {K.OPS}")
    backends, notes = K.backends_to_time(args.device)
    if args.backends:
        backends = [b for b in backends if b in args.backends.split(",")]
    torch.set_num_threads(grid.threads[0])
    info = R.machine_info(args.device)
    info["threads"] = ",".join(map(str, grid.threads))
    print(f"# {R.describe(info)}\n# grid={args.grid or default_grid} ops={ops} dtypes={grid.dtypes} "
          f"threads={grid.threads} backends={backends}", flush=True)
    t0 = time.perf_counter()
    host = bench_host.measure_host_overhead(args.device, info)
    records = run(args.device, grid, ops, backends, info, compile_=not args.no_compile, budget_s=args.budget_s,
                  log=lambda line: print(line, flush=True))
    info["bench_seconds"] = round(time.perf_counter() - t0, 1)
    warning = R.busy_warning(info, max(grid.threads))
    tail = bench_host.host_lines(host) + notes + [LEGEND] + ([warning] if warning else [])
    summary = "\n".join([f"# {R.describe(info)}; {info['bench_seconds']} s", summary_table(records, backends)] + tail)
    if args.print_ != "none":
        print()
        print(full_table(records) + "\n" + "\n".join(tail) if args.print_ == "table" else summary)
    if not args.no_save:
        out = Path(args.out) if args.out else R.results_dir(info)
        R.write_csv(out / "ops.csv", host + records, FIRST_COLUMNS)
        R.write_json(out / "ops_machine.json", {**info, "grid": args.grid or default_grid, "notes": notes,
                                                "loadavg_end": R.load_average()})
        (out / "ops_table.txt").write_text(f"# {R.describe(info)}\n{full_table(records)}\n" + "\n".join(tail) + "\n",
                                           encoding="utf-8")
        (out / "ops_summary.txt").write_text(summary + "\n", encoding="utf-8")
        plots = [] if args.no_plots else make_plots(records, grid, out, info["machine"], backends)
        print(f"# wrote {out}/: ops.csv, ops_table.txt, ops_summary.txt, ops_machine.json, {len(plots)} PNG")
    return 0


if __name__ == "__main__":
    sys.exit(main())
