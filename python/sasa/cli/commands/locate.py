"""The ``sasa locate`` subcommand (standard-library imports only at module level)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Optional

from sasa.cli.errors import CLIError
from sasa.cli.flags import add_dataset_flags
from sasa.cli.loading import check_device, load_model

#: What ``sasa locate`` writes into its ``--out`` directory (``sasa.cli.paths``: no input may lie there).
LOCATE_FILES: tuple[str, ...] = ("locate.json", "layers.png", "grid.png")


def parse_range(text: Optional[str], flag: str) -> Optional[tuple[int, int]]:
    """``"A:B"`` (inclusive) or ``"A"`` as ``(A, B)``; ``None`` stays ``None``."""
    if text is None:
        return None
    parts = text.split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise CLIError(f"{flag}: expected FIRST:LAST (0-based decoder blocks, inclusive) or one block, got {text!r}")
    lo, hi = values[0], values[-1]
    if lo > hi:
        raise CLIError(f"{flag}: {text} is empty (FIRST must be <= LAST)")
    return lo, hi


def cmd_locate(args: argparse.Namespace) -> int:
    from sasa.data.readers import read_sources, sources_from_flags
    from sasa.locate.run import locate
    from sasa.refusal import RefusalMatcher, load_phrases

    safety_range = parse_range(args.safety_range, "--safety-range")
    fused_range = parse_range(args.fused_range, "--fused-range")
    refusal = load_phrases(args.refusal_phrases) if args.refusal_phrases else RefusalMatcher()
    sources = sources_from_flags(args.data, args.format)
    examples = [e for _, e in read_sources(sources, image_kind=args.image_kind)[0]]
    model, processor = load_model(args.model, check_device(args.device), args.dtype)
    num_layers = _num_layers(model)
    for flag, value in (("--safety-range", safety_range), ("--fused-range", fused_range)):
        if value is not None and (value[0] < 0 or value[1] > num_layers - 1):
            raise CLIError(f"{flag}: {value[0]}:{value[1]} is outside this model's decoder blocks "
                           f"(0-based 0..{num_layers - 1})")
    result = locate(model, processor, examples, safety_range=safety_range, fused_range=fused_range,
                    feature=args.feature, mode=args.mode, coef=args.coef, folds=args.folds, top_k=args.top_k,
                    refusal=refusal, seed=args.seed, batch_size=args.batch_size, raw_prompt=args.raw_prompt,
                    progress=not args.quiet, out_dir=args.out)
    print(result.summary())
    single_jsonl = len(sources) == 1 and sources[0][1] == "jsonl"
    data = sources[0][0] if single_jsonl else "MANIFEST.jsonl"
    print(f"\nnext: {result.calibrate_command(model=args.model, data=data)}")
    if not single_jsonl:
        print("      (sasa calibrate reads one JSONL manifest; write one from sasa.data.readers.read_dataset)")
    out = Path(args.out)
    print(f"wrote {out / 'locate.json'}, " + ", ".join(str(p) for p in result.plots))
    return 0


def _num_layers(model: Any) -> int:
    from sasa.hf import compat

    decoder = compat.find_decoder(model)
    return 0 if decoder is None else len(decoder.layers)


def register_command(subparsers: Any, add_common_flags: Callable[..., None]) -> None:
    """Add ``sasa locate`` (the contract of ``sasa.cli.COMMAND_MODULES``)."""
    p = subparsers.add_parser(
        "locate", help="choose safety/fused layers: per-block analysis and a grid of SASA pairs",
        description="Per decoder block (0-based): cross-validated probe AUROC, cosine gap, fusion similarity "
                    "and logit-lens refusal rate; then the held-out AUROC of a SASA probe (scope=last) for each "
                    "(safety, fused) pair of the grid, and the recommended pair.",
    )
    add_common_flags(p)
    add_dataset_flags(p, data_help="labelled dataset (harmful and benign rows); repeat to concatenate",
                      out_help="directory for locate.json, layers.png, grid.png")
    p.add_argument("--safety-range", help="FIRST:LAST safety blocks of the grid (default: the middle half)")
    p.add_argument("--fused-range", help="FIRST:LAST fused blocks of the grid (default: the middle half)")
    p.add_argument("--feature", default="logits", choices=("logits", "hidden"), help="SASA probe features")
    p.add_argument("--mode", default="replace", choices=("replace", "residual", "interpolate"))
    p.add_argument("--coef", type=float, default=1.0)
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds for probe_auroc (default 5)")
    p.add_argument("--top-k", type=int, default=10, help="logit-lens top-k for refusal_rate (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--refusal-phrases", help="file with one refusal phrase per line (replaces the default list)")
    p.set_defaults(func=cmd_locate, out_writes=LOCATE_FILES)
