#!/usr/bin/env python
"""Time to first token under tensor parallelism: guarded vs unguarded, TP=2, in one run.

    torchrun --standalone --nproc-per-node 2 benchmarks/bench_tp.py             # llama-mid, CPU (gloo)
    python benchmarks/bench_tp.py                                               # the same: starts torchrun itself
    python benchmarks/bench_tp.py --grid tiny --out /tmp/x                      # seconds: a smoke test
    torchrun --standalone --nproc-per-node 2 benchmarks/bench_tp.py --device cuda   # NCCL, one GPU per rank

The model (random weights, built from a config: nothing downloaded) is saved once by rank 0 and
loaded by every rank with the model's own tensor-parallel plan (``tp_plan="auto"``); ``llama-mid``
is hidden 1024, 16 blocks, vocab 32000, safety block 7, fused block 9 (the shape of
``bench_ttft.py``'s ``llama-mid``). Series, timed interleaved by ``sasa.bench.measure`` with a
fixed number of rounds (every rank must run the same calls in the same order):

- ``unguarded``: ``model.generate`` on the tensor-parallel model (the baseline);
- ``sasa-last``, ``sasa-all``: ``guard.generate`` (``scope="last"``/``"all"``, logits probe folded
  with one all-reduce when the guard is applied, untimed), with a probe that never fires.

Each call generates ``new_tokens`` tokens per row: the time to first token includes the prefill,
the guard's augmented pass and its one score all-reduce. Times are rank 0's wall clock (every rank
waits for the others inside each layer's all-reduce anyway). Peak memory above the model is
measured on every rank (first warm-up call, resident set on CPU). Ratios are ``series / unguarded``
of the same run; nothing is asserted.

Writes to ``--out`` (default ``benchmarks/results/tp2-<device>-<date>``): ``tp_ttft.csv`` (long
format, one row per series and point), ``tp_table.txt``, ``tp_ttft.png`` and ``tp_machine.json``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _runner as R  # noqa: E402
import torch  # noqa: E402

R.import_sasa()
import sasa.distributed as sd  # noqa: E402
from sasa import SASAConfig  # noqa: E402
from sasa.bench import Guarded, LoadMonitor, Point, Unguarded, format_table, measure, plot_records, summarize, write_csv  # noqa: E402  # noqa: E402


@dataclass(frozen=True)
class Spec:
    name: str
    hidden: int
    blocks: int
    intermediate: int
    heads: int
    safety: int
    fused: int
    vocab: int
    points: tuple[tuple[int, int], ...]
    rounds: int = 3
    new_tokens: int = 4


GRIDS = {
    "mid": Spec("llama-mid", 1024, 16, 2816, 16, safety=7, fused=9, vocab=32000, points=((1, 64), (1, 256)), rounds=6),
    "tiny": Spec("llama-tiny", 64, 4, 128, 4, safety=1, fused=2, vocab=512, points=((1, 16),), rounds=2, new_tokens=3),
}


def build_and_save(spec: Spec, directory: Path) -> None:
    import transformers as T

    config = T.LlamaConfig(vocab_size=spec.vocab, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
                           num_hidden_layers=spec.blocks, num_attention_heads=spec.heads,
                           num_key_value_heads=spec.heads, max_position_embeddings=4096, pad_token_id=0,
                           eos_token_id=1, bos_token_id=2)
    torch.manual_seed(0)
    model = T.LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = 0, 1
    model.save_pretrained(directory)


def make_inputs(spec: Spec, batch: int, length: int, device: torch.device) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(batch * 100003 + length)
    ids = torch.randint(3, spec.vocab, (batch, length), generator=gen).to(device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def guard_memory_mib(spec: Spec, batch: int, length: int, scope: str, tp: int, bytes_per: int = 4) -> float:
    """The README's formula for what the guard adds per rank beyond the unguarded call (MiB):
    ``H_s`` and ``H_f`` kept whole on every rank (``2 B T d``), plus for ``scope="last"`` one
    block's keys and values with the last row replaced (``2 B (H_kv / tp) T D``), for
    ``scope="all"`` one block's activations over the prompt (``B T (d + 2 d_ff / tp)``); the
    folded probe (``C (d + 1)`` float32) is negligible."""
    d, heads = spec.hidden, spec.heads
    hs_hf = 2 * batch * length * d
    if scope == "last":
        extra = 2 * batch * (heads // tp) * length * (d // heads)
    else:
        extra = batch * length * (d + 2 * spec.intermediate // tp)
    return (hs_hf + extra) * bytes_per / 2**20


def run(spec: Spec, device_type: str, out: Path, progress: bool) -> None:
    import torch.distributed as dist
    import transformers as T

    rank, world = sd.rank(), sd.world_size()
    info = R.machine_info(device_type)
    if rank == 0:
        print(f"# {R.describe(info)}; TP={world} ({dist.get_backend()})", flush=True)
    scratch = [tempfile.mkdtemp(prefix="sasa-bench-tp-") if rank == 0 else None]
    dist.broadcast_object_list(scratch, src=0)
    model_dir = Path(scratch[0]) / spec.name
    t0 = time.perf_counter()
    if rank == 0:
        build_and_save(spec, model_dir)
    dist.barrier()
    model = sd.load_pretrained(model_dir, T.AutoModelForCausalLM, placement=sd.Placement(tensor_parallel=True),
                               dtype=torch.float32)
    dist.barrier()
    if rank == 0:
        shutil.rmtree(scratch[0], ignore_errors=True)
        print(f"{spec.name}: built and loaded TP={world} in {time.perf_counter() - t0:.0f} s ({spec.hidden} hidden, "
              f"{spec.blocks} blocks, vocab {spec.vocab}, safety block {spec.safety}, fused block {spec.fused})",
              flush=True)
    local_mib = sum(p.to_local().numel() * p.element_size() if sd.is_dtensor(p) else p.numel() * p.element_size()
                    for p in model.parameters()) / 2**20
    device = next(model.parameters()).device
    series = [Unguarded(), Guarded(SASAConfig(spec.safety, spec.fused, scope="last")),
              Guarded(SASAConfig(spec.safety, spec.fused, scope="all"))]
    points = [Point(b, t, make_inputs(spec, b, t, device), spec.name) for b, t in spec.points]
    with LoadMonitor() as load:
        # A fixed number of rounds (no time budget): every rank runs exactly the same calls.
        found = measure(model, points, series, rounds=spec.rounds, warmup=1, new_tokens=spec.new_tokens,
                        progress=progress and rank == 0, log=print if rank == 0 else None)
    peaks = [{(m.series, m.point.batch, m.point.prompt_len): m.peak_mib for m in found}]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, peaks[0])
    locals_mib: list[Any] = [None] * world
    dist.all_gather_object(locals_mib, local_mib)
    if rank != 0:
        return
    report = load.report()
    records = summarize(found, series)
    for rec in records:
        key = (rec["series"], rec["batch"], rec["prompt_len"])
        base = ("unguarded", rec["batch"], rec["prompt_len"])
        rec["tp"] = world
        for r, peaks_r in enumerate(gathered):
            rec[f"peak_mib_rank{r}"] = peaks_r.get(key, float("nan"))
            rec[f"guard_extra_mib_rank{r}"] = peaks_r.get(key, float("nan")) - peaks_r.get(base, float("nan"))
        scope = rec["series"].removeprefix("sasa-")
        rec["guard_extra_mib_formula"] = (guard_memory_mib(spec, rec["batch"], rec["prompt_len"], scope, world)
                                          if scope in ("last", "all") else 0.0)
        rec["weights_mib_per_rank"] = locals_mib[0]
    extra_lines = [f"{r['series']:>10} B={r['batch']} T={r['prompt_len']}: guard memory per rank "
                   + ", ".join(f"rank {i} {r[f'guard_extra_mib_rank{i}']:+.1f} MiB" for i in range(world))
                   + f" (formula {r['guard_extra_mib_formula']:.1f} MiB)"
                   for r in records if r["series"] != "unguarded"]
    lines = [f"# {R.describe(info)}; TP={world} over {dist.get_backend()}, weights {locals_mib[0]:.0f} MiB per rank",
             format_table(records), *extra_lines,
             "every timed row passes (a probe that never fires), so each call decodes all its tokens",
             report.describe()]
    lines += [report.warning()] if report.warning() else []
    text = "\n".join(lines)
    print(text)
    meta = {"machine": info["machine"], "threads": info["threads"], "torch": info["torch"], "device": device_type,
            "version": f"{info['sasa_kernels']}+{info['git']}", "date": info["date"]}
    write_csv(records, out / "tp_ttft.csv", meta)
    (out / "tp_table.txt").write_text(text + "\n", encoding="utf-8")
    R.write_json(out / "tp_machine.json", {**info, "tp": world, "backend": dist.get_backend(), "model": spec.name,
                                           "loadavg_end": report.load_end, "others_cores": report.others_cores})
    png = plot_records(records, out / "tp_ttft.png",
                       title=f"{spec.name}, TP={world}: guard cost against the unguarded TP model\n"
                             f"{info['machine']}, {info['threads']} thread(s) per rank, torch {info['torch']}")
    print(f"# wrote {out}/: tp_ttft.csv, tp_table.txt, tp_machine.json{', tp_ttft.png' if png else ''}")


def relaunch(argv: list[str], nproc: int) -> int:
    """Not under torchrun: start this script under it (``nproc`` processes) and wait."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           str(Path(__file__).resolve()), *argv]
    print("# " + " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", choices=sorted(GRIDS), default="mid")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--nproc", type=int, default=2, help="processes when this script starts torchrun itself")
    ap.add_argument("--timeout-s", type=float, default=1800.0, help="process-group timeout per collective")
    ap.add_argument("--out", help="results folder (default benchmarks/results/tp2-<device>-<date>)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if sd.torchrun_env() is None:
        return relaunch(argv, args.nproc)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available")
    if args.device == "cpu" and torch.cuda.is_available():
        ap.error("--device cpu on a CUDA machine: transformers puts tensor-parallel shards on the GPUs; use --device cuda")
    sd.init_process_group(timeout_s=args.timeout_s)
    try:
        info = R.machine_info(args.device)
        date = str(info["date"])[:10].replace("-", "")
        out = Path(args.out) if args.out else R.RESULTS_DIR / f"tp{sd.world_size()}-{args.device}-{date}"
        run(GRIDS[args.grid], args.device, out, progress=not args.quiet)
    finally:
        sd.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
