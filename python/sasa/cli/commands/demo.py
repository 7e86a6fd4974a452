"""``sasa demo``: the shipped organism unguarded and guarded, or the stand-in (standard library only at
module level)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from sasa.organism import shipped_inputs  # standard library only


def register_command(subparsers: Any, add_common_flags: Callable[..., None]) -> None:
    """Add ``sasa demo`` (the contract of :data:`sasa.cli.app.COMMAND_MODULES`)."""
    p = subparsers.add_parser("demo", help="the shipped model organism, unguarded and guarded; timed (no downloads)",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_flags(p, model=False, batching=False, raw_prompt=False)
    p.add_argument("--out", metavar="DIR", help="also save the demo's files here (eval tables and plots; "
                   "with --stand-in: its probe and plots)")
    p.add_argument("--stand-in", action="store_true",
                   help="the seeded random text-only stand-in instead (calibrated on the bundled prompts; shows "
                        "the plumbing, not the method)")
    p.set_defaults(func=cmd_demo, implicit_inputs=shipped_inputs())  # sasa.cli.paths: --out may not be in them


def cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    if args.stand_in:
        from sasa.demo.stand_in import run_demo
    else:
        from sasa.organism.demo import run_demo
    run_demo(out, progress=not args.quiet)
    return 0
