"""Loading a model for several devices: tensor parallel across ``torchrun`` processes, or a
``device_map`` (accelerate), with the same call as the single-device load."""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Union

import torch
from torch import nn

from sasa.distributed import env as _env
from sasa.distributed.tensor_parallel import tensor_parallel_group

DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


@dataclass(frozen=True)
class Placement:
    """How a model is spread over devices.

    Attributes:
        tensor_parallel: shard every decoder block over the ``torchrun`` processes with the model's
            own plan (``tp_plan="auto"``); needs an initialized process group
            (:func:`sasa.distributed.init_process_group`) or the ``torchrun`` variables.
        device_map: accelerate's layer placement: ``"auto"``, ``"balanced"``, ``"balanced_low_0"``,
            ``"sequential"`` or an explicit ``{module name: device}`` dict (``"disk"`` offloads).
        max_memory: per-device limits for a named ``device_map`` (``{0: "20GiB", "cpu": "64GiB"}``).
        offload_folder: where weights offloaded to ``"disk"`` are written.
    """

    tensor_parallel: bool = False
    device_map: Optional[Union[str, Mapping[str, Any]]] = None
    max_memory: Optional[Mapping[Union[int, str], Union[int, str]]] = None
    offload_folder: Optional[str] = None

    def __post_init__(self) -> None:
        if self.tensor_parallel and self.device_map is not None:
            raise ValueError("device_map: cannot be combined with tensor parallelism; choose one")
        if isinstance(self.device_map, str) and self.device_map not in DEVICE_MAPS:
            raise ValueError(f"device_map: expected one of {DEVICE_MAPS} or a dict, got {self.device_map!r}")
        if self.device_map is None and (self.max_memory is not None or self.offload_folder is not None):
            raise ValueError("max_memory/offload_folder: only used with a device_map")

    @property
    def single_device(self) -> bool:
        return not self.tensor_parallel and self.device_map is None


_CURRENT: contextvars.ContextVar[Placement] = contextvars.ContextVar("sasa_placement", default=Placement())


def current_placement() -> Placement:
    """The placement the command line chose (a single device unless ``--tp``/``--device-map``)."""
    return _CURRENT.get()


@contextlib.contextmanager
def using_placement(placement: Placement) -> Iterator[Placement]:
    token = _CURRENT.set(placement)
    try:
        yield placement
    finally:
        _CURRENT.reset(token)


def require_accelerate() -> None:
    try:
        import accelerate  # noqa: F401
    except ImportError as err:
        raise ModuleNotFoundError(
            "device_map placement needs accelerate, which is not installed: pip install 'sasa-kernels[dist]'",
            name="accelerate",
        ) from err


def load_pretrained(
    path: Union[str, Path],
    auto_class: Any = None,
    *,
    placement: Optional[Placement] = None,
    dtype: Union[str, torch.dtype] = "auto",
    device: Union[str, torch.device] = "cpu",
    **kwargs: Any,
) -> nn.Module:
    """``auto_class.from_pretrained(path)`` placed as ``placement`` says, in eval mode.

    Args:
        path: a ``save_pretrained`` directory.
        auto_class: e.g. ``transformers.AutoModelForCausalLM`` (default: that, or
            ``AutoModelForImageTextToText`` for a vision-language directory).
        placement: :class:`Placement` (default: :func:`current_placement`): a single ``device``,
            tensor parallel (every ``torchrun`` rank loads its shard; the process group is set up
            here with the default timeout if it is not yet), or a ``device_map``.
        dtype: the weights' dtype.
        device: the device for a single-device placement (ignored otherwise: under tensor
            parallelism each rank uses its own accelerator, ``cuda:LOCAL_RANK``, or the CPU).
        kwargs: more ``from_pretrained`` arguments.

    Raises:
        RuntimeError: tensor parallel outside ``torchrun``, or a model that came back unsharded.
        ModuleNotFoundError: a ``device_map`` without accelerate installed.
    """
    from sasa.hf import compat

    placement = current_placement() if placement is None else placement
    if auto_class is None:
        import transformers as tf

        from sasa.hf.loading import is_vision_language

        auto_class = tf.AutoModelForImageTextToText if is_vision_language(path) else tf.AutoModelForCausalLM
    if placement.single_device:
        return auto_class.from_pretrained(path, dtype=dtype, **kwargs).to(device).eval()
    if placement.tensor_parallel:
        if not _env.is_initialized():
            _env.init_process_group()
        model = auto_class.from_pretrained(path, dtype=dtype, **compat.tensor_parallel_kwargs(), **kwargs).eval()
        if _env.world_size() > 1 and tensor_parallel_group(model) is None:
            raise RuntimeError(
                f"model: {type(model).__name__} was loaded without tensor parallelism (no sharded weights); "
                "its architecture may have no tensor-parallel plan"
            )
        return model
    require_accelerate()
    extra = {k: v for k, v in (("max_memory", placement.max_memory), ("offload_folder", placement.offload_folder))
             if v is not None}
    model = auto_class.from_pretrained(path, dtype=dtype, device_map=placement.device_map, **extra, **kwargs)
    return model.eval()


def parse_max_memory(text: str) -> dict[Union[int, str], str]:
    """``"0=20GiB,1=20GiB,cpu=64GiB"`` -> ``{0: "20GiB", 1: "20GiB", "cpu": "64GiB"}``."""
    limits: dict[Union[int, str], str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        device, sep, amount = item.partition("=")
        device, amount = device.strip(), amount.strip()
        if not sep or not device or not amount:
            raise ValueError(f"--max-memory: expected DEVICE=AMOUNT[,DEVICE=AMOUNT...] (e.g. 0=20GiB,cpu=64GiB), got {item!r}")
        key: Union[int, str] = int(device) if device.isdigit() else device
        if key in limits:
            raise ValueError(f"--max-memory: device {device!r} given twice")
        limits[key] = amount
    if not limits:
        raise ValueError("--max-memory: expected DEVICE=AMOUNT[,DEVICE=AMOUNT...], got nothing")
    return limits
