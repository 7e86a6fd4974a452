#!/usr/bin/env python
"""Load on ``sasa serve`` vs transformers serve itself: requests/s and time to first token.

    python benchmarks/bench_serve.py                      # both models, 1/4/16 clients, 6 rounds (6 min on 2 cores)
    python benchmarks/bench_serve.py --models organism --rounds 1 --out /tmp/x   # a smoke test (about 1 min)

For each model two servers run side by side on 127.0.0.1: ``guarded`` (``sasa serve`` with the
model's probe) and ``unguarded`` (``transformers serve``'s own ``Serve``, same settings). They are
driven in turn, never together: each round runs every concurrency level on both, the series'
order alternating from round to round, so both share the machine's conditions. At ``c`` concurrent
clients a round sends ``c * per_client`` streaming chat requests (each client sends its next one
when the last has ended) and measures:

- ``requests_per_s``: requests completed / the round's wall time, the median over rounds (a round
  that stalled, on a machine shared with other work, does not decide it); ``requests_per_s_pooled``:
  all requests / all rounds' wall time;
- ``ttft_p50_ms``, ``ttft_p99_ms``: from sending a request to its first content chunk, over every
  request of every round (the guarded server holds the first token until the guard decided);
- ``loadavg``: the machine's 1-minute load average, the mean over the rounds' ends.

Models (nothing downloaded): ``organism``, the shipped model organism with its probe, asked the
benign held-out requests with pictures (the guard passes most; a refused one answers early);
``llama-mid``, a random Llama (hidden 1024, 16 blocks, the stand-in's word-level vocabulary) with
a hand-built probe that passes everything, so both series generate every token.

Both servers' processes run with ``OMP_WAIT_POLICY=PASSIVE`` (``--omp-wait-policy``): torch's
OpenMP threads then sleep when idle instead of spinning. On this project's 2-core machine, shared
with other work, the default (spinning) made one of the two llama-mid servers stall for seconds per
request, round after round (transformers serve's, 7 s a request against 0.5 s), which measured the
spinning, not the guard.

Writes ``serve.csv`` (long format: one row per model, series and concurrency), ``serve.png`` and
``serve_machine.json`` into ``--out`` (default ``benchmarks/results/serve-cpu-<date>``). Every
request has a timeout; ``--budget-s`` stops starting rounds once spent; the servers are stopped
at the end whatever happens. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _runner as R  # noqa: E402

R.import_sasa()
sys.path.insert(0, str(R.REPO_ROOT))
from tests.sasa import _serve_helpers as h  # noqa: E402

CONCURRENCY = (1, 4, 16)
REQUEST_TIMEOUT_S = 300.0


def organism_setup(root: Path) -> dict[str, Any]:
    from sasa import organism
    from sasa.organism.manifest import write_manifest

    manifest = write_manifest("heldout", root / "heldout.jsonl", per_object=2)
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    bodies = [{"messages": h.image_message(r["prompt"], manifest.parent / r["image"]), "max_tokens": 16,
               "temperature": 0} for r in rows if r["label"] == 0 and r.get("image")]
    return {"model": organism.MODEL_DIR, "probe": organism.PROBE_DIR, "bodies": bodies,
            "what": "model organism (LLaVA, 2.0M parameters), benign held-out requests with images, 16 tokens"}


def llama_mid_setup(root: Path) -> dict[str, Any]:
    from sasa.demo.stand_in import EXAMPLES

    model, tokenizer = h.save_text_model(root / "llama-mid", hidden=1024, layers=16)
    probe = h.save_probe(model, tokenizer, root / "llama-mid-probe", -50.0, safety_layer=7, fused_layer=9)
    del model
    bodies = [{"messages": [{"role": "user", "content": p}], "max_tokens": 8, "temperature": 0} for p in EXAMPLES]
    return {"model": root / "llama-mid", "probe": probe, "bodies": bodies,
            "what": "random Llama, hidden 1024, 16 blocks, probe passing everything, 8 tokens"}


MODELS: dict[str, Callable[[Path], dict[str, Any]]] = {"organism": organism_setup, "llama-mid": llama_mid_setup}


def one_request(url: str, body: dict) -> tuple[float, float, bool]:
    """``(time to first content chunk, total time, ok)`` of one streaming chat request, in seconds."""
    start = time.perf_counter()
    status, events, times = h.stream(url, body, timeout=REQUEST_TIMEOUT_S)
    end = time.perf_counter()
    first = next((t for e, t in zip(events, times) if isinstance(e, dict)
                  for c in e.get("choices", []) if c.get("delta", {}).get("content")), end)
    ok = status == 200 and not any(isinstance(e, dict) and "error" in e for e in events)
    return first - start, end - start, ok


def run_round(url: str, bodies: list[dict], clients: int, per_client: int) -> dict[str, Any]:
    """``clients`` threads, each sending ``per_client`` requests one after the other."""
    ttfts: list[float] = []
    failures = [0]
    lock = threading.Lock()

    def client(index: int) -> None:
        for k in range(per_client):
            body = bodies[(index * per_client + k) % len(bodies)]
            ttft, _, ok = one_request(url, body)
            with lock:
                ttfts.append(ttft)
                failures[0] += 0 if ok else 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(REQUEST_TIMEOUT_S * per_client)
    wall = time.perf_counter() - start
    return {"ttfts": ttfts, "wall_s": wall, "requests": len(ttfts), "failures": failures[0],
            "loadavg": R.load_average()}


def bench_model(name: str, setup: dict[str, Any], root: Path, rounds: int, per_client: int,
                deadline: float, env: dict[str, str]) -> list[dict[str, Any]]:
    chat = "/v1/chat/completions"
    argv = {"guarded": h.sasa_serve_argv(setup["model"], setup["probe"]), "unguarded": h.plain_serve_argv(setup["model"])}
    servers = {series: h.ServerProcess(args, root / f"{name}-{series}.log", env) for series, args in argv.items()}
    samples: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        for server in servers.values():
            server.wait_ready(timeout=300)
        for series, server in servers.items():  # warm-up, untimed
            one_request(server.url + chat, setup["bodies"][0])
        for r in range(rounds):
            if time.monotonic() > deadline:
                print(f"  {name}: budget spent after {r} round(s)")
                break
            order = ["guarded", "unguarded"] if r % 2 == 0 else ["unguarded", "guarded"]
            for clients in CONCURRENCY:
                for series in order:
                    result = run_round(servers[series].url + chat, setup["bodies"], clients, per_client)
                    samples.setdefault((series, clients), []).append(result)
                    print(f"  {name} round {r + 1} {series:9s} c={clients:2d}: {result['requests']} requests in "
                          f"{result['wall_s']:.2f} s, {result['failures']} failed", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    records = []
    for (series, clients), results in sorted(samples.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        ttfts = [t for res in results for t in res["ttfts"]]
        requests = sum(res["requests"] for res in results)
        records.append({
            "model": name, "series": series, "concurrency": clients, "rounds": len(results), "requests": requests,
            "failures": sum(res["failures"] for res in results),
            "requests_per_s": R.quantile([res["requests"] / res["wall_s"] for res in results], 0.5),
            "requests_per_s_pooled": requests / sum(res["wall_s"] for res in results),
            "ttft_p50_ms": 1e3 * R.quantile(ttfts, 0.5), "ttft_p99_ms": 1e3 * R.quantile(ttfts, 0.99),
            "loadavg": sum(res["loadavg"] for res in results) / len(results),
        })
    return records


def add_ratios(records: list[dict[str, Any]]) -> None:
    """``*_ratio``: guarded / unguarded at the same model and concurrency (above 1: more)."""
    base = {(r["model"], r["concurrency"]): r for r in records if r["series"] == "unguarded"}
    for rec in records:
        ref = base.get((rec["model"], rec["concurrency"]))
        if ref is None:
            continue
        for key in ("requests_per_s", "ttft_p50_ms", "ttft_p99_ms"):
            rec[key.replace("_ms", "") + "_ratio"] = rec[key] / ref[key]


def plot(records: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    models = sorted({r["model"] for r in records})
    fig, axes = plt.subplots(len(models), 2, figsize=(10, 3.6 * len(models)), squeeze=False)
    for row, model in enumerate(models):
        for col, (key, label) in enumerate((("requests_per_s", "requests/s"), ("ttft_p50_ms", "TTFT ms (p50; bars p99)"))):
            ax = axes[row][col]
            for series, style in (("unguarded", "o--"), ("guarded", "s-")):
                pts = sorted((r for r in records if r["model"] == model and r["series"] == series),
                             key=lambda r: r["concurrency"])
                xs = [p["concurrency"] for p in pts]
                ax.plot(xs, [p[key] for p in pts], style, label=series)
                if key == "ttft_p50_ms":
                    ax.vlines(xs, [p["ttft_p50_ms"] for p in pts], [p["ttft_p99_ms"] for p in pts], alpha=0.4)
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(CONCURRENCY), [str(c) for c in CONCURRENCY])
            ax.set_xlabel("concurrent clients")
            ax.set_title(f"{model}: {label}")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rounds", type=int, default=6, help="rounds per model (each: every concurrency, both series)")
    parser.add_argument("--per-client", type=int, default=2, help="requests each client sends per round")
    parser.add_argument("--budget-s", type=float, default=540.0, help="no round starts after this many seconds")
    parser.add_argument("--omp-wait-policy", default="PASSIVE",
                        help="OMP_WAIT_POLICY of both servers ('' leaves it unset: OpenMP's default)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.per_client < 1:
        parser.error("--rounds and --per-client: expected >= 1")
    info = R.machine_info("cpu")
    out = args.out or R.RESULTS_DIR / f"serve-cpu-{dt.datetime.now(dt.timezone.utc):%Y%m%d}"
    print(R.describe(info), flush=True)
    started = time.monotonic()
    deadline = started + args.budget_s
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        root = Path(tmp)
        for name in args.models:
            setup = MODELS[name](root)
            print(f"{name}: {setup['what']}", flush=True)
            env = {"OMP_WAIT_POLICY": args.omp_wait_policy} if args.omp_wait_policy else {}
            records += bench_model(name, setup, root, args.rounds, args.per_client, deadline, env)
    add_ratios(records)
    info.update({"wall_s": round(time.monotonic() - started, 1), "loadavg_end": R.load_average(),
                 "concurrency": list(CONCURRENCY), "rounds": args.rounds, "per_client": args.per_client,
                 "omp_wait_policy": args.omp_wait_policy or "(unset)"})
    R.write_csv(out / "serve.csv", records, first=("model", "series", "concurrency"))
    R.write_json(out / "serve_machine.json", info)
    plot(records, out / "serve.png")
    for rec in records:
        print(f"{rec['model']:10s} {rec['series']:9s} c={rec['concurrency']:2d}  {rec['requests_per_s']:7.2f} req/s  "
              f"TTFT p50 {rec['ttft_p50_ms']:8.1f} ms  p99 {rec['ttft_p99_ms']:8.1f} ms  ({rec['requests']} requests, "
              f"{rec['failures']} failed)")
    warning = R.busy_warning(info, info["threads"])
    if warning:
        print(warning)
    print(f"wrote {out} in {info['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
