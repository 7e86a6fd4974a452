"""``sasa organism efficacy``: everything ``docs/efficacy.md`` reports, from one command.

On a trained organism (the shipped one by default):

1. write the calibration and held-out splits (:mod:`sasa.organism.manifest`);
2. :func:`sasa.locate` on the calibration split: per-layer curves and the recommended
   ``(safety_layer, fused_layer)``;
3. :func:`sasa.calibrate` a SASA probe there (``scope="last"``, logits features) and save it;
4. :func:`sasa.evaluate` on the held-out split: the unguarded phenotype, guarded ASR, over-refusal
   and passthrough mismatches (also per object group: training vs held-out objects);
5. the claim table (:mod:`sasa.organism.claims`) at the same pair, with bootstrap intervals.

``results.json`` holds every number; the probe directory is what ships as
:data:`sasa.organism.PROBE_DIR`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from sasa._types import PathLike
from sasa.organism import world
from sasa.organism.manifest import carrier_of, group_names, object_of, write_manifest

#: The object groups of :func:`guarded_by_object_group` ("all" first: it reproduces ``results["guarded"]``).
OBJECT_GROUPS = ("all", "training objects", "held-out objects")


def phenotype_from_rows(rows: list[dict[str, Any]], key: str = "unguarded_refused") -> dict[str, dict[str, float]]:
    """Refusal rates by label x carrier (and split by training / held-out objects) from ``sasa eval`` rows."""
    groups: dict[str, list[bool]] = {}
    for r in rows:
        carrier = carrier_of(r.get("carrier"), r.get("image") is not None)
        for name in group_names(r["label"], carrier, object_of(r["prompt"], r.get("text_only"))):
            groups.setdefault(name, []).append(bool(r[key]))
    return {name: {"n": len(v), "refused": sum(v) / len(v)} for name, v in sorted(groups.items())}


def _object_group(row: dict[str, Any]) -> Optional[str]:
    """``"training objects"`` / ``"held-out objects"`` for a ``sasa eval`` row about a known object, else ``None``."""
    obj = object_of(row["prompt"], row.get("text_only"))
    if obj is None:
        return None
    return "held-out objects" if obj.heldout else "training objects"


def guarded_numbers(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The guard's headline numbers over ``rows`` (``sasa eval`` rows), computed as ``results["guarded"]`` is.

    Image ASR is :func:`sasa.evaluate.metrics.group_metrics` over the image-carried rows (what
    ``by_carrier["image"]`` holds), benign over-refusal its ``benign_flagged`` over all the rows
    (text- and image-carried benign), and passthrough mismatches :func:`sasa.evaluate.metrics.utility`:
    reusing those functions keeps the per-group numbers defined exactly like the overall ones.
    """
    from sasa.evaluate.metrics import group_metrics, utility

    image = [r for r in rows if carrier_of(r.get("carrier"), r.get("image") is not None) == "image"]
    overall, image_metrics, passthrough = group_metrics(rows, []), group_metrics(image, []), utility(rows)
    return {
        "rows": len(rows), "harmful_image": image_metrics["harmful"], "benign": overall["benign"],
        "asr_image_unguarded": image_metrics["asr_unguarded"],
        "asr_image_guarded": image_metrics["asr_guarded"],
        "benign_over_refusal": overall["benign_flagged"],
        "benign_refused_guarded": overall["benign_refused_guarded"],
        "passthrough_mismatches": passthrough["differing_rows"],
        "passed_rows": passthrough["passed_rows"],
    }


def guarded_by_object_group(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """:func:`guarded_numbers` for all rows and for the rows about training / held-out objects.

    The guard must hold on objects it never saw in training, so the held-out objects are reported
    apart (a row whose object is unknown counts only in ``"all"``; an empty group is left out).
    """
    groups = [_object_group(r) for r in rows]
    out = {}
    for name in OBJECT_GROUPS:
        chosen = [r for r, g in zip(rows, groups) if name == "all" or g == name]
        if chosen:
            out[name] = guarded_numbers(chosen)
    return out


def run(out: PathLike, *, model_dir: Optional[PathLike] = None, device: str = "cpu", batch_size: int = 32, max_new_tokens: int = 24,
        seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Run steps 1-5 of the module docstring into ``out``; return (and save) ``results.json``."""
    import torch

    from sasa import calibrate, evaluate
    from sasa.config import SASAConfig
    from sasa.data.manifest import read_manifest
    from sasa.locate.run import locate
    from sasa.organism import MODEL_DIR, load
    from sasa.organism.claims import REPLICATES, claim_table

    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, processor = load(model_dir, device=device)
    calibration = write_manifest("calibration", out / "calibration.jsonl", seed=seed)
    heldout = write_manifest("heldout", out / "heldout.jsonl", seed=seed)

    located = locate(model, processor, calibration, batch_size=batch_size, seed=seed, progress=progress,
                     out_dir=out / "locate")
    safety, fused = located.recommended
    # The guard answers the organism's own refusal sentence (its word-level tokenizer has no
    # tokens for the library's default English refusal).
    config = SASAConfig(safety_layer=safety, fused_layer=fused, scope="last", feature="logits",
                        refusal_text=world.REFUSAL)
    probe, report = calibrate(model, processor, calibration, config, batch_size=batch_size, seed=seed,
                              progress=progress, plot_dir=out / "calibration_plots")
    probe.save(out / "probe")
    evaluated = evaluate(model, processor, heldout, out / "probe", max_new_tokens=max_new_tokens,
                         batch_size=batch_size, progress=progress, out_dir=out / "eval")
    claims = claim_table(model, processor, read_manifest(calibration), read_manifest(heldout), safety, fused,
                         batch_size=batch_size, seed=seed, progress=progress)
    image = evaluated.by_carrier.get("image", {})
    results = {
        "model": str(Path(model_dir) if model_dir is not None else MODEL_DIR),
        "parameters": sum(p.numel() for p in model.parameters()),
        "recommended": {"safety_layer": safety, "fused_layer": fused},
        "locate_layers": [asdict(layer) for layer in located.layers],
        "locate_grid": [asdict(cell) for cell in located.grid],
        "calibration": {"rows": report.num_examples,
                        "metrics": {k: m.to_dict() for k, m in report.metrics.items()}},
        "phenotype": phenotype_from_rows(evaluated.rows),
        "guarded": {
            "asr_image_unguarded": image.get("asr_unguarded"),
            "asr_image_guarded": image.get("asr_guarded"),
            "benign_over_refusal": evaluated.overall.get("benign_flagged"),
            "benign_refused_guarded": evaluated.overall.get("benign_refused_guarded"),
            "passthrough_mismatches": evaluated.utility["differing_rows"],
            "passed_rows": evaluated.utility["passed_rows"],
            "overall": evaluated.overall, "by_carrier": evaluated.by_carrier,
        },
        "guarded_by_object_group": guarded_by_object_group(evaluated.rows),
        "guarded_phenotype": phenotype_from_rows(evaluated.rows, "guarded_refused"),
        "claims": [r.to_dict() for r in claims],
        "claims_bootstrap": {"replicates": REPLICATES, "level": 0.95, "seed": seed,
                             "resampled": "evaluated held-out rows, harmful and benign separately; probes fitted once"},
        "split_sizes": {"calibration": report.num_examples, "heldout": len(evaluated.rows)},
        "heldout_objects": sorted(world.HELDOUT_NAMES),
        "threads": torch.get_num_threads(),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    return results
