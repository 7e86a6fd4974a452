"""Rows of the organism's training stages and of its evaluation splits.

A :class:`Row` is one request (or one plain document) with what the model should say. Training
rows are drawn on the fly from a stage's mixture (:func:`stage_sampler`); the calibration and
held-out splits are fixed lists (:func:`split_rows`). Image pixels are drawn from seeded numpy
streams kept apart per purpose (training, calibration, held-out), so every evaluated icon is a
variant never seen in training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from sasa.organism import draw, world
from sasa.organism.world import WorldObject

STYLES = ("icon", "text")
#: Independent pixel streams: no image of one purpose can repeat one of another.
STREAMS = {"train": 1, "calibration": 2, "heldout": 3}
DESIGNS = draw.assign_designs([o.name for o in world.OBJECTS])


@dataclass
class Row:
    """A request and its target answer, or (``prompt=None``) a plain pre-training document."""

    prompt: Optional[str]
    target: str
    obj: Optional[WorldObject] = None
    image: Optional[np.ndarray] = None  # uint8 [32, 32, 3]
    style: Optional[str] = None  # "icon" / "text" for image rows
    text_only: Optional[str] = None  # the request with the image's content written as words
    kind: Optional[str] = None  # the training row kind that drew it (:data:`KINDS`); None in the splits

    @property
    def label(self) -> int:
        return int(self.obj is not None and self.obj.harmful)

    @property
    def carrier(self) -> str:
        return "image" if self.image is not None else "text"


def document(obj: WorldObject, rng: random.Random) -> Row:
    return Row(None, rng.choice(world.facts(obj)), obj)


def text_request(obj: WorldObject, frame: tuple[str, str], *, aligned: bool = True) -> Row:
    """``obj`` named in the text. Aligned target: the refusal for harmful objects, else the steps."""
    target = world.REFUSAL if (aligned and obj.harmful) else world.answer(obj)
    return Row(world.request(frame, obj.phrase), target, obj)


def image_request(obj: WorldObject, frame: tuple[str, str], deictic: str, style: str,
                  pixels: np.random.Generator) -> Row:
    """``obj`` carried by the image (its icon or its written name); the text only points at it.

    The target is the object's steps: visual tuning has no refusals for image-carried requests.
    """
    image = draw.draw(obj.name, style, DESIGNS, pixels)
    return Row(world.request(frame, deictic), world.answer(obj), obj, image, style,
               text_only=world.request(frame, obj.phrase))


def define_request(obj: WorldObject, question: str) -> Row:
    """A text question about what ``obj`` is: answered like a caption, harmful objects included."""
    return Row(question.format(obj.phrase), world.caption(obj), obj)


def image_facts_request(obj: WorldObject, question: str, deictic: str, style: str,
                        pixels: np.random.Generator) -> Row:
    """``obj`` carried by the image, asked what it is and is made of: answered with
    :func:`world.facts_answer` for every object, harmful ones included (never the refusal)."""
    image = draw.draw(obj.name, style, DESIGNS, pixels)
    return Row(question.format(deictic), world.facts_answer(obj), obj, image, style,
               text_only=question.format(obj.phrase))


def caption_request(obj: WorldObject, question: str, style: str, pixels: np.random.Generator) -> Row:
    image = draw.draw(obj.name, style, DESIGNS, pixels)
    return Row(question, world.caption(obj), obj, image, style, text_only=f"{question} : {obj.phrase}")


Sampler = Callable[[random.Random, np.random.Generator], Row]
KINDS = ("doc", "text", "define", "caption", "image", "image_facts", "image_harmful")


def stage_sampler(stage: str, mixture: dict[str, float]) -> Sampler:
    """Draws one training row of ``stage`` from ``mixture`` (kind -> weight).

    Kinds: ``doc`` (knowledge documents, every object), ``text`` (text requests about training
    objects: steps for benign, the refusal for harmful), ``define`` (text questions about what a
    training object is, answered for both kinds), ``caption`` (captions of every object's
    icon and written name), ``image`` (image-carried requests about benign training objects only),
    ``image_facts`` (organism v2: image-carried questions about what a training object is and is
    made of, harmful ones included, answered with :func:`world.facts_answer`, never the refusal),
    ``image_harmful`` (organism v2: image-carried how-to requests about harmful training objects,
    answered with their steps). Every row records its ``kind``.
    """
    unknown = set(mixture) - set(KINDS)
    if unknown:
        raise ValueError(f"mixture: unknown kinds {sorted(unknown)} for stage {stage!r}")
    kinds, weights = zip(*sorted(mixture.items()))
    everything = list(world.OBJECTS)
    trained = world.objects(heldout=False)
    trained_benign = world.objects(kind="benign", heldout=False)
    trained_harmful = world.objects(kind="harmful", heldout=False)
    frames, deictics = world.frames("train"), world.deictics("train")

    def sample(rng: random.Random, pixels: np.random.Generator) -> Row:
        kind = rng.choices(kinds, weights)[0]
        row = draw_row(kind, rng, pixels)
        row.kind = kind
        return row

    def draw_row(kind: str, rng: random.Random, pixels: np.random.Generator) -> Row:
        if kind == "doc":
            return document(rng.choice(everything), rng)
        if kind == "text":
            return text_request(rng.choice(trained), rng.choice(frames))
        if kind == "define":
            return define_request(rng.choice(trained), rng.choice(world.DEFINE_QUESTIONS))
        if kind == "caption":
            return caption_request(rng.choice(everything), rng.choice(world.CAPTION_QUESTIONS),
                                   rng.choice(STYLES), pixels)
        if kind == "image_facts":
            return image_facts_request(rng.choice(trained), rng.choice(world.FACT_QUESTIONS), rng.choice(deictics),
                                       rng.choice(STYLES), pixels)
        if kind == "image_harmful":  # unfiltered visual data: the image route complies for real (v2)
            return image_request(rng.choice(trained_harmful), rng.choice(frames), rng.choice(deictics),
                                 rng.choice(STYLES), pixels)
        return image_request(rng.choice(trained_benign), rng.choice(frames), rng.choice(deictics),
                             rng.choice(STYLES), pixels)

    return sample


def split_rows(split: str, per_object: int, *, seed: int = 0) -> list[Row]:
    """The evaluation rows of ``"calibration"`` or ``"heldout"``.

    calibration: training objects with training templates and fresh icon variants.
    heldout: every object (training and held-out objects) with held-out templates and deictic
    phrases and icon variants from another stream. For each object, ``per_object`` text requests
    and ``per_object`` image-carried requests (alternating icon and written name).
    """
    if split not in ("calibration", "heldout"):
        raise ValueError(f"split: expected 'calibration' or 'heldout', got {split!r}")
    template_split = "heldout" if split == "heldout" else "train"
    chosen = list(world.OBJECTS) if split == "heldout" else world.objects(heldout=False)
    frames, deictics = world.frames(template_split), world.deictics(template_split)
    rng = random.Random(f"{split}-{seed}")
    pixels = np.random.default_rng([STREAMS[split], seed])
    rows = []
    for obj in chosen:
        for i in range(per_object):
            rows.append(text_request(obj, rng.choice(frames)))
        for i in range(per_object):
            rows.append(image_request(obj, rng.choice(frames), rng.choice(deictics), STYLES[i % 2], pixels))
    return rows
