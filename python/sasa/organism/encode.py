"""Turning :class:`~sasa.organism.corpus.Row` batches into training tensors for the LLaVA.

Prompts are formatted exactly as inference formats them (:class:`sasa.PromptFormat` of the processor:
its chat template) and image prompts go through the processor itself (which expands
``<image>`` into the image tokens and normalises the pixels), so training and inference see the
same token layout. The loss covers the answer and its ``</s>`` only (everything after ``<s>`` for
plain documents).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from sasa.organism.corpus import Row

IGNORE = -100


def encode_rows(processor: Any, rows: Sequence[Row]) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask``, ``labels`` (right-padded) and ``pixel_values`` if any."""
    from PIL import Image

    from sasa.data.prompt_format import PromptFormat

    tok = processor.tokenizer
    fmt = PromptFormat.of(processor)
    prompts = [tok.bos_token if r.prompt is None else
               fmt.format(processor, r.prompt, with_image=r.image is not None) for r in rows]
    targets = tok([f"{r.target} {tok.eos_token}" for r in rows], add_special_tokens=False)["input_ids"]
    prompt_ids: list[list[int]] = [[] for _ in rows]
    image_rows = [i for i, r in enumerate(rows) if r.image is not None]
    text_rows = [i for i, r in enumerate(rows) if r.image is None]
    pixel_values = None
    if image_rows:
        out = processor(text=[prompts[i] for i in image_rows],
                        images=[Image.fromarray(rows[i].image) for i in image_rows], return_tensors="pt", padding=True)
        for i, ids, keep in zip(image_rows, out["input_ids"], out["attention_mask"]):
            prompt_ids[i] = ids[keep.bool()].tolist()
        pixel_values = out["pixel_values"]
    if text_rows:
        out = tok([prompts[i] for i in text_rows], add_special_tokens=False)
        for i, ids in zip(text_rows, out["input_ids"]):
            prompt_ids[i] = list(ids)
    width = max(len(p) + len(t) for p, t in zip(prompt_ids, targets))
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE)
    mask = torch.zeros_like(ids)
    for i, (p, t) in enumerate(zip(prompt_ids, targets)):
        n = len(p) + len(t)
        ids[i, :n] = torch.tensor(p + t)
        mask[i, :n] = 1
        labels[i, len(p):n] = torch.tensor(t)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if pixel_values is not None:
        batch["pixel_values"] = pixel_values
    return batch
