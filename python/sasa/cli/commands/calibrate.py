"""``sasa calibrate``: fit and save a probe from a labelled manifest (standard library only at module
level: ``sasa --help`` stays fast)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from sasa.cli.errors import CLIError
from sasa.cli.flags import FEATURES, MODES, SCOPES
from sasa.cli.loading import check_device, check_model_dir, load_model


def register_command(subparsers: Any, add_common_flags: Callable[..., None]) -> None:
    """Add ``sasa calibrate`` (the contract of :data:`sasa.cli.app.COMMAND_MODULES`)."""
    p = subparsers.add_parser("calibrate", help="fit a probe on a labelled JSONL manifest",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_flags(p)
    p.add_argument("--data", required=True, metavar="FILE", help="JSONL manifest: prompt, label, [image], [category]")
    p.add_argument("--safety-layer", type=int, required=True, help="0-based decoder-block index s")
    p.add_argument("--fused-layer", type=int, required=True, help="0-based decoder-block index f > s")
    p.add_argument("--scope", default=SCOPES[0], choices=SCOPES,
                   help="last: project the last prompt token (fast); all: every token (paper-faithful)")
    p.add_argument("--mode", default=MODES[0], choices=MODES, help="how H_s and its projection combine")
    p.add_argument("--coef", type=float, default=1.0, help="lambda for --mode residual/interpolate")
    p.add_argument("--feature", default=FEATURES[0], choices=FEATURES, help="what the probe reads")
    p.add_argument("--target-fpr", type=float, default=0.05, help="false-positive rate the thresholds are set for")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the probe and its plots")
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from sasa.calibrate.run import calibrate, save_plots
    from sasa.config import SASAConfig

    try:
        config = SASAConfig(safety_layer=args.safety_layer, fused_layer=args.fused_layer, mode=args.mode,
                            coef=args.coef, scope=args.scope, feature=args.feature)
    except (TypeError, ValueError) as err:
        raise CLIError(str(err)) from err
    from sasa.data.manifest import read_manifest
    from sasa.probe.files import check_save_target

    out = Path(args.out)
    check_save_target(out)  # before the long part, not after it
    check_model_dir(args.model)
    check_device(args.device)

    examples = read_manifest(args.data)
    model, processor = load_model(args.model, args.device, args.dtype)
    probe, report = calibrate(model, processor, examples, config, batch_size=args.batch_size,
                              target_fpr=args.target_fpr, raw_prompt=args.raw_prompt, progress=not args.quiet)
    probe.save(out)  # first: nothing after this (plots) can lose the probe
    report.plots = save_plots(probe, report.features, report.labels, out, model_name=str(args.model))
    print(report.summary())
    plots = f" ({', '.join(p.name for p in report.plots)})" if report.plots else " (no plots: matplotlib missing)"
    print(f"probe saved to {out}{plots}")
    return 0
