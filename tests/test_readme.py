"""The README's Python examples, run as written, in order, on tiny models saved where they look.

The README promises that its examples run; this test is that promise. The directories the
examples name (``model_dir``, ``calibration.jsonl``, ``llava_dir``, ``llava_probe_dir``,
``photo.png``) are made here, from the built-in demo model and a tiny LLaVA, in a temporary
working directory.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    from PIL import Image

    import sasa
    from sasa.demo.stand_in import DEMO_MANIFEST, save_default
    from tests.sasa._llava import build_llava

    save_default(tmp_path / "model_dir")
    shutil.copy(DEMO_MANIFEST, tmp_path / "calibration.jsonl")
    rows = [json.loads(line) for line in DEMO_MANIFEST.read_text().splitlines() if line.strip()]
    words = sorted({w for r in rows for w in r["prompt"].split()} | {"what", "should", "i", "do", "with", "is", "shown", "here"})
    model, processor = build_llava(words)
    model.save_pretrained(tmp_path / "llava_dir")
    processor.save_pretrained(tmp_path / "llava_dir")
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    manifest = []
    for i, row in enumerate(rows[:48]):
        pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "images" / f"{i}.png")
        manifest.append(json.dumps({"prompt": row["prompt"], "label": row["label"], "image": f"images/{i}.png"}))
    (tmp_path / "llava.jsonl").write_text("\n".join(manifest) + "\n")
    probe, _ = sasa.calibrate(model, processor, tmp_path / "llava.jsonl", sasa.SASAConfig(1, 4), progress=False)
    probe.save(tmp_path / "llava_probe_dir")
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_has_the_examples_this_test_expects():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 4
    assert any("AutoSASAModelForCausalLM" in b for b in blocks) and any("sasa.calibrate" in b for b in blocks)


def test_readme_python_examples_run_as_written(workspace):
    namespace: dict = {"__name__": "readme"}
    for number, block in enumerate(python_blocks(README.read_text()), start=1):
        try:
            exec(compile(block, f"README.md python block {number}", "exec"), namespace)
        except Exception as err:  # noqa: BLE001 - re-raised with the block that failed
            raise AssertionError(f"README python block {number} failed: {err!r}\n{block}") from err
    result = namespace["result"]
    assert result.flagged.shape == (1,) and result.scores.shape[0] == 1
