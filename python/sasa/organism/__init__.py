"""The model organism: a tiny LLaVA trained from scratch that has the weakness SASA addresses.

It refuses harmful requests written in text but answers the same requests when an image carries
the harmful part (the object's icon, or its name written in the picture). See ``docs/efficacy.md``
for how it was trained and what SASA does on it.

Stable entry points::

    from sasa import organism
    model, processor = organism.load()      # LlavaForConditionalGeneration + LlavaProcessor
    organism.PROBE_DIR                      # its calibrated SASA probe (apply_sasa(model, probe=...))
    organism.MODEL_DIR                      # the save_pretrained directory (for --model)

Submodules: :mod:`~sasa.organism.world` (objects, templates, answers), :mod:`~sasa.organism.draw`
(icons and typographic images), :mod:`~sasa.organism.build` (processor and model),
:mod:`~sasa.organism.train` (staged training), :mod:`~sasa.organism.manifest` (evaluation splits),
:mod:`~sasa.organism.phenotype` (what the unguarded model does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
#: The shipped organism (``save_pretrained`` layout: safetensors weights, config, processor files).
MODEL_DIR = PACKAGE_DIR / "model"
#: Its shipped calibrated probe (a :meth:`sasa.SASAProbe.save` directory).
PROBE_DIR = PACKAGE_DIR / "probe"

__all__ = ["MODEL_DIR", "PROBE_DIR", "load"]


def shipped_inputs() -> tuple[tuple[str, Path], ...]:
    """The shipped organism's directories as ``(label, path)`` inputs of the commands that read them
    without a flag (``sasa demo``, ``sasa organism efficacy``): no output of theirs may overwrite them
    (:mod:`sasa.cli.paths`)."""
    return (("shipped organism model", MODEL_DIR), ("shipped organism probe", PROBE_DIR))


def load(directory: Any = None, *, device: str = "cpu", dtype: Any = None) -> tuple[Any, Any]:
    """``(model, processor)``: the shipped organism (or the one saved in ``directory``), in eval mode.

    ``model`` is a ``LlavaForConditionalGeneration``, ``processor`` a ``LlavaProcessor``; both are
    loaded with ``from_pretrained`` (no download: the files are package data).
    """
    import torch
    import transformers as T

    path = Path(directory) if directory is not None else MODEL_DIR
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path}: no organism here (expected config.json from save_pretrained; "
            "'sasa organism train --out DIR' makes one)"
        )
    model = T.LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype or torch.float32).to(device).eval()
    processor = T.AutoProcessor.from_pretrained(path)
    return model, processor
