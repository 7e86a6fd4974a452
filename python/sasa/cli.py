"""The ``sasa`` command line: ``calibrate``, ``score``, ``generate`` and ``demo``.

Errors a user can fix (a missing file, a bad manifest line, an unknown model type, bad flags) print
one line and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

EXIT_USAGE = 2
#: Modules that add a subcommand: each has ``register_command(subparsers, add_common_flags)``, which
#: adds its parser with ``set_defaults(func=...)``; the function raises :class:`CLIError` (or
#: ``ValueError``/``TypeError``/``OSError``) for a problem the user can fix. They must import only
#: the standard library at module level, so that ``sasa --help`` stays fast.
COMMAND_MODULES: tuple[str, ...] = ("sasa.bench", "sasa.locate", "sasa.evaluate", "sasa.organism.cli")
DTYPES = ("float32", "bfloat16", "float16")


class CLIError(Exception):
    """A problem the user can fix; printed as one line."""


# --- loading ------------------------------------------------------------------------------------


def load_model(directory: str, device: str, dtype: str) -> tuple[Any, Any]:
    """``(model, processor)`` from a ``save_pretrained`` directory, by its config's architecture."""
    import torch
    import transformers as tf

    path = Path(directory)
    if not (path / "config.json").is_file():
        raise CLIError(f"--model: {path} has no config.json (expected a save_pretrained directory)")
    config = tf.AutoConfig.from_pretrained(path)
    from .families import SUPPORTED_MODEL_TYPES

    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise CLIError(f"--model: model_type {config.model_type!r} is not supported; supported: {sorted(SUPPORTED_MODEL_TYPES)}")
    vision = type(config) in tf.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING
    auto = tf.AutoModelForImageTextToText if vision else tf.AutoModelForCausalLM
    model = auto.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
    processor = tf.AutoProcessor.from_pretrained(path) if vision else tf.AutoTokenizer.from_pretrained(path)
    return model, processor


def _device(name: str) -> str:
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError(f"--device: {name} requested but no CUDA device is available")
    return name


# --- commands -----------------------------------------------------------------------------------


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import calibrate
    from .config import SASAConfig

    try:
        config = SASAConfig(safety_layer=args.safety_layer, fused_layer=args.fused_layer, mode=args.mode,
                            coef=args.coef, scope=args.scope, feature=args.feature)
    except (TypeError, ValueError) as err:
        raise CLIError(str(err)) from err
    model, processor = load_model(args.model, _device(args.device), args.dtype)
    out = Path(args.out)
    probe, report = calibrate(model, processor, args.data, config, batch_size=args.batch_size,
                              target_fpr=args.target_fpr, raw_prompt=args.raw_prompt, progress=not args.quiet,
                              plot_dir=out)
    probe.save(out)
    print(report.summary())
    print(f"probe saved to {out} ({', '.join(p.name for p in report.plots)})")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from .data import batches, encode_batch, read_manifest
    from .guard import apply_sasa
    from .metrics import metrics_at
    from .probe import SASAProbe

    model, processor = load_model(args.model, _device(args.device), args.dtype)
    probe = SASAProbe.load(args.probe, model=model)
    examples = read_manifest(args.data, require_labels=False)
    guard = apply_sasa(model, probe=probe, tokenizer=processor)
    rows = []
    try:
        with tqdm(total=len(examples), desc="scoring", unit="prompt", disable=args.quiet) as bar:
            for batch in batches(examples, args.batch_size):
                inputs = encode_batch(processor, batch, raw_prompt=args.raw_prompt, device=model.device)
                probs = guard.score(**inputs).reshape(len(batch), -1).cpu()
                flagged = probe.decide(probs)
                for example, p, f in zip(batch, probs, flagged):
                    rows.append({
                        "line": example.line, "prompt": example.prompt,
                        "label": None if example.label < 0 else example.label,
                        "score": float(p[0]), "scores": dict(zip(probe.categories, map(float, p))),
                        "flagged": bool(f),
                    })
                bar.update(len(batch))
    finally:
        guard.remove()
    rows.sort(key=lambda r: r["line"])
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        for r in rows:
            print(json.dumps(r))
    labelled = [r for r in rows if r["label"] is not None]
    if labelled:
        y = torch.tensor([r["label"] for r in labelled])
        s = torch.tensor([r["score"] for r in labelled], dtype=torch.float64)
        flagged = torch.tensor([r["flagged"] for r in labelled])
        m = metrics_at(s, y, float(probe.threshold[0]))
        harmful = y == 1
        benign = y == 0
        asr = float((~flagged[harmful]).double().mean()) if harmful.any() else float("nan")
        tpr = float(flagged[harmful].double().mean()) if harmful.any() else float("nan")
        fpr = float(flagged[benign].double().mean()) if benign.any() else float("nan")
        print(f"summary: {len(labelled)} labelled rows, AUROC {m.auroc:.3f} ('{probe.categories[0]}' probe), "
              f"TPR {tpr:.3f}, FPR {fpr:.3f} at the saved thresholds, "
              f"harmful rows passing (attack success rate of the guard alone) {asr:.3f}",
              file=sys.stderr if not args.out else sys.stdout)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .data import Example, encode_batch
    from .guard import apply_sasa
    from .probe import SASAProbe

    model, processor = load_model(args.model, _device(args.device), args.dtype)
    probe = SASAProbe.load(args.probe, model=model)
    image = None
    if args.image:
        image = Path(args.image).resolve()
        if not image.is_file():
            raise CLIError(f"--image: {image} not found")
    guard = apply_sasa(model, probe=probe, tokenizer=processor)
    try:
        inputs = encode_batch(processor, [Example(args.prompt, -1, image)], raw_prompt=args.raw_prompt,
                              device=model.device)
        out = guard.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    finally:
        guard.remove()
    tokenizer = getattr(processor, "tokenizer", processor)
    new_tokens = out.sequences[0, inputs["input_ids"].shape[1]:]
    text = out.refusal_text if bool(out.flagged[0]) else tokenizer.decode(new_tokens, skip_special_tokens=True)
    score = out.scores.reshape(1, -1)[0, 0]
    print(f"[{'REFUSED' if bool(out.flagged[0]) else 'passed'}; score {float(score):.3f}] {text}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out) if args.out else None, progress=not args.quiet)
    return 0


# --- parser -------------------------------------------------------------------------------------


def add_common_flags(p: argparse.ArgumentParser, *, model: bool = True) -> None:
    """The flags every subcommand shares (``--model`` unless ``model=False``)."""
    if model:
        p.add_argument("--model", required=True, help="a save_pretrained directory")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    p.add_argument("--dtype", default="float32", choices=DTYPES)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--raw-prompt", action="store_true", help="skip the chat template")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sasa", description="Self-Aware Safety Augmentation for Hugging Face models")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("calibrate", help="fit a probe on a labelled JSONL manifest")
    add_common_flags(p)
    p.add_argument("--data", required=True, help="JSONL manifest: prompt, label, [image], [category]")
    p.add_argument("--safety-layer", type=int, required=True, help="0-based decoder-block index s")
    p.add_argument("--fused-layer", type=int, required=True, help="0-based decoder-block index f > s")
    p.add_argument("--scope", default="all", choices=("all", "last"))
    p.add_argument("--mode", default="replace", choices=("replace", "residual", "interpolate"))
    p.add_argument("--coef", type=float, default=1.0)
    p.add_argument("--feature", default="logits", choices=("logits", "hidden"))
    p.add_argument("--target-fpr", type=float, default=0.05)
    p.add_argument("--out", required=True, help="directory for the probe and its plots")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("score", help="score every row of a manifest with a saved probe")
    add_common_flags(p)
    p.add_argument("--probe", required=True, help="directory written by 'sasa calibrate'")
    p.add_argument("--data", required=True)
    p.add_argument("--out", help="write one JSON row per input here (default: stdout)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("generate", help="guarded generation for one prompt")
    add_common_flags(p)
    p.add_argument("--probe", required=True)
    p.add_argument("--prompt", required=True)
    p.add_argument("--image")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("demo", help="the built-in stand-in model: calibrate, score, time (no downloads)")
    add_common_flags(p, model=False)
    p.add_argument("--out", help="also save the demo probe and plots here")
    p.set_defaults(func=cmd_demo)
    for module_name in COMMAND_MODULES:
        try:  # TODO(lead): plain import once every module exists
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        module.register_command(sub, add_common_flags)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "batch_size", 1) < 1:
        parser.error("--batch-size: expected >= 1")
    try:
        return args.func(args)
    except (CLIError, FileNotFoundError, ValueError, TypeError, OSError) as err:
        if args.debug:
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"sasa {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
