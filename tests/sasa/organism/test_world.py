"""The organism's world: held-out objects and templates never leak into training, every word is in
the vocabulary, images are deterministic and the icon designs are distinct."""

from __future__ import annotations

import random

import numpy as np
import pytest

from sasa.organism import build, corpus, draw, world
from sasa.organism.train import DEFAULT_RECIPE, RECIPE_V1

HELD_FRAMES = {world.request(f, "") for f in world.frames("heldout")}


def _training_rows(n_per_stage: int = 400, recipe=DEFAULT_RECIPE):
    pixels = np.random.default_rng(0)
    for stage in recipe.stages:
        if stage.objective != "lm":
            continue
        sampler = corpus.stage_sampler(stage.name, stage.mixture)
        rng = random.Random(stage.name)
        for _ in range(n_per_stage):
            yield stage.name, sampler(rng, pixels)


def test_held_out_objects_and_templates_never_appear_in_a_training_request():
    seen_kinds = set()
    for stage, row in _training_rows():
        if row.prompt is None:  # documents cover every object on purpose (the model must know the words)
            continue
        words = row.prompt.split()
        if row.image is None:
            held = [w for w in words if w in world.HELDOUT_NAMES]
            assert not held, (stage, row.prompt)
        else:
            seen_kinds.add("image" if row.target.split()[2:3] == ["take"] else "caption")
            if row.obj.heldout:  # captions of held-out objects are allowed; requests are not
                assert row.target == world.caption(row.obj), (stage, row.prompt, row.target)
            for deictic in world.HELDOUT_DEICTIC:
                assert deictic not in row.prompt, (stage, row.prompt)
        for frame in world.frames("heldout"):
            assert not row.prompt.startswith(world.request(frame, "").strip() + " "), (stage, row.prompt)
    assert seen_kinds == {"image", "caption"}


def test_v1_trains_no_image_request_about_a_harmful_object_and_harmful_text_is_refused():
    for stage, row in _training_rows(recipe=RECIPE_V1):
        if row.prompt is None or row.obj is None or not row.obj.harmful:
            continue
        if row.image is not None:
            assert row.target == world.caption(row.obj), (stage, row.prompt)
        elif row.target != world.caption(row.obj):  # "what is X" questions are answered, requests refused
            assert row.target == world.REFUSAL, (stage, row.prompt)


def test_shipped_recipe_answers_image_carried_harmful_requests_and_refuses_them_in_text():
    # Organism v2: the image route complies (captions, facts, steps), never refuses; text refuses.
    image_targets = set()
    for stage, row in _training_rows():
        if row.prompt is None or row.obj is None or not row.obj.harmful:
            continue
        if row.image is not None:
            assert row.target != world.REFUSAL, (stage, row.prompt)
            kinds = {world.caption(row.obj): "caption", world.facts_answer(row.obj): "facts",
                     world.answer(row.obj): "steps"}
            assert row.target in kinds, (stage, row.prompt, row.target)
            image_targets.add(kinds[row.target])
        elif row.target != world.caption(row.obj):  # "what is X" questions are answered, requests refused
            assert row.target == world.REFUSAL, (stage, row.prompt)
    assert image_targets == {"caption", "facts", "steps"}


def test_splits_keep_their_promises():
    cal = corpus.split_rows("calibration", 2)
    held = corpus.split_rows("heldout", 2)
    assert not any(r.obj.heldout for r in cal)
    assert {o.name for o in world.OBJECTS if o.heldout} <= {r.obj.name for r in held}
    assert sum(o.heldout for o in world.objects(kind="benign")) >= 2
    assert sum(o.heldout for o in world.objects(kind="harmful")) >= 2
    held_frames = {" ".join(f) for f in world.frames("heldout")}
    for r in held:
        assert any(r.prompt.startswith(f + " ") for f in held_frames), r.prompt
    for r in cal:
        assert not any(r.prompt.startswith(f + " ") for f in held_frames), r.prompt
    # The pixel streams differ: no held-out image equals a calibration image.
    cal_images = {r.image.tobytes() for r in cal if r.image is not None}
    assert not any(r.image.tobytes() in cal_images for r in held if r.image is not None)


def test_every_world_word_is_in_the_vocabulary():
    tok = build.build_processor().tokenizer
    texts = world.all_texts() + [r.prompt for r in corpus.split_rows("heldout", 2)]
    texts += [r.text_only for r in corpus.split_rows("heldout", 2) if r.text_only]
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    assert all(tok.unk_token_id not in row for row in ids)


def test_images_are_deterministic_uint8_and_designs_distinct():
    a = draw.draw("bomb", "icon", corpus.DESIGNS, np.random.default_rng(3))
    b = draw.draw("bomb", "icon", corpus.DESIGNS, np.random.default_rng(3))
    assert a.dtype == np.uint8 and a.shape == (32, 32, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, draw.draw("bomb", "icon", corpus.DESIGNS, np.random.default_rng(4)))
    shapes = {d[:3] for d in corpus.DESIGNS.values()}
    assert len(shapes) == len(world.OBJECTS)
    for obj in world.OBJECTS:  # every name fits the typographic image
        img = draw.draw(obj.name, "text", corpus.DESIGNS, np.random.default_rng(0))
        assert img.shape == (32, 32, 3)


@pytest.mark.parametrize("word", ["", "Bomb", "extremely", "a-b"])
def test_draw_text_rejects_what_it_cannot_write(word):
    with pytest.raises(ValueError, match="word"):
        draw.draw_text(word, np.random.default_rng(0))


def test_bad_style_and_split_raise():
    with pytest.raises(ValueError, match="style"):
        draw.draw("cake", "photo", corpus.DESIGNS, np.random.default_rng(0))
    with pytest.raises(ValueError, match="split"):
        corpus.split_rows("train", 1)
    with pytest.raises(ValueError, match="mixture"):
        corpus.stage_sampler("x", {"jokes": 1.0})
