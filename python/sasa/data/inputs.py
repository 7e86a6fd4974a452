"""Checks on the inputs of ``features`` / ``score`` / ``generate``, done before any compute."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn


def check_inputs(
    inputs: Mapping[str, Any],
    device: torch.device,
    pad_id: Optional[int],
    *,
    vocab_size: Optional[int] = None,
    embed_dtype: Optional[torch.dtype] = None,
) -> tuple[int, int]:
    """Validate model inputs; return ``(batch, prompt_length)``.

    Raises ValueError/TypeError naming the argument: no ``input_ids``/``inputs_embeds``, an empty
    batch or prompt, a row with no tokens, padding (``pad_id`` at either end) without an
    ``attention_mask``, token ids outside ``[0, vocab_size)``, ``inputs_embeds`` of a dtype other
    than ``embed_dtype``, or any tensor on a device other than the model's.
    """
    for name, value in inputs.items():
        if isinstance(value, Tensor) and not _same_device(value.device, device):
            raise ValueError(
                f"{name}: is on device {value.device} but the model is on {device}; move the inputs "
                "to the model's device first"
            )
    ids = inputs.get("input_ids")
    embeds = inputs.get("inputs_embeds")
    if ids is None and embeds is None:
        raise ValueError("inputs: expected input_ids (or inputs_embeds), got neither")
    if ids is not None:
        if not isinstance(ids, Tensor) or ids.dtype not in (torch.int64, torch.int32) or ids.dim() != 2:
            raise TypeError(f"input_ids: expected an integer tensor [B, T], got {describe(ids)}")
        batch, length = ids.shape
        if vocab_size is not None and ids.numel():
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= vocab_size:
                raise ValueError(
                    f"input_ids: token id {lo if lo < 0 else hi} is outside the model's vocabulary [0, {vocab_size}); "
                    "was the input tokenized with this model's tokenizer?"
                )
    else:
        if not isinstance(embeds, Tensor) or embeds.dim() != 3 or not embeds.is_floating_point():
            raise TypeError(f"inputs_embeds: expected a floating-point tensor [B, T, d], got {describe(embeds)}")
        if embed_dtype is not None and embeds.dtype != embed_dtype:
            raise TypeError(f"inputs_embeds: expected dtype {embed_dtype} (the model's embeddings), got {embeds.dtype}")
        batch, length = embeds.shape[:2]
    if batch == 0:
        raise ValueError("inputs: empty batch (batch size 0)")
    if length == 0:
        raise ValueError("inputs: empty prompt (sequence length 0)")
    mask = inputs.get("attention_mask")
    if mask is None:
        if ids is not None and pad_id is not None and bool(((ids[:, 0] == pad_id) | (ids[:, -1] == pad_id)).any()):
            raise ValueError(
                f"attention_mask: input_ids contain padding (pad token id {pad_id} at a sequence end) but "
                "no attention_mask was given; pass the tokenizer's attention_mask"
            )
        return batch, length
    if not isinstance(mask, Tensor) or mask.shape != (batch, length):
        raise ValueError(f"attention_mask: expected shape [{batch}, {length}], got {describe(mask)}")
    empty = (mask == 0).all(dim=1)
    if bool(empty.any()):
        rows = empty.nonzero().flatten().tolist()
        raise ValueError(f"attention_mask: row(s) {rows} have no tokens (all padding)")
    return batch, length


def last_positions(inputs: Mapping[str, Any], batch: int, length: int, device: torch.device) -> Tensor:
    """Index of each row's last real (non-padding) token; works for left and right padding."""
    mask = inputs.get("attention_mask")
    if mask is None:
        return torch.full((batch,), length - 1, dtype=torch.long, device=device)
    idx = torch.arange(1, length + 1, device=mask.device)
    return ((mask != 0).long() * idx).max(dim=1).values.sub(1).to(device)


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    # "cuda" and "cuda:0" name the same device when the current device is 0.
    ia = a.index if a.index is not None else (torch.cuda.current_device() if a.type == "cuda" else None)
    ib = b.index if b.index is not None else (torch.cuda.current_device() if b.type == "cuda" else None)
    return ia == ib


def describe(value: Any) -> str:
    """A tensor's dtype and shape, or another value's type name (for error messages)."""
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    return type(value).__name__


def tensor_inputs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if isinstance(v, Tensor) or k in ("input_ids", "inputs_embeds", "attention_mask")}


def input_vocab_size(model: nn.Module) -> Optional[int]:
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(embeddings, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, Tensor) and weight.dim() == 2 else None


def embedding_dtype(model: nn.Module) -> Optional[torch.dtype]:
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(embeddings, "weight", None)
    return weight.dtype if isinstance(weight, Tensor) else None
