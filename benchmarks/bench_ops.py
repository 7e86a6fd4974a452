#!/usr/bin/env python
"""Benchmark the sasa_kernels ops against PyTorch eager and torch.compile, measured in one run.

Usage::

    python benchmarks/bench_ops.py --device cpu --quick            # ~2 min on 2 CPU cores
    python benchmarks/bench_ops.py --device cpu --full             # ~20 min on 2 CPU cores
    python benchmarks/bench_ops.py --device cuda --quick --budget-s 150 --print summary
    python benchmarks/bench_ops.py --device cpu --ops project --dtypes fp32 --threads 1,2

Ops: ``project`` (replace mode), ``project_rmsnorm``, ``probe`` (gather + linear + sigmoid, no
norm) and ``probe_norm`` (the same with the final RMSNorm). For every op, shape, dtype and thread
count it times these series:

- ``eager``: the plain PyTorch composite ``sk.reference.<op>`` (the baseline);
- ``compile``: ``torch.compile(sk.reference.<op>, dynamic=False)``, compiled once per shape,
  compile time excluded (reported in the CSV as ``compile_s``);
- ``sasa:<name>``: the public function forced to each backend in ``sk.backends(device)`` with
  ``sk.use_backend(name)``, so a newly built backend (``cpp``, ``cuda``) shows up by itself.
  Triton under ``TRITON_INTERPRET`` (the interpreter, a test tool) is never timed.

It writes ``ops.csv`` (long format, one row per series, see ``_common.py``), ``machine.json``,
``table.txt`` (every row), ``summary.txt`` (short) and one PNG per op and sweep to ``--out``
(default ``benchmarks/results/<device>-<preset>-<date>``), and prints the table. Speedups are
``median(baseline) / median(series)``: > 1 means faster than the baseline. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as H  # noqa: E402

import torch  # noqa: E402

sk = H.import_sasa_kernels()

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
OPS = ("project", "project_rmsnorm", "probe", "probe_norm")
PROJECT_OPS = ("project", "project_rmsnorm")
BASELINES = ("eager", "compile")


# --------------------------------------------------------------------------------------------
# Shapes and grids
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """``rows x d`` for the project ops; ``B`` (= rows), ``T``, ``C``, ``d`` for the probe."""

    rows: int
    d: int
    C: int = 0

    def T(self) -> int:
        """Sequence length of the probe's ``hidden`` ``[B, T, d]``: 16, fewer when B*d is large.

        Only one position per row is read, so T only sets how far apart the gathered rows lie.
        """
        return max(1, min(16, (1 << 27) // (self.rows * self.d)))

    def label(self, op: str) -> str:
        if op in PROJECT_OPS:
            return f"{self.rows}x{self.d}"
        return f"B={self.rows} T={self.T()} C={self.C} d={self.d}"


def _project_grid(rows: list[int], ds: list[int], base_rows: int, base_d: int) -> list[Shape]:
    shapes = [Shape(r, base_d) for r in rows] + [Shape(base_rows, d) for d in ds if d != base_d]
    return list(dict.fromkeys(shapes))


def _probe_grid(bs: list[int], cs: list[int], ds: list[int], base_b: int, base_c: int, base_d: int) -> list[Shape]:
    shapes = [Shape(b, base_d, base_c) for b in bs]
    shapes += [Shape(base_b, base_d, c) for c in cs]
    shapes += [Shape(base_b, d, base_c) for d in ds]
    return list(dict.fromkeys(shapes))


@dataclass
class Preset:
    shapes: dict[str, list[Shape]]
    dtypes: list[str]
    threads: list[int]
    budget_s: float  # measuring time per series
    min_reps: int  # samples per series at least (slow calls)
    base: dict[str, Shape]  # the fixed point of each sweep (for plots)
    key_shapes: dict[str, list[Shape]]  # rows of the short summary


def make_preset(device: str, name: str) -> Preset:
    """The shape grids. ``quick`` fits ~2 min on 2 CPU cores; ``full`` follows the issues' ranges."""
    cuda = device == "cuda"
    ncpu = torch.get_num_threads()  # torch's default: the usable cores (call before any set_num_threads)
    if name == "full":
        rows = [1, 4, 16, 64, 256, 1024, 4096, 16384, 32768]
        ds = [896, 1536, 2048, 3584, 4096, 5120, 8192]
        project = _project_grid(rows, ds, 4096, 4096)
        if cuda:  # cheap on a GPU: also the row sweep at the smallest and largest d
            project += [Shape(r, d) for d in (896, 8192) for r in rows if Shape(r, d) not in project]
        probe = _probe_grid([1, 4, 16, 64, 256, 1024, 4096], [1, 8, 64], [896, 2048, 8192], 64, 8, 4096)
        dtypes = ["fp32", "bf16", "fp16"] if cuda else ["fp32", "bf16"]
        threads = [torch.get_num_threads()] if cuda else sorted({1, min(2, ncpu), ncpu})
        budget = 0.1 if cuda else 0.25
    elif name == "quick":
        if cuda:
            project = _project_grid([1, 256, 4096, 32768], [896, 8192], 4096, 4096)
            probe = _probe_grid([1, 64, 4096], [64], [], 64, 8, 4096)
        else:  # the 1-thread and all-core columns the compiled-backend issue asks for, few shapes
            project = _project_grid([1, 64, 4096], [], 4096, 4096)
            probe = _probe_grid([1, 64], [], [], 64, 8, 4096)
        dtypes = ["fp32", "bf16"]
        threads = [torch.get_num_threads()] if cuda else sorted({1, ncpu})
        budget = 0.05 if cuda else 0.1
    elif name == "smoke":  # benchmarks/quick.py: a few realistic shapes, < 60 s on 2 CPU cores
        project = [Shape(1, 4096), Shape(512, 4096), Shape(4096, 4096)]
        probe = [Shape(1, 4096, 8), Shape(64, 4096, 8)]
        dtypes = ["fp32", "bf16"]
        threads = [torch.get_num_threads()]
        budget = 0.05 if cuda else 0.08
    else:
        raise ValueError(f"unknown preset {name!r}")
    base_project = Shape(4096, 4096) if Shape(4096, 4096) in project else project[0]
    base_probe = Shape(64, 4096, 8)
    shapes = {"project": project, "project_rmsnorm": project, "probe": probe, "probe_norm": probe}
    max_rows = max(x.rows for x in project if x.d == 4096)
    key_project = [s for s in project if s.d == 4096 and s.rows in (4096, max_rows)]
    max_b = max(x.rows for x in probe)
    key_probe = [s for s in probe if s.d == 4096 and s.C == 8 and s.rows in (1, max_b)]
    return Preset(
        shapes=shapes, dtypes=dtypes, threads=threads, budget_s=budget, min_reps=5 if name == "full" else 3,
        base={"project": base_project, "project_rmsnorm": base_project, "probe": base_probe, "probe_norm": base_probe},
        key_shapes={"project": key_project, "project_rmsnorm": key_project,
                    "probe": key_probe, "probe_norm": key_probe},
    )


# --------------------------------------------------------------------------------------------
# The ops: inputs, reference, public API, bytes moved
# --------------------------------------------------------------------------------------------
# Module-level reference callables: torch.compile caches compiled code per code object.


def ref_project(hs, hf):
    return sk.reference.project(hs, hf, mode="replace")


def ref_project_rmsnorm(hs, hf, w):
    return sk.reference.project_rmsnorm(hs, hf, w, mode="replace")


def ref_probe(hidden, weight, bias, positions):
    return sk.reference.probe(hidden, weight, bias, positions=positions)


def ref_probe_norm(hidden, weight, bias, positions, norm_weight):
    return sk.reference.probe(hidden, weight, bias, positions=positions, norm_weight=norm_weight)


REFERENCE: dict[str, Callable] = {
    "project": ref_project,
    "project_rmsnorm": ref_project_rmsnorm,
    "probe": ref_probe,
    "probe_norm": ref_probe_norm,
}

API: dict[str, Callable] = {
    "project": lambda hs, hf: sk.project(hs, hf, mode="replace"),
    "project_rmsnorm": lambda hs, hf, w: sk.project_rmsnorm(hs, hf, w, mode="replace"),
    "probe": lambda hidden, weight, bias, positions: sk.probe(hidden, weight, bias, positions=positions),
    "probe_norm": lambda hidden, weight, bias, positions, nw: sk.probe(
        hidden, weight, bias, positions=positions, norm_weight=nw
    ),
}


def make_inputs(op: str, shape: Shape, dtype: torch.dtype, device: str) -> tuple:
    gen = torch.Generator(device=device).manual_seed(0)

    def randn(*size, dt=dtype):
        return torch.randn(*size, generator=gen, dtype=torch.float32, device=device).to(dt)

    if op in PROJECT_OPS:
        hs, hf = randn(shape.rows, shape.d), randn(shape.rows, shape.d)
        if op == "project":
            return hs, hf
        return hs, hf, 1.0 + 0.1 * randn(shape.d)
    T = shape.T()
    hidden = randn(shape.rows, T, shape.d)
    weight = randn(shape.C, shape.d, dt=torch.float32) / math.sqrt(shape.d)
    bias = randn(shape.C, dt=torch.float32)
    positions = torch.randint(0, T, (shape.rows,), generator=gen, device=device)
    if op == "probe":
        return hidden, weight, bias, positions
    return hidden, weight, bias, positions, 1.0 + 0.1 * randn(shape.d)


def bytes_moved(op: str, shape: Shape, dtype: torch.dtype) -> float:
    """Compulsory memory traffic. project: read hs, hf, write out (3 * rows * d * size);
    project_rmsnorm: plus the normed output (4x); probe: the gathered rows, the fp32 weights and
    bias, the positions and the fp32 output (plus the norm weight)."""
    es = torch.empty((), dtype=dtype).element_size()
    n = shape.rows * shape.d
    if op == "project":
        return 3 * n * es
    if op == "project_rmsnorm":
        return 4 * n * es + shape.d * es
    b = n * es + shape.C * shape.d * 4 + shape.C * 4 + shape.rows * 8 + shape.rows * shape.C * 4
    return b + (shape.d * es if op == "probe_norm" else 0)


def _max_abs_err(out, ref) -> float:
    outs = out if isinstance(out, (tuple, list)) else (out,)
    refs = ref if isinstance(ref, (tuple, list)) else (ref,)
    return max(float((o.float() - r.float()).abs().max()) for o, r in zip(outs, refs))


# --------------------------------------------------------------------------------------------
# Backends and floors
# --------------------------------------------------------------------------------------------


def interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def bench_backends(device: str) -> tuple[list[str], list[str]]:
    """``(backends to time, notes)``: ``sk.backends(device)`` minus interpreted Triton."""
    names, notes = [], []
    for name in sk.backends(device):
        if name == "triton" and interpreter_on():
            notes.append("triton skipped: TRITON_INTERPRET is set (the interpreter is a test tool, not timed)")
            continue
        names.append(name)
    return names, notes


def measure_floors(device: str, info: dict, threads: list[int]) -> tuple[list[dict], dict]:
    """Copy bandwidth (bytes = 2 * size of a large ``dst.copy_(src)``) and, on CUDA, the cost of
    an empty kernel launch (an empty Triton kernel and ``torch.cuda._sleep(0)``)."""
    recs: list[dict] = []
    floors: dict[str, Any] = {"copy_gbps": {}}
    nbytes = (1 << 30) if device == "cuda" else (256 << 20)
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    label = f"{nbytes >> 20} MiB fp32"
    for t in threads:
        torch.set_num_threads(t)
        tm = H.time_fn(lambda: dst.copy_(src), device, budget_s=0.3)
        rec = H.record({**info, "threads": t}, op="copy", backend="floor", shape=label, rows=1, d=nbytes // 4,
                       dtype="fp32", timing=tm, nbytes=2 * nbytes, device=device)
        recs.append(rec)
        floors["copy_gbps"][t] = rec["gbps"]
    del src, dst
    if device == "cuda":
        x = torch.zeros(1, device=device)
        launchers: dict[str, Callable[[], Any]] = {"torch._sleep(0)": lambda: torch.cuda._sleep(0)}
        try:
            import triton

            @triton.jit
            def _empty_kernel(x_ptr):
                pass

            launchers["triton-empty"] = lambda: _empty_kernel[(1,)](x)
        except Exception as exc:  # triton missing or broken: keep the torch launch only
            floors["triton_empty_error"] = repr(exc)
        for name, fn in launchers.items():
            try:
                tm = H.time_cuda(fn, rep_ms=50)
            except Exception as exc:
                floors[f"{name}_error"] = repr(exc)
                continue
            recs.append(H.record(info, op="launch", backend=name, shape="empty", rows=1, d=0, dtype="-", timing=tm,
                                 device=device))
            floors.setdefault("launch", {})[name] = {"host_us": tm.host_us, "gpu_us": tm.median_us}
        if "launch" in floors:  # the floor a probe call is compared with: the cheapest launch
            best = min(floors["launch"].items(), key=lambda kv: kv[1]["host_us"])
            floors["launch_name"], floors["launch_host_us"] = best[0], best[1]["host_us"]
    torch.set_num_threads(threads[0])
    return recs, floors


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def _set_recompile_limits() -> None:
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(cfg, name):
            try:
                setattr(cfg, name, 4096)
            except Exception:
                pass


def run(device: str, preset: Preset, *, ops: list[str], backends: list[str], compile_: bool = True,
        budget_s: Optional[float] = None, info: dict, floors: dict, log: Callable[[str], None] = print) -> list[dict]:
    """Time every (op, shape, dtype, threads) of ``preset``; return long-format records.

    After ``budget_s`` seconds, compile measurements are skipped (noted); after 1.5x the budget,
    the remaining configurations are skipped altogether (and listed in the log).
    """
    _set_recompile_limits()
    start = time.perf_counter()
    records: list[dict] = []
    configs = [(t, op, dt, s) for t in preset.threads for op in ops for dt in preset.dtypes for s in preset.shapes[op]]
    compile_broken = ""
    for i, (threads, op, dtname, shape) in enumerate(configs):
        elapsed = time.perf_counter() - start
        if budget_s is not None and elapsed > 1.5 * budget_s:
            log(f"budget of {budget_s:.0f} s exhausted: skipped the last {len(configs) - i} configurations")
            break
        torch.set_num_threads(threads)
        dtype = DTYPES[dtname]
        cinfo = {**info, "threads": threads}
        label = shape.label(op)
        nbytes = bytes_moved(op, shape, dtype)
        common = dict(rows=shape.rows, d=shape.d, dtype=dtname, nbytes=nbytes, C=shape.C or "",
                      T=shape.T() if op not in PROJECT_OPS else "", device=device)
        t_cfg = time.perf_counter()
        try:
            args = make_inputs(op, shape, dtype, device)
            ref_out = REFERENCE[op](*args)
        except RuntimeError as exc:  # out of memory, typically
            log(f"[{i + 1}/{len(configs)}] {op} {label} {dtname}: skipped, inputs or eager failed: {exc}")
            args = ref_out = None
            continue
        series = ["eager"] + (["compile"] if compile_ else []) + [f"sasa:{b}" for b in backends]
        for name in series:
            extra: dict[str, Any] = {}
            try:
                if name == "compile":
                    skip = compile_broken or (
                        "time budget" if budget_s is not None and time.perf_counter() - start > budget_s else "")
                    if skip:
                        records.append(H.record(cinfo, op=op, backend=name, shape=label, **common,
                                                note=f"skipped: {skip}"))
                        continue
                    torch._dynamo.reset()  # one compiled graph per shape and thread count
                    compiled = torch.compile(REFERENCE[op], dynamic=False)
                    tc = time.perf_counter()
                    try:
                        out = compiled(*args)
                    except Exception as exc:  # no compiler, unsupported triton, ...: stop trying
                        compile_broken = f"torch.compile failed earlier ({type(exc).__name__})"
                        raise
                    H.sync(device)
                    extra["compile_s"] = round(time.perf_counter() - tc, 3)
                    fn = lambda: compiled(*args)  # noqa: E731
                elif name == "eager":
                    fn, out = (lambda: REFERENCE[op](*args)), ref_out
                else:
                    def fn(backend=name.split(":", 1)[1]):
                        with sk.use_backend(backend):
                            return API[op](*args)
                    out = fn()
                if name != "eager":
                    extra["max_abs_err"] = _max_abs_err(out, ref_out)
                del out
                tm = H.time_fn(fn, device, budget_s=preset.budget_s, min_reps=preset.min_reps)
                records.append(H.record(cinfo, op=op, backend=name, shape=label, timing=tm, **common, **extra))
            except sk.BackendUnavailableError as exc:
                records.append(H.record(cinfo, op=op, backend=name, shape=label, **common, note=f"unavailable: {exc}"))
            except Exception as exc:  # report and go on: one broken series must not hide the others
                msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
                records.append(H.record(cinfo, op=op, backend=name, shape=label, **common, **extra,
                                        note=f"failed: {msg}"))
                if os.environ.get("SASA_BENCH_DEBUG"):
                    traceback.print_exc()
        del args, ref_out
        parts = "  ".join(f"{r['backend']}={H.fmt_us(r['median_us'])}" for r in records[-len(series):])
        log(f"[{i + 1}/{len(configs)}] {op:<15} {label:<24} {dtname:<4} thr={threads}  {parts}"
            f"  ({time.perf_counter() - t_cfg:.1f} s)")
    if device == "cuda":
        torch.cuda.empty_cache()
    H.add_speedups(records, BASELINES, group_keys=["op", "shape", "dtype", "threads"])
    for rec in records:
        copy = floors.get("copy_gbps", {}).get(rec["threads"])
        rec["bw_frac"] = rec["gbps"] / copy if (copy and rec["gbps"] == rec["gbps"]) else float("nan")
        launch = floors.get("launch_host_us")
        if launch and rec["op"].startswith("probe"):
            rec["launch_ratio"] = rec.get("host_us", float("nan")) / launch
    return records


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def full_table(records: list[dict]) -> str:
    cols = ["op", "shape", "dtype", "threads", "backend", "median_us", "spread", "gbps", "speedup_vs_eager",
            "speedup_vs_compile", "note"]
    rows = []
    for r in records:
        rr = dict(r)
        rr["spread"] = f"{H.fmt_us(r['p20_us'])}..{H.fmt_us(r['p80_us'])}" if r["p20_us"] == r["p20_us"] else ""
        rr["note"] = str(r.get("note", ""))[:90]
        rows.append(rr)
    return H.format_table(
        rows, cols,
        headers=["op", "shape", "dtype", "thr", "backend", "median", "p20..p80", "GB/s", "vs eager", "vs compile",
                 "note"],
        formatters={"median_us": H.fmt_us, "gbps": lambda v: H.fmt_num(v, 1),
                    "speedup_vs_eager": H.fmt_ratio, "speedup_vs_compile": H.fmt_ratio},
    )


def compact_table(records: list[dict], backend_order: list[str]) -> str:
    """One line per (op, shape, dtype, threads): eager and compile times, then each backend's time
    and its speedups vs eager and vs compile."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in records:
        groups.setdefault((r["op"], r["shape"], r["dtype"], r["threads"]), {})[r["backend"]] = r
    several = len({k[3] for k in groups}) > 1
    cols = ["op", "shape", "dtype"] + (["thr"] if several else []) + ["eager", "compile"]
    for b in backend_order:
        cols += [f"sasa:{b}", f"{b} vs eager", f"{b} vs compile"]
    rows = []
    for (op, shape, dtype, thr), by in groups.items():
        row = {"op": op, "shape": shape, "dtype": dtype, "thr": thr,
               "eager": H.fmt_us(by.get("eager", {}).get("median_us")),
               "compile": H.fmt_us(by.get("compile", {}).get("median_us"))}
        for b in backend_order:
            rec = by.get(f"sasa:{b}", {})
            row[f"sasa:{b}"] = H.fmt_us(rec.get("median_us"))
            row[f"{b} vs eager"] = H.fmt_ratio(rec.get("speedup_vs_eager"))
            row[f"{b} vs compile"] = H.fmt_ratio(rec.get("speedup_vs_compile"))
        rows.append(row)
    return H.format_table(rows, cols)


def targets_text(records: list[dict], device: str) -> list[str]:
    """The compiled-backend issue's target: project 4096x4096 fp32 >= 3x eager (CPU)."""
    if device != "cpu":
        return []
    hits = [r for r in records if r["op"] == "project" and r["shape"] == "4096x4096" and r["dtype"] == "fp32"
            and r["backend"].startswith("sasa:") and r["backend"] != "sasa:torch"]
    if not hits:
        return ["target (project 4096x4096 fp32 >= 3x eager): no compiled CPU backend measured at that shape"]
    return [
        f"target (project 4096x4096 fp32 >= 3x eager): {r['backend']} threads={r['threads']}: "
        f"{H.fmt_ratio(r['speedup_vs_eager'])} ({'met' if r['speedup_vs_eager'] >= 3 else 'not met'})"
        for r in hits
    ]


def summary_text(records: list[dict], floors: dict, info: dict, preset: Preset, device: str,
                 backend_order: list[str], notes: list[str]) -> str:
    """Short report (about 30 lines): floors, GB/s of the project ops, probe latency."""
    lines = [f"sasa_kernels ops on {H.describe_machine(info)}", f"date {info['date']}"]
    copy = floors.get("copy_gbps", {})
    lines.append("copy bandwidth (2 x size / time): " + ", ".join(f"{v:.0f} GB/s @ {t} thr" for t, v in copy.items()))
    if "launch" in floors:
        lines.append("empty launch: " + ", ".join(
            f"{k} {v['host_us']:.1f} us/call host, {v['gpu_us']:.1f} us GPU" for k, v in floors["launch"].items()))
    lines += notes
    warn = H.busy_warning(info)
    if warn:
        lines.append(warn)
    cols = ["eager", "compile"] + [f"sasa:{b}" for b in backend_order]
    several = len({r["threads"] for r in records}) > 1
    keys = ["op", "shape", "dtype"] + (["threads"] if several else [])
    heads = ["op", "shape", "dtype"] + (["thr"] if several else [])
    key = {op: {s.label(op) for s in shapes} for op, shapes in preset.key_shapes.items()}
    proj = [r for r in records if r["op"] in PROJECT_OPS and r["shape"] in key[r["op"]]]
    if proj:
        lines.append("")
        lines.append("project ops: achieved GB/s (fraction of copy bandwidth); "
                     "bytes = 3 (project) or 4 (+rmsnorm) x rows x d x size")
        lines.append(H.pivot_table(
            proj, keys, "backend",
            lambda r: f"{r['gbps']:.3g} ({r['bw_frac']:.0%})" if r["gbps"] == r["gbps"] and r["bw_frac"] == r["bw_frac"]
            else H.fmt_num(r["gbps"], 1),
            col_order=cols, row_headers=heads))
    prb = [r for r in records if r["op"].startswith("probe") and r["shape"] in key[r["op"]]]
    if prb:
        lines.append("")
        if device == "cuda" and floors.get("launch_host_us"):
            lines.append(f"probe: us per call, back-to-back host loop (x the empty launch, {floors['launch_name']} "
                         f"{floors['launch_host_us']:.1f} us); sasa:* include the API's argument checks")
            def cell(r):
                ratio = r.get("launch_ratio", float("nan"))
                return f"{r['host_us']:.1f} ({ratio:.1f}x)" if ratio == ratio else "-"
        else:
            lines.append("probe: median time per call")
            def cell(r):
                return H.fmt_us(r["median_us"])
        lines.append(H.pivot_table(prb, keys, "backend", cell, col_order=cols, row_headers=heads))
    tgt = targets_text(records, device)
    if tgt:
        lines.append("")
        lines += tgt
    return "\n".join(lines)


def make_plots(records: list[dict], preset: Preset, out: Path, machine: str, backend_order: list[str]) -> list[Path]:
    """Per op: time and speedup-vs-eager against rows (B for the probe) at the base d, and
    against d at the base rows, one panel per dtype and thread count."""
    if not H.have_matplotlib():
        return []
    order = ["eager", "compile"] + [f"sasa:{b}" for b in backend_order]
    paths = []
    for op in OPS:
        recs = [r for r in records if r["op"] == op]
        if not recs:
            continue
        base = preset.base[op]
        same_c = (lambda r: r.get("C") == base.C) if op not in PROJECT_OPS else (lambda r: True)
        what = "rows" if op in PROJECT_OPS else "B (sequences)"
        sweeps = [
            ("", "rows", [r for r in recs if r["d"] == base.d and same_c(r)], f"{what} (d={base.d})"),
            ("_d", "d", [r for r in recs if r["rows"] == base.rows and same_c(r)],
             f"d ({what.split(' ')[0]}={base.rows})"),
        ]
        extra = f", C={base.C}" if op not in PROJECT_OPS else ""
        for suffix, x, sel, xlabel in sweeps:
            if len({r[x] for r in sel}) < 2:
                continue
            p = H.plot_sweep(sel, out / f"{op}{suffix}.png", x=x, series="backend", facets=("dtype", "threads"),
                             baseline="eager", title=f"sasa_kernels {op}: time vs {xlabel.split(' ')[0]}{extra}",
                             machine=machine,
                             xlabel=xlabel, series_order=order)
            if p:
                paths.append(p)
    return paths


def main(argv: Optional[list[str]] = None, *, default_preset: str = "quick") -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    grp = ap.add_mutually_exclusive_group()
    grp.add_argument("--quick", dest="preset", action="store_const", const="quick", help="small grid (default)")
    grp.add_argument("--full", dest="preset", action="store_const", const="full", help="the issues' full grid")
    grp.add_argument("--smoke", dest="preset", action="store_const", const="smoke", help="benchmarks/quick.py's grid")
    ap.add_argument("--ops", default=",".join(OPS), help=f"comma list out of {','.join(OPS)}")
    ap.add_argument("--dtypes", default=None, help="comma list out of fp32,bf16,fp16 (default: the preset's)")
    ap.add_argument("--threads", default=None, help="CPU thread counts, e.g. 1,2 (default: the preset's)")
    ap.add_argument("--backends", default=None, help="restrict to these of sk.backends(device), comma list")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    ap.add_argument("--no-floors", action="store_true", help="skip the copy-bandwidth / launch measurements")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="after this many seconds skip compiling; after 1.5x stop (for gpu_check.sh)")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results/<device>-<preset>-<date>)")
    ap.add_argument("--no-save", action="store_true", help="write no files (print only)")
    ap.add_argument("--print", dest="print_", default="table", choices=["table", "compact", "summary", "none"],
                    help="what to print last: every row, one line per shape, the short summary, or nothing")
    args = ap.parse_args(argv)
    preset_name = args.preset or default_preset
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available")
    preset = make_preset(device, preset_name)
    if args.dtypes:
        preset.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        bad = [d for d in preset.dtypes if d not in DTYPES]
        if bad:
            ap.error(f"--dtypes: unknown {bad}; choose from {list(DTYPES)}")
    if args.threads:
        preset.threads = [int(t) for t in args.threads.split(",")]
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    if any(o not in OPS for o in ops):
        ap.error(f"--ops: choose from {OPS}")
    backends, notes = bench_backends(device)
    if args.backends:
        wanted = [b.strip() for b in args.backends.split(",")]
        backends = [b for b in backends if b in wanted]
    out = Path(args.out) if args.out else H.default_results_dir(f"{device}-{preset_name}")

    torch.set_num_threads(preset.threads[0])
    info = H.machine_info(device)
    info["threads"] = ",".join(map(str, preset.threads))  # each record carries its own count
    info["backends"] = backends
    print(f"# {H.describe_machine(info)}", flush=True)
    timed = ["eager"] + ([] if args.no_compile else ["compile"]) + [f"sasa:{b}" for b in backends]
    print(f"# preset={preset_name} device={device} ops={ops} dtypes={preset.dtypes} threads={preset.threads} "
          f"series: {', '.join(timed)}", flush=True)
    for n in notes:
        print(f"# {n}", flush=True)
    floor_recs, floors = ([], {}) if args.no_floors else measure_floors(device, info, preset.threads)
    t0 = time.perf_counter()
    records = run(device, preset, ops=ops, backends=backends, compile_=not args.no_compile, budget_s=args.budget_s,
                  info=info, floors=floors, log=lambda s: print(s, flush=True))
    info["bench_seconds"] = round(time.perf_counter() - t0, 1)
    if not args.no_save and not args.no_plots and not H.have_matplotlib():
        notes.append("plots skipped: matplotlib is not installed")
    table = full_table(records)
    summary = summary_text(records, floors, info, preset, device, backends, notes)
    warn = H.busy_warning(info)
    if not args.no_save:
        out.mkdir(parents=True, exist_ok=True)
        H.write_csv(out / "ops.csv", floor_recs + records)
        H.write_json(out / "machine.json", {**info, "floors": floors, "preset": preset_name, "notes": notes,
                                            "loadavg_end": H.load_average()})
        (out / "table.txt").write_text(f"# {H.describe_machine(info)}\n{table}\n", encoding="utf-8")
        (out / "summary.txt").write_text(summary + "\n", encoding="utf-8")
        plots = [] if args.no_plots else make_plots(records, preset, out, info["machine"], backends)
    if args.print_ in ("table", "compact"):
        print()
        print(f"# {H.describe_machine(info)}; {info['bench_seconds']} s")
        print("# speedup = median(eager or compile) / median(backend): > 1 means faster than that baseline")
        print(table if args.print_ == "table" else compact_table(records, backends))
        for line in targets_text(records, device) + notes + ([warn] if warn else []):
            print(line)
    elif args.print_ == "summary":
        print()
        print(summary)
    if not args.no_save:
        pngs = f", {len(plots)} PNG" if plots else ""
        print(f"# wrote {out}/: ops.csv, table.txt, summary.txt, machine.json{pngs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
