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
from tests.sasa.cli.test_cli import FILLER, TRIGGERS, planted_prompt, run_cli

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


# --- decompression bombs: one line, exit 2, naming the file; nothing decoded --------------------


def write_bomb_png(path, side: int = 20000):
    """A valid 1-bit PNG of ``side`` x ``side`` pixels (400 M at the default), about 50 kB on disk:
    PIL refuses to open it (over twice ``PIL.Image.MAX_IMAGE_PIXELS``)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\0" * (1 + (side + 7) // 8)) * side  # filter byte 0, then all-black pixels
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 9))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def llava_probe(llava_workspace):
    """The workspace's tiny LLaVA with a probe calibrated in-process (fast) and a bomb image."""
    from transformers import LlavaForConditionalGeneration

    from sasa import SASAConfig, calibrate
    from sasa.data.manifest import read_manifest
    from sasa.hf.loading import load_processor

    root, model_dir, manifest = llava_workspace
    probe_dir = root / "bomb_probe"
    if not probe_dir.exists():
        model = LlavaForConditionalGeneration.from_pretrained(model_dir)
        processor = load_processor(model_dir, True)
        probe, _ = calibrate(model, processor, read_manifest(manifest)[:32],
                             SASAConfig(safety_layer=1, fused_layer=4, scope="last"), batch_size=16, progress=False)
        probe.save(probe_dir)
    return root, model_dir, probe_dir, write_bomb_png(root / "images" / "bomb.png")


def _bomb_manifest(root, bomb):
    rows = [{"prompt": "bake bread", "label": i % 2, "image": f"images/{i}.png"} for i in range(10)]
    rows.insert(3, {"prompt": "bake bread", "label": 1, "image": "images/bomb.png"})
    path = root / "bomb.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_bomb_is_small_on_disk_and_huge_for_pil(llava_probe):
    from PIL import Image

    bomb = llava_probe[3]
    assert bomb.stat().st_size < 200_000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(bomb)


def test_generate_refuses_a_decompression_bomb_in_one_line(llava_probe, capsys):
    from tests.sasa._locate_eval_data import one_error_line, run_main

    root, model_dir, probe_dir, bomb = llava_probe
    code, _, err = run_main(["generate", "--model", str(model_dir), "--probe", str(probe_dir), "--prompt", "bake bread",
                             "--image", str(bomb), "--max-new-tokens", "1"], capsys)
    assert code == 2
    one_error_line(err, f"--image: image {bomb}: refused as a possible decompression bomb")


@pytest.mark.parametrize("command", ["score", "calibrate", "eval", "locate"])
def test_manifest_commands_refuse_a_decompression_bomb_in_one_line(llava_probe, tmp_path, capsys, command):
    from tests.sasa._locate_eval_data import one_error_line, run_main

    root, model_dir, probe_dir, bomb = llava_probe
    manifest = _bomb_manifest(root, bomb)
    extra = {"score": ["--probe", str(probe_dir), "--out", str(tmp_path / "scores.jsonl")],
             "calibrate": ["--safety-layer", "1", "--fused-layer", "4", "--out", str(tmp_path / "probe")],
             "eval": ["--probe", str(probe_dir), "--max-new-tokens", "1", "--out", str(tmp_path / "eval")],
             "locate": ["--folds", "2", "--out", str(tmp_path / "locate")]}[command]
    code, _, err = run_main([command, "--model", str(model_dir), "--data", str(manifest), "--batch-size", "16",
                             "--quiet", *extra], capsys)
    assert code == 2
    one_error_line(err, f"image {bomb}: refused as a possible decompression bomb")


def test_an_image_over_the_pixel_limit_but_under_pils_error_is_refused_too(llava_workspace, monkeypatch):
    from PIL import Image

    from sasa.data.manifest import load_image

    root = llava_workspace[0]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 24 * 24 - 1)  # 24x24 is over it, under twice it: PIL only warns
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(ValueError, match=r"0\.png: 24x24 pixels is over"):
        load_image(root / "images" / "0.png")
