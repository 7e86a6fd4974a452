"""scope="last": the augmented pass riding along inside the prefill vs run after it, against the
unguarded model, in one process, interleaved (docs/method.md section 4; sasa/_ride.py).

    python3 benchmarks/bench_ride.py [--dtype float32|bfloat16] [--lengths 64,256,1024] [--rounds 11]

Mid-size random Llama (hidden 1024, 16 blocks, vocab 32000), safety block 7, fused block 9, batch 1,
one new token, one thread. Prints time-to-first-token ratios (above 1 = slower than unguarded) and
writes benchmarks/results/ride-<machine>-<date>/ride.csv.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import transformers as T

from sasa import SASAConfig, apply_sasa


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--lengths", default="64,256,1024")
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = T.LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=16,
                           num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=4096)
    model = T.LlamaForCausalLM(config).eval().to(getattr(torch, args.dtype))
    model.generation_config.pad_token_id = 0
    guard = apply_sasa(model, SASAConfig(7, 9, scope="last", feature="hidden"), probe=(torch.zeros(1024), torch.tensor(-30.0)))
    gen = dict(max_new_tokens=1, do_sample=False)
    machine = f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"
    rows = []
    try:
        for length in (int(x) for x in args.lengths.split(",")):
            ids = torch.randint(3, 32000, (1, length), generator=torch.Generator().manual_seed(length))
            inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids))

            def plain() -> None:
                with torch.no_grad():
                    guard._generate_patch.original(**inputs, **gen)  # the model's own generate

            def ride() -> None:
                guard.generate(**inputs, **gen)

            def after() -> None:
                guard._ride = False
                try:
                    guard.generate(**inputs, **gen)
                finally:
                    guard._ride = True

            series = {"unguarded": plain, "ride": ride, "after_forward": after}
            for fn in series.values():
                fn()  # warm-up
            times = {name: [] for name in series}
            for r in range(args.rounds):
                order = list(series)[r % 3:] + list(series)[:r % 3]  # rotate the order each round
                for name in order:
                    start = time.perf_counter()
                    series[name]()
                    times[name].append(time.perf_counter() - start)
            base = statistics.median(times["unguarded"])
            for name, values in times.items():
                rows.append({"dtype": args.dtype, "prompt_tokens": length, "series": name,
                             "ttft_ms": round(statistics.median(values) * 1e3, 2),
                             "ratio": round(statistics.median(values) / base, 4),
                             "load": round(os.getloadavg()[0], 2), "machine": machine})
            print(" ".join(f"{r['series']} {r['ratio']:.3f}x" for r in rows[-3:]), f"at T={length} ({args.dtype}, "
                  f"unguarded {base * 1e3:.1f} ms, load {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        guard.remove()
    out = Path(__file__).resolve().parent / "results" / f"ride-cpu-{datetime.date.today():%Y%m%d}"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ride.csv"
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
