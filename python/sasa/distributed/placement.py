"""Layer placement across devices (``device_map``, accelerate): where each tensor the guard uses lives.

With ``from_pretrained(..., device_map=...)`` accelerate puts each decoder block on a device (a GPU,
the CPU, or offloaded: weights kept on the CPU or on disk and brought in by a hook on the module
just for its forward; outside a forward such weights sit on the ``meta`` device). The guard follows
the blocks:

- the inputs belong where the input embeddings execute (:func:`input_device`);
- ``H_s`` and ``H_f`` come from blocks that may sit on different devices; the projection runs where
  block ``s+1``'s weights are, and each block moves what it receives to its own device (its hook);
- a weight sasa reads itself (the output head, to fold a logits probe) is brought in for that read
  (:func:`weights_on_device`); a norm whose weight is offloaded is not fused into a kernel, the
  block runs it (its hook loads it);
- the probe is copied once to the device of the final state; the refusal is written on the device
  of ``generate``'s sequences.

Nothing here needs accelerate unless a model actually carries its hooks.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import torch
from torch import Tensor, nn


def hook_of(module: nn.Module) -> Any:
    """accelerate's hook on ``module`` (``_hf_hook``), or ``None``."""
    return getattr(module, "_hf_hook", None)


def has_offloaded_weights(module: nn.Module) -> bool:
    """Whether ``module``'s own weights are offloaded (kept off-device, loaded by its hook per forward)."""
    hook = hook_of(module)
    return bool(getattr(hook, "offload", False)) or any(
        p.device.type == "meta" for p in module.parameters(recurse=False)
    )


def execution_device(module: nn.Module) -> Optional[torch.device]:
    """Where ``module`` computes: its hook's execution device, else its first real weight's device."""
    device = getattr(hook_of(module), "execution_device", None)
    if device is not None:
        return torch.device(device) if not isinstance(device, torch.device) else device
    for param in module.parameters():
        if param.device.type != "meta":
            return param.device
    return None


def input_device(model: nn.Module) -> torch.device:
    """The device a guard call's inputs must be on: where the input embeddings execute.

    For a model on one device this is the device of its parameters, as before; with a device_map
    it is the embeddings' device even when they, or the first parameters, are offloaded."""
    try:
        embeddings = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        embeddings = None
    if isinstance(embeddings, nn.Module):
        device = execution_device(embeddings)
        if device is not None:
            return device
    for param in model.parameters():
        if param.device.type != "meta":
            return param.device
    return torch.device("cpu")


def real_device(weight: Any) -> Optional[torch.device]:
    """The device of a weight that holds values here (``None`` for an offloaded, meta weight)."""
    if isinstance(weight, Tensor) and weight.device.type != "meta":
        return weight.device
    return None


@contextlib.contextmanager
def weights_on_device(module: nn.Module) -> Iterator[None]:
    """``module``'s offloaded weights loaded for the ``with`` block (accelerate's own mechanism),
    then offloaded again. For a module without offloaded weights it does nothing."""
    if not has_offloaded_weights(module):
        yield
        return
    if hook_of(module) is None:
        raise ValueError(
            f"model: {type(module).__name__} has weights on the meta device (not loaded) and no accelerate hook "
            "to load them; load the model's weights first"
        )
    try:
        from accelerate.utils import align_module_device
    except ImportError as err:  # a hooked model implies accelerate; say what is missing all the same
        raise ModuleNotFoundError(
            "accelerate is needed to read this offloaded model's weights: pip install 'sasa-kernels[dist]'",
            name="accelerate",
        ) from err
    with align_module_device(module):
        yield
