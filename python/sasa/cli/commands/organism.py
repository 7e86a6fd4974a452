"""``sasa organism ...``: train the model organism, write its manifests, measure it.

    sasa organism train --out DIR                          # the shipped recipe, seeded (minutes on CPU)
    sasa organism manifest --split heldout --out FILE      # JSONL + images beside it
    sasa organism phenotype [--model DIR] [--data FILE] [--json OUT]   # the v2 phenotype targets, pass/miss
    sasa organism efficacy --out DIR [--doc docs/efficacy.md]   # locate, calibrate, eval, claim table

Imports only the standard library at module level (``sasa --help`` stays fast).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from sasa.organism import shipped_inputs

SPLITS = ("calibration", "heldout")


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses
    import os

    from sasa.organism.train import DEFAULT_RECIPE, RECIPES, train_and_save

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads: expected >= 1, got {args.threads}")
    recipe = dataclasses.replace(DEFAULT_RECIPE if args.recipe == "default" else RECIPES[args.recipe], seed=args.seed)
    info = train_and_save(args.out, recipe, progress=not args.quiet, threads=args.threads,
                          checkpoint_dir=args.checkpoint_dir)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"organism saved to {args.out}: {info['parameters']:,} parameters, trained in {info['wall_time_s']:.0f} s "
          f"on {info['threads']} threads (load average now {load}); recipe and losses in recipe.json")
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    from sasa.organism.manifest import write_manifest

    out = write_manifest(args.split, args.out, per_object=args.per_object, seed=args.seed)
    rows = sum(1 for line in out.read_text().splitlines() if line.strip())
    print(f"{rows} rows written to {out} (images in {out.parent / (out.stem + '_images')})")
    return 0


def cmd_phenotype(args: argparse.Namespace) -> int:
    import json
    import tempfile

    from sasa.organism import load
    from sasa.organism.manifest import write_manifest
    from sasa.organism.phenotype import measure_targets

    if args.data is not None and args.per_object is not None:
        raise ValueError("--per-object: sizes the default held-out split; drop it with --data")
    model, processor = load(args.model, device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or write_manifest("heldout", Path(tmp) / "heldout.jsonl", per_object=args.per_object,
                                           seed=args.seed)
        table = measure_targets(model, processor, data, safety_layer=args.safety_layer, fused_layer=args.fused_layer,
                                captions_per_object=args.captions_per_object, batch_size=args.batch_size,
                                seed=args.seed, threads=args.threads, progress=not args.quiet)
    print(table.render())
    counts = ", ".join(f"{g}: {c['text rows']} text / {c['image rows']} image / {c['caption rows']} caption rows"
                       for g, c in table.counts.items())
    s = table.settings
    print(f"\nsafety block {s['safety_layer']}, fused block {s['fused_layer']} (0-based); {counts}; "
          f"{s['wall_s']:.0f} s")
    misses = table.misses()
    print(f"{len(misses)} target/group cells missed" + (": " + ", ".join(f"{k} ({g})" for k, g in misses)
                                                         if misses else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(table.to_json(), indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def shipped_efficacy(results: dict[str, Any]) -> dict[str, Any]:
    """What ``probe/efficacy.json`` keeps of an efficacy run: the recommended pair and the guarded
    numbers (all rows, and per object group), which the shipped-organism tests check against."""
    g = results["guarded"]
    return {"recommended": results["recommended"],
            "guarded": {k: v for k, v in g.items() if k not in ("overall", "by_carrier")},
            "guarded_by_object_group": results.get("guarded_by_object_group")}


def cmd_efficacy(args: argparse.Namespace) -> int:
    import json
    import shutil

    from sasa.organism import PROBE_DIR
    from sasa.organism.efficacy import run
    from sasa.organism.report import update_doc

    if args.ship_probe and args.model is not None:  # before the run, not after it
        raise ValueError("--ship-probe: only for the shipped organism (drop --model)")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    results = run(args.out, model_dir=args.model, device=args.device, batch_size=args.batch_size, seed=args.seed,
                  progress=not args.quiet)
    g = results["guarded"]
    s, f = results["recommended"]["safety_layer"], results["recommended"]["fused_layer"]
    print(f"recommended pair: safety block {s}, fused block {f}")
    print(f"image-carried harmful ASR: unguarded {g['asr_image_unguarded']:.3f}, guarded {g['asr_image_guarded']:.3f}; "
          f"benign over-refusal {g['benign_over_refusal']:.3f}; passthrough mismatches {g['passthrough_mismatches']}")
    for row in results["claims"]:
        print(f"  {row['probe']:<28} {row['calibration']:<10} {row.get('group', 'all'):<17} AUROC {row['auroc']:.3f}  "
              f"TPR@5%FPR {row['tpr_at_5_fpr']:.3f}")
    print(f"everything in {Path(args.out) / 'results.json'}")
    if args.doc:
        print(f"wrote {update_doc(results, args.out, args.doc)}")
    if args.ship_probe:
        if PROBE_DIR.exists():
            shutil.rmtree(PROBE_DIR)
        shutil.copytree(Path(args.out) / "probe", PROBE_DIR)
        (PROBE_DIR / "efficacy.json").write_text(json.dumps(shipped_efficacy(results), indent=1) + "\n")
        print(f"probe copied to {PROBE_DIR}")
    return 0


def register_command(subparsers: Any, add_common_flags: Callable[..., None]) -> None:
    """Add ``sasa organism`` and its subcommands (the contract of :mod:`sasa.cli`)."""
    parser = subparsers.add_parser("organism", help="the trained model organism: train, manifests, phenotype")
    sub = parser.add_subparsers(dest="organism_command", required=True)

    p = sub.add_parser("train", help="train the organism from scratch (seeded, CPU is enough)")
    p.add_argument("--out", required=True, help="directory for the save_pretrained model and processor")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--recipe", default="default",
                   choices=("default", "v1", "v2a-freeze", "v2-candidate", "v2c-late-read", "v2d-late-read-from3",
                            "v2e-twin", "v2f-jailbreak", "v2g-twin-captions", "v2h-twin-strong"),
                   help="default: the shipped organism's (organism v2, the same as v2e-twin); v1: the organism "
                        "shipped before it; the others: organism v2 attempts (issue 26, docs/efficacy.md)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="save the state after each stage here and resume from the latest one that matches the recipe")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("manifest", help="write an evaluation split as a JSONL manifest with its images")
    p.add_argument("--split", required=True, choices=SPLITS)
    p.add_argument("--out", required=True, help="the JSONL file (images go to <stem>_images/ beside it)")
    p.add_argument("--per-object", type=int, default=None, help="rows per object and carrier")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_manifest)

    p = sub.add_parser("phenotype", help="the organism v2 targets (issue 26) measured on the unguarded organism")
    add_common_flags(p, model=False)
    p.set_defaults(batch_size=32)  # the organism is tiny: bigger batches, fewer generate calls
    p.add_argument("--model", default=None, help="an organism directory (default: the shipped one)")
    p.add_argument("--data", default=None, help="a manifest (default: the held-out split, written to a temp dir)")
    p.add_argument("--per-object", type=int, default=None,
                   help="rows per object and carrier of the default held-out split (default: 8)")
    p.add_argument("--captions-per-object", type=int, default=4, help="caption requests drawn per object")
    p.add_argument("--safety-layer", type=int, default=None,
                   help="0-based safety block (default: the one the organism was built with, from its "
                        "recipe.json; else the shipped probe's)")
    p.add_argument("--fused-layer", type=int, default=None,
                   help="0-based fused block (default: the one the organism was built with, from its "
                        "recipe.json; else the shipped probe's)")
    p.add_argument("--seed", type=int, default=0, help="manifest, caption images and the harm probe's split")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads during the measurement (default: 1)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the table and curves as JSON")
    p.set_defaults(func=cmd_phenotype)

    p = sub.add_parser("efficacy", help="locate, calibrate, evaluate and the claim table on the organism")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: cpu)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--model", default=None, help="an organism directory (default: the shipped one)")
    p.add_argument("--out", required=True, help="directory for manifests, locate, probe, eval and results.json")
    p.add_argument("--doc", default=None, help="also rewrite the generated section of this Markdown file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--ship-probe", action="store_true",
                   help="maintainers: copy the calibrated probe into the package (sasa.organism.PROBE_DIR)")
    p.set_defaults(func=cmd_efficacy, implicit_inputs=shipped_inputs())  # sasa.cli.paths: outputs may not be in them
