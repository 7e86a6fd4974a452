"""``sasa calibrate``, ``sasa score`` and ``sasa generate`` (registered by :mod:`sasa.cli`).

Imported when the parser is built; heavy imports stay inside the functions so ``sasa --help``
stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Optional

from .cli import CLIError, check_device, check_model_dir, load_model


def _load_probe(args: argparse.Namespace, model: Any = None) -> Any:
    """The ``--probe`` directory: validated alone first (cheap), then against the loaded model."""
    from .probe import SASAProbe

    return SASAProbe.load(args.probe, model=model)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import calibrate, save_plots
    from .config import SASAConfig

    try:
        config = SASAConfig(safety_layer=args.safety_layer, fused_layer=args.fused_layer, mode=args.mode,
                            coef=args.coef, scope=args.scope, feature=args.feature)
    except (TypeError, ValueError) as err:
        raise CLIError(str(err)) from err
    from ._probe_io import check_save_target
    from .data import read_manifest

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


def cmd_score(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from .data import batches, check_images_supported, encode_batch, read_manifest
    from .guard import apply_sasa
    from .metrics import metrics_at

    check_model_dir(args.model)
    check_device(args.device)
    _load_probe(args)
    examples = read_manifest(args.data, require_labels=False)
    model, processor = load_model(args.model, args.device, args.dtype)
    check_images_supported(processor, examples)
    probe = _load_probe(args, model)
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


def cmd_generate(args: argparse.Namespace) -> int:
    from .data import Example, check_image, check_images_supported, encode_batch
    from .guard import apply_sasa

    image = None
    if args.image:
        image = Path(args.image).resolve()
        if not image.is_file():
            raise CLIError(f"--image: {image} not found")
        try:
            check_image(image)  # a decompression bomb is refused before the model loads
        except ValueError as err:
            raise CLIError(f"--image: {err}") from None
    check_model_dir(args.model)
    check_device(args.device)
    _load_probe(args)
    model, processor = load_model(args.model, args.device, args.dtype)
    example = Example(args.prompt, -1, image)
    check_images_supported(processor, [example])
    probe = _load_probe(args, model)
    with apply_sasa(model, probe=probe, tokenizer=processor) as guard:
        inputs = encode_batch(processor, [example], prompt_format=guard.prompt_format, device=model.device)
        out = guard.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    tokenizer = getattr(processor, "tokenizer", processor)
    scores = out.scores[0].tolist()
    if bool(out.flagged[0]):
        fired = [(c, s) for c, s, t in zip(probe.categories, scores, probe.threshold.tolist()) if math.isnan(s) or s >= t]
        names = ", ".join(f"{c} {s:.3f}" for c, s in fired) or "score unavailable"
        print(f"[REFUSED; {names}] {out.refusal_text}")
    else:
        text = tokenizer.decode(out.sequences[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        top = max(range(len(scores)), key=lambda i: scores[i] - float(probe.threshold[i]))
        print(f"[passed; highest {probe.categories[top]} {scores[top]:.3f} < {float(probe.threshold[top]):.3f}] {text}")
    return 0


def _json_float(value: Any) -> Optional[float]:
    value = float(value)
    return None if math.isnan(value) else value  # strict JSON: an unavailable score is null
