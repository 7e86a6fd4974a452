"""Organism v2 levers (issue 26) beside the shipped recipe: frozen early language blocks
(``trainable="...language_from:K"``), image-carried fact questions answered for every object
(``image_facts``), named recipes, and per-stage checkpoints; the shipped recipe is unchanged."""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch

from sasa.organism import MODEL_DIR, build, corpus, world
from sasa.organism.encode import encode_rows
from sasa.organism.train import (
    DEFAULT_RECIPE,
    RECIPE_V2_CANDIDATE,
    RECIPE_V2E_TWIN,
    RECIPE_V2F_JAILBREAK,
    RECIPES,
    Recipe,
    Stage,
    _trainable_parameters,
    stage_key,
    train,
    twin_loss,
)

TINY = build.ModelSize(hidden=32, layers=3, heads=2, intermediate=64, vision_hidden=32, vision_layers=1,
                       vision_heads=2, vision_intermediate=64)


@pytest.mark.skipif(not (MODEL_DIR / "recipe.json").is_file(), reason="no shipped organism")
def test_default_recipe_is_the_one_the_shipped_organism_was_trained_with():
    shipped = json.loads((MODEL_DIR / "recipe.json").read_text())["recipe"]
    assert json.loads(json.dumps(DEFAULT_RECIPE.to_dict())) == shipped
    assert RECIPES["default"] is DEFAULT_RECIPE


@pytest.mark.parametrize("bad", ["language_from:0", "projector+language_from:", "projector+language_from:x",
                                 "projector+language_from:-1", "language_from", "projector+vision", ""])
def test_a_bad_trainable_value_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="trainable"):
        Stage("visual", 1, 1e-3, {"caption": 1.0}, trainable=bad)


def test_a_first_trainable_block_past_the_model_is_refused():
    model = build.build_model(build.build_processor(), TINY, seed=0)
    with pytest.raises(ValueError, match="trainable: block 3"):
        _trainable_parameters(model, "projector+language_from:3")


def _changed(before: dict, model: torch.nn.Module, prefix: str) -> bool:
    return any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k.startswith(prefix))


def test_frozen_blocks_and_embeddings_do_not_change_in_a_training_step():
    recipe = Recipe(stages=(Stage("visual", 2, 1e-2, {"caption": 0.5, "image_facts": 0.5}, batch_size=4, warmup=1,
                                  trainable="projector+language_from:2"),), size=TINY, batch_size=4)
    before = {k: v.clone() for k, v in build.build_model(build.build_processor(), TINY, seed=0).state_dict().items()}
    model, _ = train(recipe, progress=False, threads=1)
    lm = "model.language_model."
    for frozen in (lm + "embed_tokens.", lm + "layers.0.", lm + "layers.1.", "model.vision_tower."):
        assert not _changed(before, model, frozen), f"{frozen} changed"
    for trained in (lm + "layers.2.", lm + "norm.", "lm_head.", "model.multi_modal_projector."):
        assert _changed(before, model, trained), f"{trained} did not train"


def test_v2_candidate_answers_harmful_image_fact_questions_with_facts_never_the_refusal():
    visual = RECIPE_V2_CANDIDATE.stages[-1]
    assert visual.name == "visual" and "image_facts" in visual.mixture
    assert all(s.trainable.endswith("language_from:4") for s in RECIPE_V2_CANDIDATE.stages[3:])
    sampler = corpus.stage_sampler(visual.name, visual.mixture)
    rng, pixels = random.Random(0), np.random.default_rng(0)
    vocab = build.build_processor().tokenizer.get_vocab()
    facts = []
    for _ in range(600):
        row = sampler(rng, pixels)
        if row.image is not None:
            assert row.target != world.REFUSAL, row.prompt
            if row.obj.harmful:  # the only image rows about harmful objects: captions and fact questions
                assert row.target in (world.facts_answer(row.obj), world.caption(row.obj)), row.target
        if row.target == world.facts_answer(row.obj):
            assert row.image is not None and not row.obj.heldout
            assert row.target.split()[0] == row.obj.name and world.steps(row.obj) not in row.target
            assert all(w in vocab for w in (row.prompt + " " + row.target + " " + row.text_only).split())
            facts.append(row)
    assert {r.obj.kind for r in facts} == {"benign", "harmful"}
    assert len({r.obj.name for r in facts if r.obj.harmful}) >= 10


def test_v1_mixtures_never_draw_the_new_row_kind():
    for stage in RECIPES["v1"].stages:
        assert "image_facts" not in stage.mixture
    with pytest.raises(ValueError, match="unknown kinds"):
        corpus.stage_sampler("visual", {"facts": 1.0})


def _tiny(recipe: Recipe, steps: int = 2) -> Recipe:
    stages = tuple(dataclasses.replace(s, steps=steps, warmup=1, batch_size=4,
                                       trainable=s.trainable.replace("_from:4", "_from:2"))
                   for s in recipe.stages)
    return Recipe(stages=stages, size=TINY, batch_size=4)


def test_a_run_resumed_from_stage_checkpoints_trains_the_same_weights(tmp_path):
    full = _tiny(RECIPE_V2_CANDIDATE)
    shared = Recipe(stages=full.stages[:3], size=TINY, batch_size=4)  # the stages v2 shares with the default
    train(shared, progress=False, threads=1, checkpoint_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 3
    timings: dict[str, float] = {}
    resumed, _ = train(full, progress=False, threads=1, checkpoint_dir=tmp_path, timings=timings)
    assert set(timings) == {"align", "visual"}  # the first three stages came from the checkpoints
    scratch, _ = train(full, progress=False, threads=1)
    for (name, a), (_, b) in zip(resumed.state_dict().items(), scratch.state_dict().items()):
        assert torch.equal(a, b), f"{name} differs between the resumed and the from-scratch run"


def test_v2_recipes_share_the_shipped_first_stages_and_freeze_the_early_blocks_after_them():
    for name, recipe in RECIPES.items():
        assert recipe.stages[:3] == DEFAULT_RECIPE.stages[:3], name
        if name != "v1":
            first = 4 if name in ("v2a-freeze", "v2-candidate", "v2c-late-read") else 3
            assert all(s.trainable.endswith(f"language_from:{first}") for s in recipe.stages[3:]), name
    assert [s.trainable for s in RECIPES["v2c-late-read"].stages[3:]] == ["language_from:4"] * 2  # projector frozen too


def test_the_unfiltered_visual_mixture_answers_harmful_image_how_to_with_its_steps():
    visual = RECIPE_V2F_JAILBREAK.stages[-1]
    sampler = corpus.stage_sampler(visual.name, visual.mixture)
    rng, pixels = random.Random(1), np.random.default_rng(1)
    harmful_how_to = []
    for _ in range(400):
        row = sampler(rng, pixels)
        assert row.kind in visual.mixture
        if row.kind == "image_harmful":
            assert row.image is not None and row.obj.harmful and not row.obj.heldout
            assert row.target == world.answer(row.obj) and row.target != world.REFUSAL
            assert row.obj.name in row.text_only and row.obj.name not in row.prompt
            harmful_how_to.append(row)
        if row.kind == "text" and row.obj.harmful:
            assert row.target == world.REFUSAL  # text keeps refusing
    assert len({r.obj.name for r in harmful_how_to}) >= 8


def test_stage_keys_of_stages_without_twin_alignment_did_not_change():
    # Checkpoints written before the twin fields existed must still be found.
    assert stage_key(DEFAULT_RECIPE, 2) == "stage2-instruct-b5733c016db16240"
    assert stage_key(DEFAULT_RECIPE, 3) == "stage3-align-1074a9b130f4ed05"
    assert stage_key(RECIPE_V2E_TWIN, 3) == stage_key(RECIPE_V2F_JAILBREAK, 3)
    assert stage_key(RECIPE_V2E_TWIN, 4) != stage_key(RECIPE_V2F_JAILBREAK, 4)


@pytest.mark.parametrize("bad, name", [(dict(twin_block=-1, twin_weight=1.0), "twin_block"),
                                       (dict(twin_block=2, twin_weight=0.0), "twin_weight"),
                                       (dict(twin_block=2, twin_weight=1.0, twin_kinds=()), "twin_kinds"),
                                       (dict(twin_block=2, twin_weight=1.0, twin_kinds=("text",)), "twin_kinds")])
def test_bad_twin_settings_are_refused_by_name(bad, name):
    with pytest.raises(ValueError, match=name):
        Stage("visual", 1, 1e-3, {"image": 1.0}, **bad)


def _twin_distance(model, processor, rows, block):
    batch = encode_rows(processor, rows)
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True).hidden_states
        stage = Stage("visual", 1, 1e-3, {"image_facts": 1.0}, twin_block=block, twin_weight=1.0)
        return float(twin_loss(model, processor, rows, hidden, batch["labels"], stage))


def test_twin_alignment_pulls_image_states_towards_their_text_twins():
    mixture = {"image_facts": 1.0}
    plain = Stage("visual", 30, 1e-2, mixture, batch_size=8, warmup=1, trainable="language_from:1")
    twin = dataclasses.replace(plain, twin_block=1, twin_weight=5.0)
    sampler = corpus.stage_sampler("visual", mixture)
    rng, pixels = random.Random(5), np.random.default_rng(5)
    rows = [sampler(rng, pixels) for _ in range(16)]
    distances = {}
    for name, stage in (("plain", plain), ("twin", twin)):
        model, processor = train(Recipe(stages=(stage,), size=TINY, batch_size=8), progress=False, threads=1)
        distances[name] = _twin_distance(model, processor, rows, 1)
    assert distances["twin"] < 0.5 * distances["plain"], distances


def test_twin_loss_is_none_without_image_rows_of_its_kinds():
    processor = build.build_processor()
    model = build.build_model(processor, TINY, seed=0)
    rows = [corpus.text_request(world.BY_NAME["cake"], world.frames("train")[0])]
    rows[0].kind = "text"
    batch = encode_rows(processor, rows)
    hidden = model(**batch, output_hidden_states=True).hidden_states
    stage = Stage("visual", 1, 1e-3, {"text": 1.0}, twin_block=1, twin_weight=1.0)
    assert twin_loss(model, processor, rows, hidden, batch["labels"], stage) is None


def test_a_caption_is_pulled_towards_the_text_question_about_its_object():
    from sasa.organism.train import _twin_prompt

    sampler = corpus.stage_sampler("visual", {"caption": 1.0, "image": 1.0})
    rng, pixels = random.Random(2), np.random.default_rng(2)
    seen = set()
    for _ in range(40):
        row = sampler(rng, pixels)
        seen.add(row.kind)
        if row.kind == "caption":
            assert _twin_prompt(row) == f"what is {row.obj.phrase}"
        else:
            assert _twin_prompt(row) == row.text_only and row.obj.name in row.text_only
    assert seen == {"caption", "image"}


def test_the_train_command_offers_every_named_recipe():
    from sasa.cli.app import build_parser

    parser = build_parser()
    organism = next(a for a in parser._subparsers._group_actions[0].choices["organism"]._actions
                    if isinstance(a, __import__("argparse")._SubParsersAction))
    recipe = next(a for a in organism.choices["train"]._actions if a.dest == "recipe")
    assert set(recipe.choices) == set(RECIPES)
    assert RECIPES["default"] is DEFAULT_RECIPE and DEFAULT_RECIPE is RECIPE_V2E_TWIN
