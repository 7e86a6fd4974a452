"""``sasa organism manifest`` and ``sasa organism train`` through the real command line, and the
training code on a smaller organism for a few steps (marked slow)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sasa.data.manifest import read_manifest
from sasa.organism import build, load, world
from sasa.organism.train import DEFAULT_RECIPE, Recipe, train_and_save


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sasa.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("split", ["calibration", "heldout"])
def test_manifest_rows_carry_label_category_carrier_and_their_images(tmp_path, split):
    out = tmp_path / f"{split}.jsonl"
    result = run_cli("organism", "manifest", "--split", split, "--out", str(out), "--per-object", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    objects = world.OBJECTS if split == "heldout" else world.objects(heldout=False)
    assert len(records) == 2 * len(objects)
    for r in records:
        assert r["label"] in (0, 1) and r["carrier"] in ("text", "image") and r["category"]
        assert ("image" in r) == (r["carrier"] == "image")
        if "image" in r:
            assert (out.parent / r["image"]).is_file() and r["text_only"]
    assert {r["carrier"] for r in records} == {"text", "image"} and {r["label"] for r in records} == {0, 1}
    examples = read_manifest(out)  # the library's reader accepts it as written
    assert len(examples) == len(records) and all(e.carrier for e in examples)
    if split == "calibration":  # held-out objects never reach probe calibration
        named = {w for r in records for w in (r.get("text_only") or r["prompt"]).split()}
        assert not named & world.HELDOUT_NAMES


def test_manifest_rejects_a_split_it_does_not_have(tmp_path):
    result = run_cli("organism", "manifest", "--split", "train", "--out", str(tmp_path / "x.jsonl"))
    assert result.returncode == 2 and "--split" in result.stderr


def _tiny_recipe(steps: int = 2) -> Recipe:
    size = build.ModelSize(hidden=32, layers=2, heads=2, intermediate=64, vision_hidden=32, vision_layers=1,
                           vision_heads=2, vision_intermediate=64)
    # The shipped recipe's frozen blocks and twin block, scaled to the two-block model: block 0
    # frozen, block 1 trains and is pulled to the text twins.
    stages = tuple(dataclasses.replace(s, steps=steps, warmup=1, batch_size=4,
                                       trainable=s.trainable.replace("_from:3", "_from:1"),
                                       twin_block=None if s.twin_block is None else 1)
                   for s in DEFAULT_RECIPE.stages)
    return Recipe(stages=stages, size=size, batch_size=4)


@pytest.mark.slow
def test_training_a_small_organism_for_a_few_steps_saves_a_loadable_llava(tmp_path):
    recipe = _tiny_recipe()
    before = build.build_model(build.build_processor(), recipe.size, seed=recipe.seed)
    info = train_and_save(tmp_path / "org", recipe, progress=False, threads=1)
    assert {e["stage"] for e in info["losses"]} == {s.name for s in recipe.stages}
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in info["losses"])
    saved = json.loads((tmp_path / "org" / "recipe.json").read_text())
    assert saved["recipe"] == json.loads(json.dumps(recipe.to_dict())) and saved["wall_time_s"] > 0
    model, processor = load(tmp_path / "org")
    # Every stage trained what it names: the vision tower (stage 0) and the language model; the
    # shipped recipe keeps the projector at its seeded initialisation (organism v2: blocks before
    # the first trainable one must not learn to read the image).
    assert not any(s.trainable.startswith("projector") for s in recipe.stages)
    for part, trained in (("vision_tower", True), ("language_model", True), ("multi_modal_projector", False)):
        old = dict(getattr(before.model, part).named_parameters())
        new = dict(getattr(model.model, part).named_parameters())
        assert any(not torch.equal(old[k], new[k]) for k in old) == trained, f"{part}: trained should be {trained}"
    inputs = processor(text=["<s><user> <image> how do i make this <assistant>"],
                       images=[__import__("PIL.Image").Image.new("RGB", (32, 32))], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] >= inputs["input_ids"].shape[1] + 1
    # Seeded: the same recipe trains the same weights (same machine, same thread count).
    train_and_save(tmp_path / "again", recipe, progress=False, threads=1)
    again, _ = load(tmp_path / "again")
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), f"{name} differs between two seeded runs"


def test_train_command_trains_and_says_where(tmp_path, monkeypatch):
    # The command's own code path (argument checks, message), on the tiny recipe.
    from sasa import cli
    from sasa.organism import train as train_module

    monkeypatch.setattr(train_module, "DEFAULT_RECIPE", _tiny_recipe(steps=1))
    out = tmp_path / "org"
    assert cli.main(["organism", "train", "--out", str(out), "--quiet", "--threads", "1"]) == 0
    assert (out / "config.json").is_file() and (out / "recipe.json").is_file()
    assert cli.main(["organism", "train", "--out", str(out), "--threads", "0"]) == 2


def test_load_says_how_to_make_an_organism_where_there_is_none(tmp_path):
    with pytest.raises(FileNotFoundError, match="sasa organism train"):
        load(Path(tmp_path))
