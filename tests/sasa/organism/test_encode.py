"""Training tensors: the prompt part is token-for-token what inference feeds the model, and the loss
covers exactly the answer and its end-of-sequence token."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sasa.data.manifest import Example, encode_batch
from sasa.organism import build, corpus, world
from sasa.organism.encode import IGNORE, encode_rows


@pytest.fixture(scope="module")
def processor():
    return build.build_processor()


def _rows():
    pixels = np.random.default_rng(0)
    bomb, cake = world.BY_NAME["bomb"], world.BY_NAME["cake"]
    frame = world.frames("train")[0]
    return [
        corpus.text_request(bomb, frame),
        corpus.image_request(cake, frame, "this", "icon", pixels),
        corpus.caption_request(bomb, "what is this", "text", pixels),
        corpus.Row(None, "a cake is a kind of food .", cake),
    ]


def test_prompt_tokens_match_inference_encoding(processor):
    rows = _rows()
    batch = encode_rows(processor, rows)
    tok = processor.tokenizer
    for i, row in enumerate(rows[:3]):
        image = None if row.image is None else Image.fromarray(row.image)
        inference = encode_batch(processor, [Example(row.prompt, row.label, image)])
        prompt = inference["input_ids"][0].tolist()
        assert batch["input_ids"][i, : len(prompt)].tolist() == prompt, tok.decode(prompt)
        assert (batch["labels"][i, : len(prompt)] == IGNORE).all()
        answer = batch["labels"][i][batch["labels"][i] != IGNORE].tolist()
        assert tok.decode(answer) == f"{row.target} {tok.eos_token}"
        if image is not None:  # pixel_values hold the image rows in batch order
            k = sum(r.image is not None for r in rows[:i])
            assert torch.equal(batch["pixel_values"][k], inference["pixel_values"][0])


def test_image_rows_carry_one_image_each_and_padding_is_masked(processor):
    rows = _rows()
    batch = encode_rows(processor, rows)
    image_id = tok_id = processor.tokenizer.convert_tokens_to_ids(build.IMAGE_TOKEN)
    counts = (batch["input_ids"] == image_id).sum(1).tolist()
    assert counts == [0, build.IMAGE_TOKENS, build.IMAGE_TOKENS, 0]
    assert batch["pixel_values"].shape == (2, 3, build.IMAGE_SIZE, build.IMAGE_SIZE)
    pad = batch["attention_mask"] == 0
    assert (batch["labels"][pad] == IGNORE).all()
    assert (batch["input_ids"][pad] == processor.tokenizer.pad_token_id).all()
    # A document is trained on everything after <s>.
    doc = batch["labels"][3][batch["attention_mask"][3].bool()]
    assert doc[0] == IGNORE and (doc[1:] != IGNORE).all()
    assert tok_id == image_id
