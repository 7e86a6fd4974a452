"""Loading what a command's flags name: ``--model`` (checked before any weight loads), ``--device``
and ``--probe``. Standard library only at module level (``sasa --help`` stays fast)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

from sasa.cli.errors import CLIError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_model_dir(directory: str) -> Path:
    """Cheap checks of ``--model`` (before any file is read or weight loaded): a directory with a
    ``config.json`` of a supported ``model_type``."""
    from sasa.hf.families import SUPPORTED_MODEL_TYPES

    path = Path(directory)
    if not (path / "config.json").is_file():
        if not path.exists() and _HUB_ID.match(str(directory)):
            raise CLIError(
                f"--model: {directory!r} looks like a Hugging Face Hub id; sasa loads local directories only "
                f"(nothing is downloaded): download it first (e.g. `hf download {directory} --local-dir DIR`) and "
                "pass the directory"
            )
        raise CLIError(f"--model: {path} has no config.json (expected a save_pretrained directory)")
    try:
        model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise CLIError(f"--model: {path / 'config.json'} is not a valid config ({err})") from None
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CLIError(f"--model: model_type {model_type!r} is not supported; supported: {sorted(SUPPORTED_MODEL_TYPES)}")
    return path


def load_model(directory: str, device: str, dtype: str) -> tuple[Any, Any]:
    """``(model, processor)`` from a ``save_pretrained`` directory, by its config's architecture.

    Placed as the command's flags say (:func:`sasa.distributed.current_placement`): on ``device``;
    tensor parallel over the torchrun processes (``--tp``, or torchrun with several processes); or
    with ``--device-map``."""
    import torch
    import transformers as tf

    from sasa.distributed import load_pretrained
    from sasa.hf.loading import is_vision_language, load_processor

    path = check_model_dir(directory)
    device = check_device(device)
    vision = is_vision_language(path)
    auto = tf.AutoModelForImageTextToText if vision else tf.AutoModelForCausalLM
    model = load_pretrained(path, auto, dtype=getattr(torch, dtype), device=device)
    return model, load_processor(path, vision)


def check_device(name: str) -> str:
    """``--device`` as given, if it names a usable cpu or cuda device; else :class:`CLIError`."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise CLIError(f"--device: {name!r} is not a device (expected cpu, cuda, cuda:1, ...)") from None
    if device.type == "meta":
        raise CLIError("--device: meta holds no weights; use cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device: {name} requested but no CUDA device is available")
    if device.type not in ("cpu", "cuda"):
        raise CLIError(f"--device: {name!r}: sasa runs on cpu and cuda")
    from sasa.distributed import current_placement

    if current_placement().tensor_parallel:
        # transformers puts each rank's shard on that rank's accelerator (cuda:LOCAL_RANK) when
        # there is one, else on the CPU: the flag can only agree with that.
        expected = "cuda" if torch.cuda.is_available() else "cpu"
        if device.index is not None or device.type != expected:
            raise CLIError(f"--device: {name!r} with tensor parallelism: each rank uses its own "
                           f"{'cuda:LOCAL_RANK' if expected == 'cuda' else 'CPU'}; pass --device {expected}")
    return name


def load_probe(directory: str, model: Optional[Any] = None) -> Any:
    """The ``--probe`` directory: validated alone first (cheap, before the model loads), then
    against the loaded ``model``."""
    from sasa.probe.sasa_probe import SASAProbe

    return SASAProbe.load(directory, model=model)
