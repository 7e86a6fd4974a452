"""Last-prompt-position features of the organism for the efficacy comparison.

*Plain* features come from the model's own forward (``output_hidden_states``): the final-position
logits, and the residual stream ``H`` after a given decoder block (0-based: ``H`` after block
``i`` is ``hidden_states[i + 1]``). *SASA* features come from the public guard
(:meth:`sasa.SASAGuard.features`). Every batch is encoded by :func:`sasa.data.encode_batch`
(left-padded, so the last prompt token is the last column).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from sasa.config import SASAConfig
from sasa.data.manifest import Example, batches, encode_batch
from sasa.guard.apply import apply_sasa


def ordered(examples: Sequence[Example], batch_size: int) -> list[Example]:
    """The order in which the feature functions return rows (text rows first, then image rows)."""
    return [e for batch in batches(examples, batch_size) for e in batch]


def plain_features(model: Any, processor: Any, examples: Sequence[Example], layers: Sequence[int], *,
                   batch_size: int = 32) -> dict[str, torch.Tensor]:
    """``{"logits": [N, V], "H<i>": [N, d] for i in layers}`` in :func:`ordered` order (float32)."""
    device = next(model.parameters()).device
    out: dict[str, list[torch.Tensor]] = {"logits": [], **{f"H{i}": [] for i in layers}}
    for batch in batches(examples, batch_size):
        inputs = encode_batch(processor, batch, device=device)
        with torch.no_grad():
            result = model(**inputs, output_hidden_states=True)
        out["logits"].append(result.logits[:, -1].float().cpu())
        for i in layers:
            out[f"H{i}"].append(result.hidden_states[i + 1][:, -1].float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def sasa_features(model: Any, processor: Any, examples: Sequence[Example], config: SASAConfig, *,
                  batch_size: int = 32) -> torch.Tensor:
    """:meth:`sasa.SASAGuard.features` for every row, in :func:`ordered` order (float32 ``[N, F]``)."""
    guard = apply_sasa(model, config, tokenizer=processor)
    device = next(model.parameters()).device
    rows = []
    try:
        for batch in batches(examples, batch_size):
            rows.append(guard.features(**encode_batch(processor, batch, device=device)).float().cpu())
    finally:
        guard.remove()
    return torch.cat(rows)
