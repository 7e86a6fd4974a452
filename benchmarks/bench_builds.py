"""Two builds of the CPU kernels against each other, in alternating processes.

A kernel change is judged by the ratio of its time to the time before it, on the same machine in
the same minutes. Two builds cannot share a process (one ``sasa_kernels._C`` per interpreter), so
each round runs one child process per build, the order swapped every round, and a child times
every point once (median of 7 batches). The ratio is ``new / old`` per round; the summary gives
its median and range over the rounds (above 1 = the new build is slower).

    git worktree add /tmp/old <commit> && (cd /tmp/old && python setup.py build_ext --inplace)
    python benchmarks/bench_builds.py --old /tmp/old --out benchmarks/results/<folder>

``--new`` defaults to this checkout. Set ``SASA_CPU_CAPABILITY`` to compare one instruction set
(it reaches both children). Writes ``builds.csv`` (long format), ``builds_summary.txt``, ``builds.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _plot  # noqa: E402
from _runner import REPO_ROOT, describe, format_table, machine_info, write_csv, write_json  # noqa: E402

PROJECT_SHAPES = ((16, 4096), (512, 4096), (4096, 896), (4096, 4096))
PROBE_BATCHES, PROBE_D = (1, 64), 4096
TINY = dict(shapes=((4, 64), (3, 127)), batches=(1, 3), d=64)  # --tiny: seconds, for the script's own test


def _time(fn, calls: int) -> float:
    fn()
    batches = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        batches.append((time.perf_counter() - start) / calls)
    return statistics.median(batches) * 1e6


def child(threads: int, tiny: bool) -> None:
    """Time every point with the sasa_kernels first on sys.path; print one JSON line."""
    import torch

    import sasa_kernels as sk
    from sasa_kernels.backends import compiled

    torch.set_num_threads(threads)
    ops, times = torch.ops.sasa, {}
    shapes, batches, pd = (TINY["shapes"], TINY["batches"], TINY["d"]) if tiny else (PROJECT_SHAPES, PROBE_BATCHES, PROBE_D)
    for dtype in (torch.bfloat16, torch.float32):
        name = str(dtype).removeprefix("torch.")
        for rows, d in shapes:
            g = torch.Generator().manual_seed(0)
            hs, hf = torch.randn(rows, d, generator=g).to(dtype), torch.randn(rows, d, generator=g).to(dtype)
            w = (1 + 0.1 * torch.randn(d, generator=g)).to(dtype)
            out, normed = torch.empty_like(hs), torch.empty_like(hs)  # preallocated: no page faults timed
            calls = 20 if tiny else max(3, int(2e7 / (rows * d)))
            times[f"project|{rows}x{d}|{name}"] = _time(
                lambda: ops._compiled_project(hs, hf, out, 0.0, 1.0, 1e-6), calls)
            times[f"project_rmsnorm|{rows}x{d}|{name}"] = _time(
                lambda: ops._compiled_project_rmsnorm(hs, hf, w, out, normed, 0.0, 1.0, 1e-6, 1e-6, 0.0), calls)
        for batch in batches:
            for norm in (False, True):
                g = torch.Generator().manual_seed(0)
                hidden = torch.randn(batch, 16, pd, generator=g).to(dtype)
                weight, bias = torch.randn(8, pd, generator=g) / pd**0.5, torch.randn(8, generator=g)
                norm_weight = (1 + 0.1 * torch.randn(pd, generator=g)).to(dtype) if norm else None
                positions = torch.randint(0, 16, (batch,), generator=g)
                times[f"probe{'_norm' if norm else ''}|B={batch} T=16 C=8 d={pd}|{name}"] = _time(
                    lambda: sk.probe(hidden, weight, bias, positions=positions, norm_weight=norm_weight),
                    20 if tiny else 2000 if batch == 1 else 100)
    info = compiled.build_info() or {}
    root = Path(sk.__file__).resolve().parent.parent
    git = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    print(json.dumps({"times": times, "path": str(root), "git": git.stdout.strip() if git.returncode == 0 else "?",
                      "cpu_capability": info.get("cpu_capability", "not built")}))


def _run_child(build: Path, threads: int, tiny: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=str(build))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--threads", str(threads)] + (["--tiny"] if tiny else [])
    with tempfile.TemporaryDirectory() as cwd:  # no checkout on sys.path through the working directory
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=1200)
    if result.returncode != 0:
        raise SystemExit(f"the child for {build} failed:\n{result.stderr[-3000:]}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    if Path(data["path"]).resolve() != build.resolve():
        raise SystemExit(f"the child for {build} imported sasa_kernels from {data['path']}: build it in place "
                         "(python setup.py build_ext --inplace) or check PYTHONPATH")
    return data


def _plot_ratios(summary: list[dict], path: Path) -> Path | None:
    plt = _plot._pyplot()
    if plt is None or not summary:
        return None
    threads = sorted({s["threads"] for s in summary})
    fig, axes = plt.subplots(1, len(threads), figsize=(7 * len(threads), 0.32 * len(summary) / len(threads) + 1.5),
                             squeeze=False, sharey=True)
    for ax, t in zip(axes[0], threads):
        rows = [s for s in summary if s["threads"] == t]
        y = list(range(len(rows)))
        ratio = [s["ratio"] for s in rows]
        err = [[s["ratio"] - s["ratio_min"] for s in rows], [s["ratio_max"] - s["ratio"] for s in rows]]
        ax.barh(y, ratio, xerr=err, color=["tab:green" if r < 1 else "tab:red" for r in ratio], alpha=0.7)
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_yticks(y, [f"{s['op']} {s['shape']} {s['dtype']}" for s in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("new / old time (median over rounds; bars: range)")
        ax.set_title(f"{t} thread{'s' if t > 1 else ''}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, help="checkout with its extension built in place (the baseline)")
    ap.add_argument("--new", type=Path, default=REPO_ROOT, help="checkout to compare (default: this one)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", default="1,2", help="comma list (child mode: one number)")
    ap.add_argument("--out", type=Path, help="results folder (default: print only)")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes: a smoke test of the script itself")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(int(args.threads), args.tiny)
    if args.old is None:
        ap.error("--old is required")
    if args.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {args.rounds}")
    info = machine_info("cpu")
    builds = {"old": args.old, "new": args.new}
    records, seen = [], {}
    for rnd in range(args.rounds):
        for t in (int(x) for x in args.threads.split(",")):
            for build in (("old", "new") if rnd % 2 == 0 else ("new", "old")):
                data = _run_child(builds[build], t, args.tiny)
                seen[build] = f"git {data['git']}, {data['cpu_capability']}"
                for key, us in data["times"].items():
                    op, shape, dtype = key.split("|")
                    records.append(dict(op=op, shape=shape, dtype=dtype, threads=t, round=rnd, build=build,
                                        path=str(builds[build]), git=data["git"], cpu_capability=data["cpu_capability"],
                                        median_us=us, machine=info["machine"], date=info["date"]))
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    summary, table = [], []
    keys = sorted({(r["threads"], r["op"], r["shape"], r["dtype"]) for r in records},
                  key=lambda k: (k[0], k[3], k[1], k[2]))
    for t, op, shape, dtype in keys:
        by = {(r["build"], r["round"]): r["median_us"] for r in records
              if (r["threads"], r["op"], r["shape"], r["dtype"]) == (t, op, shape, dtype)}
        per_round = sorted(by[("new", i)] / by[("old", i)] for i in range(args.rounds))
        old = statistics.median(by[("old", i)] for i in range(args.rounds))
        new = statistics.median(by[("new", i)] for i in range(args.rounds))
        s = dict(threads=t, op=op, shape=shape, dtype=dtype, old_us=old, new_us=new,
                 ratio=statistics.median(per_round), ratio_min=per_round[0], ratio_max=per_round[-1])
        summary.append(s)
        table.append([op, shape, dtype, str(t), f"{old:.1f}", f"{new:.1f}", f"{s['ratio']:.2f}",
                      f"{per_round[0]:.2f}..{per_round[-1]:.2f}"])
    text = "\n".join([
        f"# {describe(info)}; {args.rounds} rounds; old = {args.old} ({seen.get('old')}), "
        f"new = {args.new} ({seen.get('new')})",
        format_table(table, ["op", "shape", "dtype", "thr", "old us", "new us", "new/old", "per round"]),
        "new/old: median over rounds of the per-round ratio (above 1 = the new build is slower)"])
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_csv(args.out / "builds.csv", records)
        write_json(args.out / "builds_machine.json", info)
        (args.out / "builds_summary.txt").write_text(text + "\n", encoding="utf-8")
        _plot_ratios(summary, args.out / "builds.png")
        print(f"# wrote {args.out}/", file=sys.stderr)


if __name__ == "__main__":
    main()
