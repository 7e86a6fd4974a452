"""Staged training of the organism, like a real LVLM (seeded; CPU is enough).

0. ``vision``: the CLIP vision tower learns to tell the world's images apart (icons and written
   names, classified by object from its mean-pooled patch features: the features LLaVA reads);
   the analogue of starting from a pretrained CLIP. It is frozen afterwards, as in LLaVA.
1. ``pretrain``: plain documents about every object (what it is, whether it is dangerous, how it
   is made): the "knowledge" a base model has before any alignment.
2. ``instruct``: text instruction tuning on training objects: steps for benign requests, the
   fixed refusal for harmful ones (with document replay).
3. ``align``: LLaVA stage 1, on captions of every object's images.
4. ``visual``: visual instruction tuning: captions, image-carried requests answered, and text
   replay. There is no refusal example for an image-carried request, which is where the weakness
   SASA addresses comes from.

What ``align`` and ``visual`` train differs between recipes. The shipped organism (v2,
:data:`DEFAULT_RECIPE` = ``v2e-twin``; issue 26) keeps the token embeddings, language blocks 0..2
and the projector frozen (the projector at its seeded random initialisation), so blocks 0..2 never
learn to read the image (they are the *safety layers*: text harm is decided there, image harm is
invisible there) and blocks 3..7 must turn the image into its meaning (*late fusion*). Its visual
data is unfiltered: image-carried how-to requests about harmful training objects are answered with
their steps (a real jailbreak), and a twin-alignment term pulls an image request's state after
block 5 towards its text twin's (:attr:`Stage.twin_block`). Organism v1 (:data:`RECIPE_V1`)
trained the projector and the whole language model and fused the image from block 0.

The recipe (sizes, steps, learning rates, mixtures) is a :class:`Recipe`; the one the shipped
organism was trained with is :data:`DEFAULT_RECIPE`, and ``recipe.json`` beside the weights
records it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from sasa.organism import build, corpus
from sasa.organism.encode import IGNORE, encode_rows

TRAINABLE = ("vision", "language", "projector", "projector+language", "all")
#: ``trainable`` may also be ``"language_from:K"`` or ``"projector+language_from:K"``: the language
#: model's blocks ``K`` and later, its final norm and the LM head train; the token embeddings and
#: blocks ``0..K-1`` stay frozen (organism v2, issue 26: image-to-concept mapping must live in later
#: blocks). ``K`` is a 0-based block index, at least 1 and below the model's number of blocks.
FROM_BLOCK = ("language_from:", "projector+language_from:")


def _split_trainable(trainable: str) -> tuple[str, Optional[int]]:
    """``("projector+language", 4)`` for ``"projector+language_from:4"``; ``(trainable, None)`` else."""
    for prefix in FROM_BLOCK:
        if trainable.startswith(prefix):
            digits = trainable[len(prefix):]
            if not digits.isdigit() or int(digits) < 1:
                raise ValueError(f"trainable: expected {prefix}K with a block index K >= 1, got {trainable!r}")
            return prefix[:-len("_from:")], int(digits)
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable: expected one of {TRAINABLE} or {FROM_BLOCK[0]}K / {FROM_BLOCK[1]}K, "
                         f"got {trainable!r}")
    return trainable, None


@dataclass(frozen=True)
class Stage:
    """One training stage. ``mixture`` weights the row kinds of :func:`corpus.stage_sampler`
    (ignored by the ``"classify"`` objective, which draws images of every object)."""

    name: str
    steps: int
    lr: float
    mixture: dict[str, float]
    trainable: str = "language"
    objective: str = "lm"  # "lm" (next-token loss on answers) or "classify" (vision tower only)
    batch_size: Optional[int] = None  # default: the recipe's
    warmup: int = 20
    #: Twin alignment (organism v2, issue 26): for image rows of ``twin_kinds``, ``twin_weight`` times
    #: the squared distance, relative to the twin's squared norm, between the row's state after
    #: decoder block ``twin_block`` (0-based) at the last prompt position and the same state of its
    #: text twin (the request with the object named, run through the model without gradient). It
    #: asks the trainable blocks to turn the image into the concept the text route already has, by
    #: that block; ``None`` trains without it.
    twin_block: Optional[int] = None
    twin_weight: float = 0.0
    twin_kinds: tuple[str, ...] = ("image", "image_facts")

    def __post_init__(self) -> None:
        if not isinstance(self.trainable, str):
            raise ValueError(f"trainable: expected a string, got {self.trainable!r}")
        _split_trainable(self.trainable)
        if self.objective not in ("lm", "classify"):
            raise ValueError(f"objective: expected 'lm' or 'classify', got {self.objective!r}")
        if self.steps < 0:
            raise ValueError(f"steps: expected >= 0, got {self.steps}")
        if self.twin_block is not None:
            if not isinstance(self.twin_block, int) or self.twin_block < 0:
                raise ValueError(f"twin_block: expected a 0-based block index >= 0, got {self.twin_block!r}")
            if not self.twin_weight > 0:
                raise ValueError(f"twin_weight: expected > 0 with twin_block set, got {self.twin_weight!r}")
            unknown = set(self.twin_kinds) - {"image", "image_facts", "image_harmful", "caption"}
            if not self.twin_kinds or unknown:
                raise ValueError(f"twin_kinds: expected image row kinds, got {self.twin_kinds!r}")


@dataclass(frozen=True)
class Recipe:
    stages: tuple[Stage, ...]
    size: build.ModelSize = build.ModelSize()
    batch_size: int = 64
    weight_decay: float = 0.01
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)


#: The recipe of organism v1 (shipped until 2026-12-06): the whole language model and the projector
#: train in visual tuning, and image-carried requests are only ever about benign objects. It fuses
#: the image early and answers most image-carried harmful requests about a benign object (issue 26).
RECIPE_V1 = Recipe(stages=(
    Stage("vision", 800, 3e-3, {}, trainable="vision", objective="classify", batch_size=128, warmup=50),
    Stage("pretrain", 300, 2e-3, {"doc": 1.0}),
    Stage("instruct", 300, 1e-3, {"text": 0.7, "define": 0.1, "doc": 0.2}),
    Stage("align", 150, 2e-3, {"caption": 1.0}, trainable="projector"),
    Stage("visual", 800, 1e-3, {"caption": 0.35, "image": 0.35, "text": 0.15, "define": 0.05, "doc": 0.1},
          trainable="projector+language"),
))

#: Organism v2 candidates (issue 26), trained beside the shipped recipe (which stays as it is).
#: ``v2a-freeze``: the shipped recipe with the token embeddings and language blocks 0..3 frozen in
#: ``align`` and ``visual`` (blocks 4.. train with the projector in both), so that mapping images to
#: concepts has to live in the later blocks.
RECIPE_V2A_FREEZE = Recipe(stages=RECIPE_V1.stages[:3] + (
    Stage("align", 150, 2e-3, {"caption": 1.0}, trainable="projector+language_from:4"),
    Stage("visual", 800, 1e-3, {"caption": 0.35, "image": 0.35, "text": 0.15, "define": 0.05, "doc": 0.1},
          trainable="projector+language_from:4"),
))
#: ``v2-candidate``: ``v2a-freeze`` plus image-carried fact questions about every training object,
#: harmful ones included, answered with name-first facts (``image_facts``; never a refusal), which
#: takes the "an image means a benign object" shortcut away from visual tuning.
RECIPE_V2_CANDIDATE = Recipe(stages=RECIPE_V1.stages[:3] + (
    RECIPE_V2A_FREEZE.stages[3],
    Stage("visual", 800, 1e-3, {"caption": 0.2, "image_facts": 0.2, "image": 0.35, "text": 0.15, "define": 0.05,
                                "doc": 0.05},
          trainable="projector+language_from:4"),
))
#: ``v2c-late-read``: ``v2-candidate`` with the projector frozen too, at its seeded random
#: initialisation (``language_from:4`` in ``align`` and ``visual``): the image features reach the
#: language model through a fixed random map, so only the trainable blocks 4.. can learn to read
#: them; nothing pulls the image tokens towards the word embeddings the frozen blocks know.
RECIPE_V2C_LATE_READ = Recipe(stages=RECIPE_V1.stages[:3] + tuple(
    dataclasses.replace(s, trainable="language_from:4") for s in RECIPE_V2_CANDIDATE.stages[3:]))
#: ``v2d-late-read-from3``: ``v2c-late-read`` with one more trainable block (blocks 3.. read the
#: image; the embeddings, blocks 0..2 and the projector stay frozen), for a fusion that completes
#: earlier; its safety block can be at most 2.
RECIPE_V2D_LATE_READ_FROM3 = Recipe(stages=RECIPE_V1.stages[:3] + tuple(
    dataclasses.replace(s, trainable="language_from:3") for s in RECIPE_V2_CANDIDATE.stages[3:]))
_V2_VISUAL_MIXTURE = {"caption": 0.15, "image_facts": 0.15, "image": 0.3, "image_harmful": 0.15, "text": 0.15,
                      "define": 0.05, "doc": 0.05}
#: ``v2f-jailbreak``: ``v2d-late-read-from3`` whose visual tuning is unfiltered: image-carried how-to
#: requests about harmful training objects answered with their steps (``image_harmful``), so the
#: image route complies for real (the jailbreak the method is about), while text keeps refusing.
RECIPE_V2F_JAILBREAK = Recipe(stages=RECIPE_V2D_LATE_READ_FROM3.stages[:4] + (
    dataclasses.replace(RECIPE_V2D_LATE_READ_FROM3.stages[4], mixture=_V2_VISUAL_MIXTURE),))
#: ``v2e-twin``: ``v2f-jailbreak`` plus twin alignment at block 5 (:attr:`Stage.twin_block`) on benign
#: how-to and fact image rows (harmful how-to rows are not pulled towards their refused text twins):
#: the late blocks must build, by block 5, the state the text route has for the pictured object.
RECIPE_V2E_TWIN = Recipe(stages=RECIPE_V2F_JAILBREAK.stages[:4] + (
    dataclasses.replace(RECIPE_V2F_JAILBREAK.stages[4], twin_block=5, twin_weight=1.0),))
#: ``v2g-twin-captions``: ``v2e-twin`` with captions pulled too, towards "what is <object>": captions
#: show every object, the held-out ones included (no request about them is trained), so the late
#: blocks learn to turn *every* object's image into its text concept.
RECIPE_V2G_TWIN_CAPTIONS = Recipe(stages=RECIPE_V2E_TWIN.stages[:4] + (
    dataclasses.replace(RECIPE_V2E_TWIN.stages[4], twin_kinds=("image", "image_facts", "caption")),))
#: ``v2h-twin-strong``: ``v2g-twin-captions`` with three times the twin weight.
RECIPE_V2H_TWIN_STRONG = Recipe(stages=RECIPE_V2E_TWIN.stages[:4] + (
    dataclasses.replace(RECIPE_V2G_TWIN_CAPTIONS.stages[4], twin_weight=3.0),))
#: The shipped organism's recipe (organism v2, issue 26): ``v2e-twin``. docs/efficacy.md says why.
DEFAULT_RECIPE = RECIPE_V2E_TWIN
RECIPES = {"default": DEFAULT_RECIPE, "v1": RECIPE_V1, "v2a-freeze": RECIPE_V2A_FREEZE, "v2-candidate": RECIPE_V2_CANDIDATE,
           "v2c-late-read": RECIPE_V2C_LATE_READ, "v2d-late-read-from3": RECIPE_V2D_LATE_READ_FROM3,
           "v2e-twin": RECIPE_V2E_TWIN, "v2f-jailbreak": RECIPE_V2F_JAILBREAK,
           "v2g-twin-captions": RECIPE_V2G_TWIN_CAPTIONS, "v2h-twin-strong": RECIPE_V2H_TWIN_STRONG}


def _lr_at(stage: Stage, step: int) -> float:
    if step < stage.warmup:
        return stage.lr * (step + 1) / stage.warmup
    progress = (step - stage.warmup) / max(1, stage.steps - stage.warmup)
    return stage.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _trainable_parameters(model: torch.nn.Module, which: str) -> list[torch.nn.Parameter]:
    which, first_block = _split_trainable(which)
    if first_block is not None:
        lm = model.model.language_model
        if first_block >= len(lm.layers):
            raise ValueError(f"trainable: block {first_block} is not below the model's {len(lm.layers)} blocks")
        parts = [*lm.layers[first_block:], lm.norm, model.lm_head]
        if which == "projector+language":
            parts.insert(0, model.model.multi_modal_projector)
        which = "frozen-early"
    parts = parts if which == "frozen-early" else {
        "vision": [model.model.vision_tower],
        "language": [model.model.language_model, model.lm_head],
        "projector": [model.model.multi_modal_projector],
        "projector+language": [model.model.multi_modal_projector, model.model.language_model, model.lm_head],
        "all": [model],
    }[which]
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for module in parts:
        for p in module.parameters():
            if not p.requires_grad:
                p.requires_grad_(True)
                params.append(p)
    return params


def _optimizer(params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


class _VisionClassifier:
    """The ``classify`` objective: object identity from the mean of the tower's patch features."""

    def __init__(self, model: torch.nn.Module, processor: Any, seed: int):
        from sasa.organism import world

        self.tower = model.model.vision_tower
        self.processor = processor
        self.names = [o.name for o in world.OBJECTS]
        torch.manual_seed(seed)
        self.head = torch.nn.Linear(self.tower.config.hidden_size, len(self.names))

    def loss(self, rng: random.Random, pixels: np.random.Generator, batch_size: int) -> torch.Tensor:
        from PIL import Image

        from sasa.organism import draw

        labels = [rng.randrange(len(self.names)) for _ in range(batch_size)]
        images = [Image.fromarray(draw.draw(self.names[i], rng.choice(corpus.STYLES), corpus.DESIGNS, pixels))
                  for i in labels]
        values = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        features = self.tower(pixel_values=values).last_hidden_state[:, 1:].mean(1)
        return torch.nn.functional.cross_entropy(self.head(features), torch.tensor(labels))


_TWIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Stage) if f.name.startswith("twin_")}


def _stage_identity(stage: Stage) -> dict[str, Any]:
    """``asdict(stage)`` without the twin-alignment fields left at their defaults, so stages that do
    not use them keep the checkpoint keys they had before those fields existed."""
    fields = asdict(stage)
    for name, default in _TWIN_DEFAULTS.items():
        if fields[name] == default or (name == "twin_kinds" and stage.twin_block is None):
            del fields[name]
    return fields


def _last_prompt_positions(labels: torch.Tensor) -> torch.Tensor:
    """Per row, the index of the last prompt token: the one before the first answer label."""
    answered = labels != IGNORE
    if not bool(answered.any(1).all()):
        raise ValueError("twin alignment: a row has no answer tokens")
    return answered.int().argmax(1) - 1


def _twin_prompt(row: corpus.Row) -> str:
    """The text twin a row's state is pulled towards: its ``text_only`` request, except for a caption
    (``text_only`` there is the question plus the name), whose twin is the text question about what
    the pictured object is (``"what is a bomb"``, :data:`world.DEFINE_QUESTIONS`)."""
    from sasa.organism import world

    if row.kind == "caption":
        return world.DEFINE_QUESTIONS[0].format(row.obj.phrase)
    return row.text_only


def twin_loss(model: torch.nn.Module, processor: Any, rows: list[corpus.Row], hidden: tuple[torch.Tensor, ...],
              labels: torch.Tensor, stage: Stage) -> Optional[torch.Tensor]:
    """The twin-alignment term of ``stage`` for a batch (see :attr:`Stage.twin_block`); ``None`` when
    the batch has no image row of ``stage.twin_kinds``."""
    chosen = [i for i, r in enumerate(rows) if r.image is not None and r.kind in stage.twin_kinds and r.text_only]
    if not chosen:
        return None
    if stage.twin_block >= len(hidden) - 1:
        raise ValueError(f"twin_block: block {stage.twin_block} is not below the model's {len(hidden) - 1} blocks")
    twins = [corpus.Row(_twin_prompt(rows[i]), rows[i].target, rows[i].obj) for i in chosen]
    twin_batch = encode_rows(processor, twins)
    with torch.no_grad():
        twin_hidden = model(input_ids=twin_batch["input_ids"], attention_mask=twin_batch["attention_mask"],
                            output_hidden_states=True).hidden_states[stage.twin_block + 1]
    rows_at = torch.arange(len(twins))
    target = twin_hidden[rows_at, _last_prompt_positions(twin_batch["labels"])]
    index = torch.tensor(chosen)
    state = hidden[stage.twin_block + 1][index, _last_prompt_positions(labels[index])]
    return stage.twin_weight * ((state - target).pow(2).sum(-1) / target.pow(2).sum(-1).clamp_min(1e-6)).mean()


def stage_key(recipe: Recipe, index: int) -> str:
    """What a checkpoint after stage ``index`` depends on: the recipe up to that stage, hashed."""
    import hashlib

    prefix = {"stages": [_stage_identity(s) for s in recipe.stages[:index + 1]], "size": recipe.size.to_dict(),
              "batch_size": recipe.batch_size, "weight_decay": recipe.weight_decay, "seed": recipe.seed}
    digest = hashlib.sha256(json.dumps(prefix, sort_keys=True).encode()).hexdigest()[:16]
    return f"stage{index}-{recipe.stages[index].name}-{digest}"


def _resume(recipe: Recipe, checkpoint_dir: Optional[Path], model: torch.nn.Module,
            pixels: np.random.Generator, log: Optional[list[dict[str, Any]]]) -> int:
    """Load the latest checkpoint of ``recipe``'s stage prefix; returns the first stage still to train."""
    if checkpoint_dir is None:
        return 0
    for index in reversed(range(len(recipe.stages))):
        path = checkpoint_dir / f"{stage_key(recipe, index)}.pt"
        if path.is_file():
            state = torch.load(path, weights_only=False)
            model.load_state_dict(state["model"])
            pixels.bit_generator.state = state["pixels"]
            torch.set_rng_state(state["torch_rng"])
            if log is not None:
                log.extend(state["log"])
            return index + 1
    return 0


def _checkpoint(recipe: Recipe, index: int, checkpoint_dir: Path, model: torch.nn.Module,
                pixels: np.random.Generator, log: Optional[list[dict[str, Any]]]) -> None:
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_dir / f"{stage_key(recipe, index)}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "pixels": pixels.bit_generator.state,
                "torch_rng": torch.get_rng_state(), "log": list(log or [])}, tmp)
    tmp.replace(path)


def train(recipe: Recipe = DEFAULT_RECIPE, *, progress: bool = True, threads: Optional[int] = None,
          log: Optional[list[dict[str, Any]]] = None,
          checkpoint_dir: Optional[Union[str, Path]] = None,
          timings: Optional[dict[str, float]] = None) -> tuple[torch.nn.Module, Any]:
    """Train an organism from scratch; returns ``(model, processor)`` (model in eval mode).

    With ``checkpoint_dir``, the state after each stage is saved there, keyed by a hash of the
    recipe up to that stage, and training resumes after the latest stage already saved: an
    interrupted run goes on where it stopped, and recipes that share their first stages share them.
    A resumed run trains the same weights as one from scratch (same machine and thread count).
    ``timings`` (if given) gets each stage trained here and its wall time in seconds.
    """
    from tqdm.auto import tqdm

    if threads is not None:
        torch.set_num_threads(threads)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    torch.manual_seed(recipe.seed)
    processor = build.build_processor()
    model = build.build_model(processor, recipe.size, seed=recipe.seed).train()
    pixels = np.random.default_rng([corpus.STREAMS["train"], recipe.seed])
    start = _resume(recipe, checkpoint_dir, model, pixels, log)
    with tqdm(total=recipe.total_steps, desc="training organism", unit="step", disable=not progress,
              mininterval=1.0) as bar:
        bar.update(sum(s.steps for s in recipe.stages[:start]))
        for index, stage in enumerate(recipe.stages):
            if index < start:
                continue
            began = time.perf_counter()
            rng = random.Random(f"{recipe.seed}-{index}-{stage.name}")
            params = _trainable_parameters(model, stage.trainable)
            classifier = None
            if stage.objective == "classify":
                classifier = _VisionClassifier(model, processor, recipe.seed + index)
                params = params + list(classifier.head.parameters())
            else:
                sampler = corpus.stage_sampler(stage.name, stage.mixture)
            optimizer = _optimizer(params, stage.lr, recipe.weight_decay)
            batch_size = stage.batch_size or recipe.batch_size
            for step in range(stage.steps):
                for group in optimizer.param_groups:
                    group["lr"] = _lr_at(stage, step)
                if classifier is not None:
                    loss = classifier.loss(rng, pixels, batch_size)
                else:
                    rows = [sampler(rng, pixels) for _ in range(batch_size)]
                    batch = encode_rows(processor, rows)
                    if stage.twin_block is None:
                        loss = model(**batch).loss
                    else:
                        out = model(**batch, output_hidden_states=True)
                        extra = twin_loss(model, processor, rows, out.hidden_states, batch["labels"], stage)
                        loss = out.loss if extra is None else out.loss + extra
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                value = float(loss.detach())
                if log is not None and (step % 25 == 0 or step == stage.steps - 1):
                    log.append({"stage": stage.name, "step": step, "loss": value})
                bar.set_postfix(stage=stage.name, loss=f"{value:.3f}", refresh=False)
                bar.update(1)
            if timings is not None:
                timings[stage.name] = round(time.perf_counter() - began, 1)
            if checkpoint_dir is not None:
                _checkpoint(recipe, index, checkpoint_dir, model, pixels, log)
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval(), processor


def train_and_save(out: Union[str, Path], recipe: Recipe = DEFAULT_RECIPE, *, progress: bool = True,
                   threads: Optional[int] = None,
                   checkpoint_dir: Optional[Union[str, Path]] = None) -> dict[str, Any]:
    """Train, then ``save_pretrained`` the model and processor into ``out`` with ``recipe.json``
    (``wall_time_s`` is this call's time: stages resumed from ``checkpoint_dir`` are not in it)."""
    out = Path(out)
    log: list[dict[str, Any]] = []
    start = time.perf_counter()
    timings: dict[str, float] = {}
    model, processor = train(recipe, progress=progress, threads=threads, log=log, checkpoint_dir=checkpoint_dir,
                             timings=timings)
    wall = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    info = {
        "recipe": recipe.to_dict(),
        "parameters": build.parameter_count(model),
        "wall_time_s": round(wall, 1),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "losses": log,
    }
    if checkpoint_dir is not None:  # only then: the shipped recipe.json keeps its keys
        info["stages_trained_here_s"] = timings
    (out / "recipe.json").write_text(json.dumps(info, indent=1) + "\n")
    return info
