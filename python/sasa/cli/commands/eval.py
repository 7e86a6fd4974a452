"""``sasa eval``: attack success rate and over-refusal with and without the guard (standard library
only at module level: ``sasa --help`` stays fast)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from sasa.cli.errors import CLIError
from sasa.cli.flags import add_dataset_flags
from sasa.cli.loading import check_device, load_model

#: What ``sasa eval`` writes into its ``--out`` directory (``sasa.cli.paths``: no input may lie there).
EVAL_FILES: tuple[str, ...] = ("generations.jsonl", "eval.json", "eval.md", "eval.png")


def cmd_eval(args: argparse.Namespace) -> int:
    from sasa.data.readers import read_sources, sources_from_flags
    from sasa.evaluate.run import evaluate, format_summary
    from sasa.refusal import load_phrases

    sources = sources_from_flags(args.data, args.format)
    refusal = load_phrases(args.refusal_phrases) if args.refusal_phrases else None
    if args.max_new_tokens < 1:
        raise CLIError(f"--max-new-tokens: expected >= 1, got {args.max_new_tokens}")
    read_sources(sources, image_kind=args.image_kind)  # a bad dataset fails before the model loads
    model, processor = load_model(args.model, check_device(args.device), args.dtype)
    result = evaluate(model, processor, sources, args.probe, image_kind=args.image_kind,
                      max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, raw_prompt=args.raw_prompt or None,
                      refusal=refusal, progress=not args.quiet, out_dir=args.out)
    print(result.markdown())
    print(format_summary(result))
    print(f"wrote {', '.join(str(p) for p in result.files)} ({result.timings['wall_s']:.1f} s)")
    if not result.ok:
        u = result.utility
        print(f"sasa eval: error: utility invariant violated: {u['differing_rows']} of {u['passed_rows']} passed "
              "rows answer differently with the guard (rows with answers_identical false in generations.jsonl)",
              file=sys.stderr)
        return 1
    return 0


def register_command(subparsers: Any, add_common_flags: Callable[..., None]) -> None:
    """Add ``sasa eval`` (the contract of ``sasa.cli.COMMAND_MODULES``)."""
    p = subparsers.add_parser(
        "eval", help="attack success rate and over-refusal with and without the guard",
        description="Answer every row with and without the guard (same batched greedy generate) and report "
                    "detection AUROC/TPR/FPR, attack success rate, over-refusal and the utility invariant.",
    )
    add_common_flags(p)
    p.add_argument("--probe", required=True, help="directory written by 'sasa calibrate'")
    add_dataset_flags(p, data_help="labelled dataset; repeat to concatenate (e.g. a benchmark plus benign rows)",
                      out_help="directory for eval.json, eval.md, eval.png, generations.jsonl")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--refusal-phrases", help="file with one refusal phrase per line (replaces the default list)")
    p.set_defaults(func=cmd_eval, out_writes=EVAL_FILES)  # sasa.cli.paths: no input may lie there
