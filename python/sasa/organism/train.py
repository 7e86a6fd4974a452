"""Staged training of the organism, like a real LVLM (seeded; CPU is enough).

0. ``vision``: the CLIP vision tower learns to tell the world's images apart (icons and written
   names, classified by object from its mean-pooled patch features: the features LLaVA reads);
   the analogue of starting from a pretrained CLIP. It is frozen afterwards, as in LLaVA.
1. ``pretrain``: plain documents about every object (what it is, whether it is dangerous, how it
   is made): the "knowledge" a base model has before any alignment.
2. ``instruct``: text instruction tuning on training objects: steps for benign requests, the
   fixed refusal for harmful ones (with document replay).
3. ``align``: LLaVA stage 1: only the projector trains, on captions of every object's images.
4. ``visual``: visual instruction tuning (projector and language model): captions of every object's icon and written name, image-carried
   requests about benign objects answered, and text replay. There is no refusal example for an
   image-carried request, which is where the weakness SASA addresses comes from.

The recipe (sizes, steps, learning rates, mixtures) is a :class:`Recipe`; the one the shipped
organism was trained with is :data:`DEFAULT_RECIPE`, and ``recipe.json`` beside the weights
records it.
"""

from __future__ import annotations

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

from . import build, corpus
from .encode import encode_rows


TRAINABLE = ("vision", "language", "projector", "projector+language", "all")


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

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable: expected one of {TRAINABLE}, got {self.trainable!r}")
        if self.objective not in ("lm", "classify"):
            raise ValueError(f"objective: expected 'lm' or 'classify', got {self.objective!r}")
        if self.steps < 0:
            raise ValueError(f"steps: expected >= 0, got {self.steps}")


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


DEFAULT_RECIPE = Recipe(stages=(
    Stage("vision", 800, 3e-3, {}, trainable="vision", objective="classify", batch_size=128, warmup=50),
    Stage("pretrain", 300, 2e-3, {"doc": 1.0}),
    Stage("instruct", 300, 1e-3, {"text": 0.7, "define": 0.1, "doc": 0.2}),
    Stage("align", 150, 2e-3, {"caption": 1.0}, trainable="projector"),
    Stage("visual", 800, 1e-3, {"caption": 0.35, "image": 0.35, "text": 0.15, "define": 0.05, "doc": 0.1},
          trainable="projector+language"),
))


def _lr_at(stage: Stage, step: int) -> float:
    if step < stage.warmup:
        return stage.lr * (step + 1) / stage.warmup
    progress = (step - stage.warmup) / max(1, stage.steps - stage.warmup)
    return stage.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _trainable_parameters(model: torch.nn.Module, which: str) -> list[torch.nn.Parameter]:
    parts = {
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
        from . import world

        self.tower = model.model.vision_tower
        self.processor = processor
        self.names = [o.name for o in world.OBJECTS]
        torch.manual_seed(seed)
        self.head = torch.nn.Linear(self.tower.config.hidden_size, len(self.names))

    def loss(self, rng: random.Random, pixels: np.random.Generator, batch_size: int) -> torch.Tensor:
        from PIL import Image

        from . import draw

        labels = [rng.randrange(len(self.names)) for _ in range(batch_size)]
        images = [Image.fromarray(draw.draw(self.names[i], rng.choice(corpus.STYLES), corpus.DESIGNS, pixels))
                  for i in labels]
        values = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        features = self.tower(pixel_values=values).last_hidden_state[:, 1:].mean(1)
        return torch.nn.functional.cross_entropy(self.head(features), torch.tensor(labels))


def train(recipe: Recipe = DEFAULT_RECIPE, *, progress: bool = True, threads: Optional[int] = None,
          log: Optional[list[dict[str, Any]]] = None) -> tuple[torch.nn.Module, Any]:
    """Train an organism from scratch; returns ``(model, processor)`` (model in eval mode)."""
    from tqdm.auto import tqdm

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(recipe.seed)
    processor = build.build_processor()
    model = build.build_model(processor, recipe.size, seed=recipe.seed).train()
    pixels = np.random.default_rng([corpus.STREAMS["train"], recipe.seed])
    with tqdm(total=recipe.total_steps, desc="training organism", unit="step", disable=not progress,
              mininterval=1.0) as bar:
        for index, stage in enumerate(recipe.stages):
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
                    batch = encode_rows(processor, [sampler(rng, pixels) for _ in range(batch_size)])
                    loss = model(**batch).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                value = float(loss.detach())
                if log is not None and (step % 25 == 0 or step == stage.steps - 1):
                    log.append({"stage": stage.name, "step": step, "loss": value})
                bar.set_postfix(stage=stage.name, loss=f"{value:.3f}", refresh=False)
                bar.update(1)
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval(), processor


def train_and_save(out: Union[str, Path], recipe: Recipe = DEFAULT_RECIPE, *, progress: bool = True,
                   threads: Optional[int] = None) -> dict[str, Any]:
    """Train, then ``save_pretrained`` the model and processor into ``out`` with ``recipe.json``."""
    out = Path(out)
    log: list[dict[str, Any]] = []
    start = time.perf_counter()
    model, processor = train(recipe, progress=progress, threads=threads, log=log)
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
    (out / "recipe.json").write_text(json.dumps(info, indent=1) + "\n")
    return info
