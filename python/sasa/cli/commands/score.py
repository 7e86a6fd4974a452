"""``sasa score``: every row of a manifest scored by a saved probe, one JSON row each (standard library
only at module level)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from sasa.cli.loading import check_device, check_model_dir, load_model, load_probe


def register_command(subparsers: Any, add_common_flags: Callable[..., None]) -> None:
    """Add ``sasa score`` (the contract of :data:`sasa.cli.app.COMMAND_MODULES`)."""
    p = subparsers.add_parser("score", help="score every row of a manifest with a saved probe",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_flags(p, raw_prompt=False)
    p.add_argument("--probe", required=True, metavar="DIR", help="directory written by 'sasa calibrate'")
    p.add_argument("--data", required=True, metavar="FILE", help="JSONL manifest (labels optional)")
    p.add_argument("--out", metavar="FILE", help="write one JSON row per input here (default: stdout)")
    p.set_defaults(func=cmd_score)


def cmd_score(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from sasa.data.manifest import batches, check_images_supported, encode_batch, read_manifest
    from sasa.guard.apply import apply_sasa
    from sasa.metrics import metrics_at

    check_model_dir(args.model)
    check_device(args.device)
    load_probe(args.probe)
    examples = read_manifest(args.data, require_labels=False)
    model, processor = load_model(args.model, args.device, args.dtype)
    check_images_supported(processor, examples)
    probe = load_probe(args.probe, model)
    rows = []
    with apply_sasa(model, probe=probe, tokenizer=processor) as guard:
        with tqdm(total=len(examples), desc="scoring", unit="prompt", disable=args.quiet) as bar:
            for batch in batches(examples, args.batch_size):
                inputs = encode_batch(processor, batch, prompt_format=guard.prompt_format, device=model.device)
                probs = guard.score(**inputs).cpu()
                flagged = probe.decide(probs)
                for example, p, f in zip(batch, probs, flagged):
                    rows.append({
                        "line": example.line, "prompt": example.prompt,
                        "label": None if example.label < 0 else example.label,
                        "score": _json_float(p[0]), "scores": {c: _json_float(v) for c, v in zip(probe.categories, p)},
                        "flagged": bool(f),
                    })
                bar.update(len(batch))
    rows.sort(key=lambda r: r["line"])
    lines = "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows)
    if args.out:
        Path(args.out).write_text(lines)
    else:
        sys.stdout.write(lines)
    labelled = [r for r in rows if r["label"] is not None]
    if labelled:
        y = torch.tensor([r["label"] for r in labelled])
        s = torch.tensor([math.nan if r["score"] is None else r["score"] for r in labelled], dtype=torch.float64)
        flagged = torch.tensor([r["flagged"] for r in labelled])
        m = metrics_at(s, y, float(probe.threshold[0]))
        harmful, benign = y == 1, y == 0
        asr = float((~flagged[harmful]).double().mean()) if harmful.any() else float("nan")
        tpr = float(flagged[harmful].double().mean()) if harmful.any() else float("nan")
        fpr = float(flagged[benign].double().mean()) if benign.any() else float("nan")
        print(f"summary: {len(labelled)} labelled rows, AUROC {m.auroc:.3f} ('{probe.categories[0]}' probe), "
              f"TPR {tpr:.3f}, FPR {fpr:.3f} at the saved thresholds, "
              f"harmful rows passing (attack success rate of the guard alone) {asr:.3f}",
              file=sys.stderr if not args.out else sys.stdout)
    return 0


def _json_float(value: Any) -> Optional[float]:
    value = float(value)
    return None if math.isnan(value) else value  # strict JSON: an unavailable score is null
