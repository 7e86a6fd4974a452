"""Synthetic prompts of an exact (text) or near (with an image) token length, for timing.

Timing does not depend on what the tokens say, only on how many there are: a text model gets
random non-special token ids; a vision-language model gets a random image through its own
processor (and chat template), with filler words sized to reach the requested length.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["synthetic_inputs"]

_FILLER = "describe"


def _is_vision(processor: Any) -> bool:
    return hasattr(processor, "image_processor")


def _random_ids(tokenizer: Any, model: nn.Module, batch: int, length: int, seed: int) -> torch.Tensor:
    vocab = int(model.config.get_text_config().vocab_size)
    vocab = min(vocab, len(tokenizer)) if tokenizer is not None else vocab
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    allowed = torch.tensor([i for i in range(vocab) if i not in special] or list(range(vocab)))
    gen = torch.Generator().manual_seed(seed)
    return allowed[torch.randint(0, len(allowed), (batch, length), generator=gen)]


def _image_inputs(processor: Any, batch: int, length: int, seed: int, device: Any, raw: bool) -> dict[str, Any]:
    from PIL import Image

    from sasa.data.manifest import Example, encode_batch

    gen = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(336, 336, 3, generator=gen) * 255).to(torch.uint8).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "random.png"
        Image.fromarray(pixels).save(image)

        def encode(words: int) -> dict[str, Any]:
            prompt = " ".join([_FILLER] * max(1, words))
            return encode_batch(processor, [Example(prompt, -1, image)] * batch, raw_prompt=raw, device=device)

        words, inputs = 1, encode(1)
        shortest = int(inputs["input_ids"].shape[1])
        if length < shortest:
            raise ValueError(f"--prompt-lengths: {length} is shorter than this model's prompt with one image "
                             f"({shortest} tokens); use at least {shortest}")
        for _ in range(4):  # a few linear corrections: tokens per filler word are usually 1 or 2
            have = int(inputs["input_ids"].shape[1])
            if have == length:
                break
            per_word = max(1.0, (have - shortest) / max(1, words - 1)) if words > 1 else 1.0
            words = max(1, words + round((length - have) / per_word))
            inputs = encode(words)
    return inputs


def synthetic_inputs(model: nn.Module, processor: Any, batch: int, prompt_len: int, *, seed: int = 0,
                     image: bool = True, raw_prompt: bool = False) -> dict[str, Any]:
    """Model inputs of ``batch`` rows and about ``prompt_len`` tokens, on the model's device.

    Text models (or ``image=False``): exactly ``prompt_len`` random non-special token ids.
    Vision-language models: one random image per row through ``processor`` (its chat template
    included), with filler words; the length is as close as the processor allows (read
    ``inputs["input_ids"].shape[1]`` for the exact count); ``raw_prompt`` skips the chat template.
    Raises ``ValueError`` when the prompt cannot be that short.
    """
    if batch < 1 or prompt_len < 1:
        raise ValueError(f"batch and prompt_len: expected >= 1, got {batch} and {prompt_len}")
    device = next(model.parameters()).device
    if image and _is_vision(processor):
        return _image_inputs(processor, batch, prompt_len, seed, device, raw_prompt)
    tokenizer = getattr(processor, "tokenizer", processor)
    ids = _random_ids(tokenizer, model, batch, prompt_len, seed).to(device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
