#!/usr/bin/env python
"""End to end: the guard's time to first token, per-token cost and peak memory on random models.

    python benchmarks/bench_ttft.py                        # CPU grid: 37 min on 2 shared cores (see below)
    python benchmarks/bench_ttft.py --grid full            # every length x batch, both models (hours on CPU)
    python benchmarks/bench_ttft.py --grid gpu --device cuda --budget-s 240   # hidden 4096, 32 blocks, bf16
    python benchmarks/bench_ttft.py --grid tiny --out /tmp/x                  # seconds: a smoke test

Series, timed interleaved by ``sasa.bench.measure`` (one warm-up round, which also measures peak
memory, then at least ``rounds`` rounds; each call generates ``new_tokens`` tokens per row):

- ``unguarded``: ``model.generate``, no guard applied (the baseline);
- ``sasa-all``, ``sasa-last``: ``guard.generate`` with ``scope="all"`` / ``"last"``, eager; the
  guard is applied before and removed after each call, untimed, with a probe that never fires, so
  every row generates every token;
- ``sasa-last-compiled``: ``scope="last"`` with ``compile_augmented=True`` (blocks ``s+2..L-1`` of
  the augmented token as one ``torch.compile`` graph with dynamic shapes, after the forward); each
  point's warm-up round takes any compile (batch 1 and larger batches get one graph each);
- ``two-pass``: the naive method (``_two_pass.py``): a second full forward with block ``s``'s
  output replaced by the projection.

Models (random weights: timing does not depend on them; built from configs, nothing downloaded):
``llama-mid`` hidden 1024, 16 blocks, vocab 32000, safety block 7, fused block 9; ``llava-mid`` the
same language model behind a CLIP ViT-B/14 tower at 224 px (256 image tokens, one image per row);
``--grid gpu``: hidden 4096, 32 blocks (Llama-7B and LLaVA-1.5-7B shapes), bf16, blocks 13 and 15.

Writes to ``--out`` (default ``benchmarks/results/<machine>-<date>``): ``ttft.csv`` (long format:
one row per model, series, batch and prompt length), ``ttft_table.txt``, ``ttft_<model>.png`` and
``ttft_machine.json``. Ratios are ``series / unguarded`` (above 1 = slower). Nothing is asserted.

Wall time of the default CPU grid: 2199 s on the project's 2-core Xeon (2 threads, torch 2.13)
while other processes used 1.4 of its 2 cores; the largest points (B=8 T=256, B=1 T=2048) take
5-8 minutes each there. ``--budget-s`` bounds a run; ``--models`` and ``--series`` narrow it.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _runner as R  # noqa: E402
import torch  # noqa: E402

R.import_sasa()
from _two_pass import TwoPass  # noqa: E402

from sasa import SASAConfig  # noqa: E402
from sasa.bench import Guarded, LoadMonitor, Point, Unguarded, format_table, measure, plot_records, summarize, write_csv  # noqa: E402  # noqa: E402


@dataclass(frozen=True)
class ModelSpec:
    """A random model to build: language model shape, optional CLIP tower, layers, dtype."""

    name: str
    hidden: int
    blocks: int
    intermediate: int
    heads: int
    safety: int
    fused: int
    vocab: int = 32000
    vision: Optional[dict] = None  # CLIPVisionConfig fields; image tokens = (image_size / patch_size)^2
    dtype: str = "float32"

    @property
    def image_tokens(self) -> int:
        return (self.vision["image_size"] // self.vision["patch_size"]) ** 2 if self.vision else 0


CLIP_B14_224 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                    image_size=224, patch_size=14)
CLIP_L14_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=336, patch_size=14)
LLAMA_MID = ModelSpec("llama-mid", 1024, 16, 2816, 16, safety=7, fused=9)
LLAVA_MID = ModelSpec("llava-mid", 1024, 16, 2816, 16, safety=7, fused=9, vision=CLIP_B14_224)
LLAMA_7B = ModelSpec("llama-7b-shape", 4096, 32, 11008, 32, safety=13, fused=15, dtype="bfloat16")
LLAVA_7B = ModelSpec("llava-7b-shape", 4096, 32, 11008, 32, safety=13, fused=15, vision=CLIP_L14_336,
                     dtype="bfloat16")
LLAMA_TINY = ModelSpec("llama-tiny", 64, 4, 128, 4, safety=1, fused=2, vocab=512)
LLAVA_TINY = ModelSpec("llava-tiny", 64, 4, 128, 4, safety=1, fused=2, vocab=512,
                       vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   image_size=28, patch_size=14))

LENGTHS, BATCHES = (64, 256, 1024, 2048), (1, 8)
EVERY_POINT = [(b, t) for b in BATCHES for t in LENGTHS]


@dataclass(frozen=True)
class Grid:
    """Which models at which (batch, prompt length) points, and how hard to time each point.

    A vision model's prompt length counts its image tokens; shorter lengths are raised to the
    image tokens plus 64.
    """

    models: tuple[tuple[ModelSpec, tuple[tuple[int, int], ...]], ...]
    new_tokens: int = 4
    rounds: int = 3
    max_rounds: int = 8
    point_budget_s: float = 30.0


GRIDS = {
    # 37 minutes on the project's 2 shared CPU cores (module docstring); the big points dominate.
    "cpu": Grid(((LLAMA_MID, ((1, 64), (1, 256), (1, 1024), (1, 2048), (8, 64), (8, 256))),
                 (LLAVA_MID, ((1, 320), (1, 1024))))),
    "full": Grid(((LLAMA_MID, tuple(EVERY_POINT)), (LLAVA_MID, tuple(EVERY_POINT)))),
    # Sized (not yet measured) for 2-3 minutes on an H200: calls of 10-600 ms, at least 3 rounds each.
    "gpu": Grid(((LLAMA_7B, tuple(EVERY_POINT)), (LLAVA_7B, tuple(EVERY_POINT))), new_tokens=8, rounds=3,
                max_rounds=8, point_budget_s=6.0),
    "tiny": Grid(((LLAMA_TINY, ((1, 16),)), (LLAVA_TINY, ((1, 16),))), new_tokens=3, rounds=1, max_rounds=1),
}

#: The series, in the order of the first round. Each entry builds one series for a model spec.
SERIES: dict[str, Callable[[ModelSpec], Any]] = {
    "unguarded": lambda spec: Unguarded(),
    "sasa-all": lambda spec: Guarded(SASAConfig(spec.safety, spec.fused, scope="all")),
    "sasa-last": lambda spec: Guarded(SASAConfig(spec.safety, spec.fused, scope="last")),
    "sasa-last-compiled": lambda spec: Guarded(SASAConfig(spec.safety, spec.fused, scope="last", compile_augmented=True),
                                               name="sasa-last-compiled"),
    "two-pass": lambda spec: TwoPass(spec.safety, spec.fused),
}


def build_model(spec: ModelSpec, device: str) -> Any:
    """The random model, built in its dtype directly on ``device`` (no float32 host copy)."""
    import transformers as T

    vocab = spec.vocab + (64 if spec.vision else 0)  # room for the image token
    text = T.LlamaConfig(vocab_size=vocab, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
                         num_hidden_layers=spec.blocks, num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
                         max_position_embeddings=4096, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    previous = torch.get_default_dtype()
    torch.manual_seed(0)
    torch.set_default_dtype(getattr(torch, spec.dtype))
    try:
        with torch.device(device):
            if spec.vision is None:
                model = T.LlamaForCausalLM(text)
            else:
                config = T.LlavaConfig(vision_config=T.CLIPVisionConfig(**spec.vision), text_config=text,
                                       image_token_index=spec.vocab, image_seq_length=spec.image_tokens)
                model = T.LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = 0, 1
    return model


def make_inputs(spec: ModelSpec, batch: int, length: int, device: str) -> dict[str, torch.Tensor]:
    """Random prompt ids (no padding); for a vision model ``USER: <image tokens> ...`` and pixels."""
    gen = torch.Generator().manual_seed(batch * 100003 + length)
    ids = torch.randint(3, spec.vocab, (batch, length), generator=gen)
    inputs: dict[str, torch.Tensor] = {}
    if spec.vision:
        ids[:, 4:4 + spec.image_tokens] = spec.vocab
        size = spec.vision["image_size"]
        inputs["pixel_values"] = torch.randn(batch, 3, size, size, generator=gen).to(device, getattr(torch, spec.dtype))
    inputs["input_ids"] = ids.to(device)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    return inputs


def run(grid: Grid, device: str, series_names: list[str], *, budget_s: Optional[float], progress: bool,
        log: Callable[[str], None]) -> tuple[list[dict], list[str]]:
    """Measure every model of ``grid``; returns the records and the points skipped for time."""
    deadline = None if budget_s is None else time.perf_counter() + budget_s
    records, skipped = [], []
    for spec, points in grid.models:
        if deadline is not None and time.perf_counter() > deadline:
            skipped.append(f"{spec.name} (all points)")
            continue
        t0 = time.perf_counter()
        model = build_model(spec, device)
        log(f"{spec.name}: built in {time.perf_counter() - t0:.0f} s ({spec.hidden} hidden, {spec.blocks} blocks, "
            f"{spec.dtype}, safety block {spec.safety}, fused block {spec.fused})")
        series = [SERIES[name](spec) for name in series_names]
        todo = sorted({(b, max(t, spec.image_tokens + 64) if spec.vision else t) for b, t in points},
                      key=lambda p: (p[0] * p[1], p))
        pts = [Point(b, t, make_inputs(spec, b, t, device), spec.name) for b, t in todo]
        found = measure(model, pts, series, rounds=grid.rounds, warmup=1, new_tokens=grid.new_tokens,
                        max_rounds=grid.max_rounds, point_budget_s=grid.point_budget_s, progress=progress,
                        log=log, deadline=deadline)
        done = {(m.point.batch, m.point.prompt_len) for m in found}
        skipped += [f"{spec.name} B={p.batch} T={p.prompt_len}" for p in pts if (p.batch, p.prompt_len) not in done]
        for rec in summarize(found, series):
            rec.update(dtype=spec.dtype, hidden=spec.hidden, blocks=spec.blocks, safety_layer=spec.safety,
                       fused_layer=spec.fused, image_tokens=spec.image_tokens, new_tokens=grid.new_tokens)
            records.append(rec)
        del model, pts, found
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return records, skipped


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--grid", choices=sorted(GRIDS), default=None, help="default: gpu on cuda, cpu on cpu")
    ap.add_argument("--series", default=",".join(SERIES), help=f"comma list out of {','.join(SERIES)}")
    ap.add_argument("--models", help="only these models of the grid, comma list (default: all)")
    ap.add_argument("--budget-s", type=float, help="start no new point after this many seconds (listed as skipped)")
    ap.add_argument("--out", help="results folder (default benchmarks/results/<machine>-<date>)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available")
    names = [s.strip() for s in args.series.split(",") if s.strip()]
    if "unguarded" not in names or any(n not in SERIES for n in names):
        ap.error(f"--series: a comma list out of {list(SERIES)} that includes unguarded (the baseline)")
    grid_name = args.grid or ("gpu" if args.device == "cuda" else "cpu")
    grid = GRIDS[grid_name]
    if args.models:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        known = [spec.name for spec, _ in grid.models]
        if any(m not in known for m in wanted):
            ap.error(f"--models: this grid has {known}")
        grid = dataclasses.replace(grid, models=tuple(e for e in grid.models if e[0].name in wanted))
    info = R.machine_info(args.device)
    out = Path(args.out) if args.out else R.results_dir(info)
    print(f"# {R.describe(info)}", flush=True)
    t0 = time.perf_counter()
    with LoadMonitor() as load:
        records, skipped = run(grid, args.device, names, budget_s=args.budget_s, progress=not args.quiet,
                               log=lambda line: print(line, flush=True))
    seconds = time.perf_counter() - t0
    report = load.report()
    lines = [f"# {R.describe(info)}; {seconds:.0f} s wall", format_table(records),
             "every timed row passes (probes that never fire), so each call decodes all its tokens",
             report.describe()]
    lines += [f"skipped (over --budget-s): {', '.join(skipped)}"] if skipped else []
    lines += [report.warning()] if report.warning() else []
    text = "\n".join(lines)
    print(text)
    extra = {"machine": info["machine"], "threads": info["threads"], "torch": info["torch"], "device": args.device,
             "version": f"{info['sasa_kernels']}+{info['git']}", "date": info["date"]}
    write_csv(records, out / "ttft.csv", extra)
    (out / "ttft_table.txt").write_text(text + "\n", encoding="utf-8")
    R.write_json(out / "ttft_machine.json", {**info, "seconds": round(seconds, 1), "grid": grid_name,
                                             "loadavg_end": report.load_end, "others_cores": report.others_cores,
                                             "skipped": skipped})
    pngs = [plot_records([r for r in records if r["model"] == m], out / f"ttft_{m}.png",
                         title=f"{m}: guard cost against the unguarded model\n{info['machine']}, {info['threads']} "
                               f"threads, torch {info['torch']}")
            for m in dict.fromkeys(r["model"] for r in records)]
    print(f"# wrote {out}/: ttft.csv, ttft_table.txt, ttft_machine.json, {sum(p is not None for p in pngs)} PNG")
    return 0


if __name__ == "__main__":
    sys.exit(main())
