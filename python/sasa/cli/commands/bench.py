"""``sasa bench``: the guard's cost on your own model, both scopes, against the unguarded model.

Module-level imports are the standard library only (``sasa --help`` stays fast); the work is
imported when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from sasa.cli.errors import CLIError
from sasa.cli.loading import load_model

DESCRIPTION = """\
Times the guard's time to first token (TTFT) and per-token decode cost on a save_pretrained model,
for scope "all" and "last", as ratios against the unguarded model measured in the same run:
interleaved rounds after a warm-up, medians with the p20..p80 spread of the per-round ratios,
absolute milliseconds, peak memory and a busy-machine warning. Every timed row passes: the guard
is timed with a probe that never fires (weight 0, bias -30) built with the config being timed, so
no flagged row stops after one token and fakes the per-token cost. With --probe, the layers, mode
and feature come from the probe's config."""


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


#: ``--scopes`` values: ``last-compiled`` is ``scope="last"`` with ``compile_augmented=True``.
SCOPE_CHOICES = ("all", "last", "last-compiled")


def _scopes(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in SCOPE_CHOICES]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(SCOPE_CHOICES)}; got {text!r}")
    return list(dict.fromkeys(values))


def register_command(subparsers: Any, add_common_flags: Callable[..., None]) -> None:
    """Add ``sasa bench`` to the ``sasa`` command line (see ``sasa.cli.COMMAND_MODULES``)."""
    p = subparsers.add_parser("bench", help="time the guard on your model (TTFT, per-token cost, memory)",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(p, batching=False)  # --batch lists the batch sizes to time
    p.add_argument("--probe", help="a probe directory from 'sasa calibrate': time its layers, mode and feature")
    p.add_argument("--prompt-lengths", type=_int_list, default=[64, 256], metavar="N,N",
                   help="prompt lengths in tokens (default: 64,256)")
    p.add_argument("--batch", type=_int_list, default=[1], metavar="B,B",
                   help="batch sizes to time (default: 1)")
    p.add_argument("--scopes", type=_scopes, default=["all", "last"],
                   help="scopes to time, out of all, last, last-compiled (scope last with compile_augmented: "
                        "the warm-up round compiles) (default: all,last)")
    p.add_argument("--safety-layer", type=int, help="0-based block s without --probe (default: 13/32 of the depth)")
    p.add_argument("--fused-layer", type=int, help="0-based block f > s without --probe (default: s + 2)")
    p.add_argument("--feature", choices=("logits", "hidden"), default="logits",
                   help="probe feature without --probe (default: logits)")
    p.add_argument("--new-tokens", type=int, default=8, help="tokens per call; >= 2 for a per-token cost (default: 8)")
    p.add_argument("--rounds", type=int, default=5, help="timed interleaved rounds per point (default: 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first; the first measures memory (default: 1)")
    p.add_argument("--no-image", action="store_true", help="vision-language models: time text-only prompts")
    p.add_argument("--out", help="also write bench.csv, bench.txt and bench.png to this directory")
    # sasa.cli.paths: no input (--model, --probe) may lie under these names in --out
    p.set_defaults(func=run_command, out_writes=("bench.csv", "bench.txt", "bench.png"))


def default_layers(num_layers: int) -> tuple[int, int]:
    """Blocks 13 and 15 of 32 (the layers reported for LLaVA-1.5-7B), scaled to ``num_layers``."""
    safety = max(0, min(num_layers - 2, round(13 * num_layers / 32)))
    return safety, min(num_layers - 1, safety + 2)


def run_command(args: argparse.Namespace) -> int:
    import torch

    from sasa.bench.interleave import Point, measure
    from sasa.bench.machine import LoadMonitor, describe_machine, machine_info
    from sasa.bench.prompts import synthetic_inputs
    from sasa.bench.report import format_table, plot_records, summarize, write_csv
    from sasa.bench.series import PASSING_BIAS, Unguarded
    from sasa.config import SASAConfig
    from sasa.probe.sasa_probe import SASAProbe

    for name in ("new_tokens", "rounds"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')}: expected >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise CLIError(f"--warmup: expected >= 0, got {args.warmup}")
    if args.warmup < 1 and "last-compiled" in args.scopes:
        raise CLIError("--warmup: --scopes last-compiled needs a warm-up round (>= 1): its first call compiles")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError(f"--device: {args.device} requested but no CUDA device is available")
    model, processor = load_model(args.model, args.device, args.dtype)
    num_layers = int(model.config.get_text_config().num_hidden_layers)
    if args.probe:
        base = SASAProbe.load(args.probe, model=model).config
        where = f"from the probe {args.probe}"
    else:
        s, f = default_layers(num_layers)
        s = s if args.safety_layer is None else args.safety_layer
        f = f if args.fused_layer is None else args.fused_layer
        try:
            base = SASAConfig(safety_layer=s, fused_layer=f, feature=args.feature)
        except (TypeError, ValueError) as err:
            raise CLIError(str(err)) from err
        where = "defaults" if args.safety_layer is None and args.fused_layer is None else "flags"
    series = [Unguarded()] + [_guarded(base, scope, processor) for scope in args.scopes]
    points = []
    for batch in args.batch:
        for length in args.prompt_lengths:
            inputs = synthetic_inputs(model, processor, batch, length, image=not args.no_image,
                                      raw_prompt=args.raw_prompt)
            points.append(Point(batch, int(inputs["input_ids"].shape[1]), inputs))
    points.sort(key=lambda p: p.batch * p.prompt_len)
    info = machine_info(args.device)
    print(f"sasa bench: {args.model} ({model.config.model_type}, {num_layers} blocks, {args.dtype}, {args.device})")
    print(f"machine: {describe_machine(info)}")
    print(f"guard: safety block {base.safety_layer}, fused block {base.fused_layer}, mode {base.mode}, feature "
          f"{base.feature} ({where}); scopes {', '.join(args.scopes)}")
    print(f"every timed row passes: the guard is timed with a probe that never fires (weight 0, bias "
          f"{PASSING_BIAS:g}), built with the config above; {args.new_tokens} new tokens per row per call, "
          f"{args.warmup} warm-up + {args.rounds} interleaved rounds per point")
    with LoadMonitor() as load:
        found = measure(model, points, series, rounds=args.rounds, warmup=args.warmup, new_tokens=args.new_tokens,
                        memory=args.warmup > 0, progress=not args.quiet)
    records = summarize(found, series)
    table = format_table(records)
    warning = load.report().warning()
    print(table)
    print(load.report().describe())
    if warning:
        print(warning)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        extra = {k: info[k] for k in ("machine", "threads", "torch", "transformers", "sasa")}
        extra.update(model_type=model.config.model_type, dtype=args.dtype, device=args.device,
                     safety_layer=base.safety_layer, fused_layer=base.fused_layer, feature=base.feature,
                     new_tokens=args.new_tokens, loadavg_start=load.report().load_start,
                     loadavg_end=load.report().load_end, others_cores=load.report().others_cores)
        write_csv(records, out / "bench.csv", extra)
        (out / "bench.txt").write_text("\n".join([describe_machine(info), table, load.report().describe(),
                                                  warning]).rstrip() + "\n", encoding="utf-8")
        png = plot_records(records, out / "bench.png", title=f"sasa bench: {Path(args.model).name} "
                           f"(s={base.safety_layer}, f={base.fused_layer}), {info['machine']}")
        note = "" if png else " (no plot: matplotlib is not installed)"
        print(f"wrote {out / 'bench.csv'}, {out / 'bench.txt'}" + (f", {png}" if png else "") + note)
    return 0


def _guarded(base: Any, scope: str, processor: Any) -> Any:
    """The ``--scopes`` entry ``scope`` as a series (``base``: the probe's or the flags' config)."""
    from sasa.bench.series import Guarded

    if scope == "last-compiled":
        return Guarded(base.replace(scope="last", compile_augmented=True), tokenizer=processor,
                       name="sasa-last-compiled")
    return Guarded(base.replace(scope=scope, compile_augmented=False), tokenizer=processor)
