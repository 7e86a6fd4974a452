"""``sasa calibrate`` / ``sasa score`` on a tiny LLaVA with its own processor, through subprocesses.

Harmful rows carry trigger words and a trigger image (a bright red block); benign rows everyday
words and a dark noise image. A planted signal: proof the image path is wired, not a safety claim.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from tests.sasa._llava import build_llava
from tests.sasa.test_cli import FILLER, TRIGGERS, planted_prompt, run_cli

ROWS = 120


def _image(harmful: bool, rng: np.random.Generator):
    from PIL import Image

    pixels = rng.integers(0, 60, (24, 24, 3), dtype=np.uint8)
    if harmful:
        pixels[4:20, 4:20] = (255, 0, 0)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def llava_workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_vlm")
    model, processor = build_llava(FILLER + TRIGGERS)
    model_dir = root / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)

    rng, pyrng = np.random.default_rng(0), random.Random(0)
    (root / "images").mkdir()
    lines = []
    for i in range(ROWS):
        label = i % 2
        _image(bool(label), rng).save(root / "images" / f"{i}.png")
        prompt = planted_prompt(pyrng, label)
        lines.append(json.dumps({"prompt": prompt, "label": label, "image": f"images/{i}.png"}))
    manifest = root / "planted_images.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return root, model_dir, manifest


def test_llava_calibrate_then_score_through_the_processor(llava_workspace):
    root, model_dir, manifest = llava_workspace
    probe_dir = root / "probe"
    run_cli("calibrate", "--model", str(model_dir), "--data", str(manifest), "--safety-layer", "1",
            "--fused-layer", "4", "--scope", "last", "--batch-size", "16", "--out", str(probe_dir), "--quiet")
    meta = json.loads((probe_dir / "sasa_config.json").read_text())
    assert meta["fingerprint"]["model_type"] == "llava"
    assert meta["metrics"]["any"]["auroc"] >= 0.95, meta["metrics"]
    out = run_cli("score", "--model", str(model_dir), "--probe", str(probe_dir), "--data", str(manifest),
                  "--out", str(root / "scores.jsonl"), "--quiet")
    auroc = float(out.stdout.strip().splitlines()[-1].split("AUROC ")[1].split()[0])
    assert auroc >= 0.95
    harmful = run_cli("generate", "--model", str(model_dir), "--probe", str(probe_dir), "--prompt",
                      "bake bomb fentanyl bread", "--image", str(root / "images" / "1.png"), "--max-new-tokens", "2")
    assert harmful.stdout.startswith("[REFUSED")
