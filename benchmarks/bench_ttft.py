#!/usr/bin/env python
"""Time to first token of ``guard.generate`` (SASA, scope ``all`` and ``last``) vs ``model.generate``.

Usage::

    python benchmarks/bench_ttft.py --device cpu                 # small Llama-shaped model, ~3 min on 2 cores
    python benchmarks/bench_ttft.py --device cpu --full          # every prompt length x batch
    python benchmarks/bench_ttft.py --device cuda --gpu-shapes --budget-s 120 --out DIR --print summary

Time to first token is a ``generate(max_new_tokens=1)`` call, greedy: for ``model.generate`` the
prefill and the first token; for ``guard.generate`` the same plus SASA scoring (the augmented pass
and the probe) in between. Series per point: ``generate`` (baseline), ``sasa-all``, ``sasa-last``,
and ``decode-step`` (one single-token forward against a cache of the prompt's length: what
``scope="last"`` is expected to cost). Expected ratios to ``generate``::

    sasa-all  ~ 1 + (L - 1 - s) / L        (blocks s+1..L-1 re-run over the whole prompt)
    sasa-last ~ 1 + decode-step / generate  (one token through those blocks)

``ratio_vs_generate = median(series) / median(generate)`` (> 1 = slower) and ``expected_ratio`` go
to ``ttft.csv`` (long format, ``benchmarks/_common.py``); ``ttft_overhead.png`` plots the ratio
against prompt length, one panel per batch size. Random weights: the timing does not depend on them.

Models: ``--device cpu``: a small Llama-shaped model (hidden 256, 8 blocks, 8 heads, vocab 4096,
fp32), prompt lengths 64..2048, batch 1..16. ``--gpu-shapes``: Llama-7B-shaped (hidden 4096,
32 blocks, vocab 32000) and LLaVA-1.5-7B-shaped (CLIP ViT-L/14 at 336 px, 576 image tokens, the
same language model) with random bf16 weights; ``--layers N`` shrinks the language model's block
count (say so when reporting). Safety/fused blocks: 13/15 of 32 (SASA.md), scaled to the depth.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as H  # noqa: E402

import torch  # noqa: E402

sk = H.import_sasa_kernels()
try:
    import sasa  # noqa: F401
except ImportError:
    sys.path.insert(0, str(H.REPO_ROOT / "python"))
from sasa import SASAConfig, apply_sasa  # noqa: E402
from sasa import _compat as C  # noqa: E402

SERIES = ("generate", "sasa-all", "sasa-last", "decode-step")
CPU_LENGTHS = (64, 256, 1024, 2048)
CPU_BATCHES = (1, 4, 16)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def _llama_config(hidden: int, layers: int, heads: int, kv_heads: int, inter: int, vocab: int):
    import transformers as T

    return T.LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=4096,
        pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )


def _build(cls: Any, config: Any, device: str, dtype: torch.dtype) -> Any:
    # Build directly in the target dtype on the target device: a 7B model in fp32 on the host
    # would need 27 GB and minutes of initialisation.
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls(config)
    finally:
        torch.set_default_dtype(old)
    model.eval()
    gen = model.generation_config
    gen.pad_token_id, gen.eos_token_id, gen.do_sample = 0, 1, False
    return model


def small_llama(device: str, layers: int) -> tuple[Any, str]:
    import transformers as T

    cfg = _llama_config(256, layers, 8, 8, 688, 4096)
    torch.manual_seed(0)
    return _build(T.LlamaForCausalLM, cfg, device, torch.float32), f"llama-small(d=256,L={layers})"


def llama7b(device: str, layers: int) -> tuple[Any, str]:
    import transformers as T

    cfg = _llama_config(4096, layers, 32, 32, 11008, 32000)
    torch.manual_seed(0)
    return _build(T.LlamaForCausalLM, cfg, device, torch.bfloat16), f"llama-7b-shape(L={layers})"


LLAVA_IMAGE_TOKEN = 32000
LLAVA_IMAGE_TOKENS = 576  # (336 / 14)^2


def llava7b(device: str, layers: int) -> tuple[Any, str]:
    import transformers as T

    vision = T.CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=336, patch_size=14, projection_dim=768,
    )
    text = _llama_config(4096, layers, 32, 32, 11008, 32064)
    cfg = T.LlavaConfig(vision_config=vision, text_config=text, image_token_index=LLAVA_IMAGE_TOKEN,
                        image_seq_length=LLAVA_IMAGE_TOKENS)
    torch.manual_seed(0)
    return _build(T.LlavaForConditionalGeneration, cfg, device, torch.bfloat16), f"llava-1.5-7b-shape(L={layers})"


def make_inputs(model: Any, batch: int, length: int, device: str, image: bool) -> dict:
    gen = torch.Generator().manual_seed(batch * 10007 + length)
    ids = torch.randint(3, 30000 if image else 4000, (batch, length), generator=gen)
    out = {}
    if image:
        # "USER: <image>\n..." layout: a few text tokens, the 576 image tokens, then text.
        ids[:, 4 : 4 + LLAVA_IMAGE_TOKENS] = LLAVA_IMAGE_TOKEN
        dtype = next(model.parameters()).dtype
        out["pixel_values"] = torch.randn(batch, 3, 336, 336, generator=gen).to(device=device, dtype=dtype)
    out["input_ids"] = ids.to(device)
    out["attention_mask"] = torch.ones_like(out["input_ids"])
    return out


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


def layers_for(num_layers: int) -> tuple[int, int]:
    """SASA.md's LLaVA-1.5-7B choice (blocks 13 and 15 of 32), scaled to ``num_layers``."""
    s = max(0, min(num_layers - 2, round(13 * num_layers / 32)))
    return s, min(num_layers - 1, s + 2)


def decode_step_fn(model: Any, inputs: dict) -> Callable[[], Any]:
    """One single-token forward against a cache holding the prompt (restored after each call)."""
    from transformers import DynamicCache

    with torch.no_grad():
        out = model(**inputs, use_cache=True, logits_to_keep=1)
    cache = C.output_cache(out)
    cache_arg = C.cache_argument(model)  # past_key_values (5.17) or cache (later)
    saved = [(layer.keys, layer.values) for layer in cache.layers]
    nxt = out.logits[:, -1:].argmax(-1)
    mask = torch.cat([inputs["attention_mask"], torch.ones_like(nxt)], dim=1)
    assert isinstance(cache, DynamicCache)

    def step():
        with torch.no_grad():
            model(input_ids=nxt, attention_mask=mask, use_cache=True, logits_to_keep=1, **{cache_arg: cache})
        # Decoding concatenates into new tensors, so putting the prompt's tensors back restores it
        # (cheaper, and the same in every 5.x release, unlike ``crop``'s argument convention).
        for layer, (keys, values) in zip(cache.layers, saved):
            layer.keys, layer.values = keys, values

    return step


def measure_point(model: Any, name: str, batch: int, length: int, device: str, info: dict, budget_s: float,
                  image: bool, min_reps: int) -> list[dict]:
    inputs = make_inputs(model, batch, length, device, image)
    num_layers = model.config.get_text_config().num_hidden_layers
    s, f = layers_for(num_layers)
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    hidden = model.config.get_text_config().hidden_size
    probe = (torch.zeros(hidden), torch.tensor(-20.0))  # flags nothing: every row generates
    fns: dict[str, Callable[[], Any]] = {}

    def plain():
        with torch.no_grad():
            return model.generate(**inputs, max_new_tokens=1, do_sample=False)

    fns["generate"] = plain
    guards = {}
    for scope in ("all", "last"):
        guards[scope] = SASAConfig(s, f, scope=scope, feature="hidden")

    def guarded(cfg: SASAConfig) -> Callable[[], Any]:
        def run():
            guard = apply_sasa(model, cfg, probe=probe)
            try:
                return guard.generate(**inputs, max_new_tokens=1, do_sample=False)
            finally:
                guard.remove()

        return run

    fns["sasa-all"] = guarded(guards["all"])
    fns["sasa-last"] = guarded(guards["last"])
    fns["decode-step"] = decode_step_fn(model, {k: v for k, v in inputs.items() if k != "pixel_values"}) if not image else None
    records = []
    per_series = budget_s / 4
    for series, fn in fns.items():
        if fn is None:
            continue
        timing, note = None, ""
        try:
            # Wall clock on every device: time to first token is what a caller waits for, host
            # overhead included (do_bench's L2 flushing and repeat counts suit kernels, not this).
            timing = H.time_wall(fn, device, budget_s=per_series, warmup_s=0.0, min_reps=min_reps)
        except Exception as err:  # noqa: BLE001 - one failed point must not end the sweep
            note = f"{type(err).__name__}: {err}"[:200]
            traceback.print_exc()
        records.append(H.record(
            info, op="ttft", backend=series, shape=f"B={batch} T={length}", rows=batch, d=hidden, dtype=dtype,
            timing=timing, model=name, batch=batch, prompt_len=length, layers=num_layers,
            safety_layer=s, fused_layer=f, note=note,
        ))
    if device == "cuda":
        torch.cuda.empty_cache()
    return records


def add_ratios(records: list[dict]) -> None:
    by_point: dict[tuple, dict[str, dict]] = {}
    for rec in records:
        by_point.setdefault((rec["model"], rec["batch"], rec["prompt_len"]), {})[rec["backend"]] = rec
    for recs in by_point.values():
        base = recs.get("generate", {}).get("median_us", float("nan"))
        step = recs.get("decode-step", {}).get("median_us", float("nan"))
        for series, rec in recs.items():
            med = rec.get("median_us", float("nan"))
            rec["ratio_vs_generate"] = med / base if base == base and base > 0 else float("nan")
            L, s = rec["layers"], rec["safety_layer"]
            if series == "sasa-all":
                rec["expected_ratio"] = 1 + (L - 1 - s) / L
            elif series == "sasa-last":
                rec["expected_ratio"] = 1 + step / base if step == step and base == base else float("nan")
            else:
                rec["expected_ratio"] = float("nan")


def plot(records: list[dict], out: Path, info: dict) -> Optional[Path]:
    """Per model: the ratio to ``model.generate`` against prompt length (smallest batch), and
    against batch size (at the middle prompt length where a batch sweep was run), measured and
    expected (dashed: the expectation from the module docstring)."""
    paths = []
    for i, model in enumerate(dict.fromkeys(r["model"] for r in records)):
        mine = [r for r in records if r["model"] == model and r["backend"] in ("sasa-all", "sasa-last")]
        if not mine:
            continue
        lines = []
        for r in mine:
            lines.append({**r, "y": r["ratio_vs_generate"]})
            lines.append({**r, "backend": f"{r['backend']} expected", "y": r["expected_ratio"]})
        b0 = min(r["batch"] for r in mine)
        batches = {r["batch"] for r in mine}
        suffix = "" if i == 0 else f"_{H.safe_name(model)}"
        common = dict(y="y", series="backend", machine=info["machine"], logy=False,
                      ylabel="TTFT ratio (guard / generate)",
                      series_order=["sasa-all", "sasa-last", "sasa-all expected", "sasa-last expected"])
        paths.append(H.plot_sweep([r for r in lines if r["batch"] == b0], out / f"ttft_overhead{suffix}.png",
                                  x="prompt_len", xlabel="prompt length (tokens)",
                                  title=f"{model}, batch {b0}", **common))
        if len(batches) > 1:
            lengths = [r["prompt_len"] for r in mine if r["batch"] != b0]
            t_mid = max(set(lengths), key=lengths.count)
            paths.append(H.plot_sweep([r for r in lines if r["prompt_len"] == t_mid],
                                      out / f"ttft_overhead_batch{suffix}.png", x="batch", xlabel="batch size",
                                      title=f"{model}, prompt {t_mid}", **common))
    return paths[0] if paths else None


def summary_lines(records: list[dict]) -> list[str]:
    lines = []
    for model in dict.fromkeys(r["model"] for r in records):
        table = H.pivot_table(
            [r for r in records if r["model"] == model and r["backend"] != "generate"],
            ["batch", "prompt_len"], "backend",
            lambda r: (f"{r['ratio_vs_generate']:.2f}x" if r["backend"] != "decode-step"
                       else H.fmt_us(r["median_us"])) if r.get("median_us") == r.get("median_us") else "fail",
            row_headers=["B", "T"],
        )
        base = {(r["batch"], r["prompt_len"]): r["median_us"] for r in records
                if r["model"] == model and r["backend"] == "generate"}
        lines.append(f"{model}: TTFT ratio to model.generate (decode-step: time of one decode step)")
        lines.extend(table.splitlines())
        lines.append("generate TTFT: " + ", ".join(f"B={b} T={t}: {H.fmt_us(v)}" for (b, t), v in base.items()))
    return lines


def compact_lines(records: list[dict]) -> list[str]:
    """Two lines per model (for gpu_check.sh's short table): ratios per scope, baseline TTFTs."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in records):
        mine = [r for r in records if r["model"] == model]
        parts = []
        for series in ("sasa-all", "sasa-last"):
            cells = [f"B{r['batch']}T{r['prompt_len']} {r['ratio_vs_generate']:.2f}x" for r in mine if r["backend"] == series]
            parts.append(f"{series.split('-')[1]}: " + " ".join(cells))
        lines.append(f"ttft {model} ratio to generate: " + "; ".join(parts))
        lines.append(f"ttft {model} generate: " + " ".join(
            f"B{r['batch']}T{r['prompt_len']} {H.fmt_us(r['median_us'])}" for r in mine if r["backend"] == "generate"))
    return lines


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--gpu-shapes", action="store_true", help="Llama-7B- and LLaVA-1.5-7B-shaped models (bf16, CUDA)")
    ap.add_argument("--full", action="store_true", help="every prompt length x every batch (CPU: ~15 min)")
    ap.add_argument("--layers", type=int, default=None, help="language-model blocks (default: 8 CPU, 32 GPU)")
    ap.add_argument("--lengths", default=None, help="comma-separated prompt lengths")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes")
    ap.add_argument("--budget-s", type=float, default=None, help="rough total time budget; points past it are skipped")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--print", dest="print_mode", choices=["summary", "table"], default="table")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("bench_ttft: no CUDA device")
        return 2
    info = H.machine_info(device)
    out = Path(args.out) if args.out else H.default_results_dir(f"ttft-{device}")
    out.mkdir(parents=True, exist_ok=True)
    gpu = args.gpu_shapes or device == "cuda"
    layers = args.layers or (32 if gpu else 8)
    if layers < 2:
        ap.error("--layers: SASA needs at least 2 decoder blocks (a safety and a later fused block)")
    if gpu:
        lengths = [int(x) for x in (args.lengths or "64,512,2048").split(",")]
        batches = [int(x) for x in (args.batches or "1,4,16").split(",")]
        builders = [(llama7b, False), (llava7b, True)]
        budget = args.budget_s or 150.0
        min_reps = 3
    else:
        lengths = [int(x) for x in (args.lengths or ",".join(map(str, CPU_LENGTHS))).split(",")]
        batches = [int(x) for x in (args.batches or ",".join(map(str, CPU_BATCHES))).split(",")]
        builders = [(small_llama, False)]
        budget = args.budget_s or (900.0 if args.full else 200.0)
        min_reps = 2
    points = []
    for b in batches:
        for t in lengths:
            # Quick grid: the length sweep at B=1 and the batch sweep at one middle length.
            if args.full or b == batches[0] or t == lengths[len(lengths) // 2]:
                points.append((b, t))
    t_start = time.perf_counter()
    records: list[dict] = []
    skipped = []
    for builder, image in builders:
        try:
            model, name = builder(device, layers)
        except Exception as err:  # noqa: BLE001 - e.g. out of memory: report it, go on
            traceback.print_exc()
            skipped.append(f"{builder.__name__}: could not build ({type(err).__name__}: {str(err)[:120]})")
            continue
        pts = [(b, t if not image else max(t, LLAVA_IMAGE_TOKENS + 64)) for b, t in points]
        pts = list(dict.fromkeys(pts))
        share = budget / len(builders)
        model_start = time.perf_counter()
        for i, (b, t) in enumerate(pts):
            left = share - (time.perf_counter() - model_start)
            if left <= 0:
                skipped.append(f"{name} B={b} T={t}")
                continue
            per_point = left / (len(pts) - i)
            records.extend(measure_point(model, name, b, t, device, info, per_point, image, min_reps))
            if args.print_mode == "table":
                r = {x["backend"]: x["median_us"] for x in records[-4:]}
                print(f"{name} B={b} T={t}: " + ", ".join(f"{k} {H.fmt_us(v)}" for k, v in r.items()), flush=True)
        del model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    add_ratios(records)
    H.write_csv(out / "ttft.csv", records)
    H.write_json(out / "ttft_machine.json", info)
    png = plot(records, out, info)
    lines = summary_lines(records) if args.print_mode == "table" else compact_lines(records)
    if skipped:
        lines.append(f"skipped (over the {budget:.0f} s budget): {', '.join(skipped)}")
    warn = H.busy_warning(info)
    if warn:
        lines.append(warn)
    lines.append(f"{H.describe_machine(info)}; {time.perf_counter() - t_start:.0f} s; csv: {out / 'ttft.csv'}"
                 + (f"; plot: {png}" if png else ""))
    (out / "ttft_summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
