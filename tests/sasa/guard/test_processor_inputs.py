"""guard.generate on what a vision-language model's own processor returns (built offline)."""

from __future__ import annotations

import numpy as np
import torch
import transformers as T

from sasa import SASAConfig, apply_sasa
from tests.sasa import _tiny


def _tokenizer() -> T.PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": _tiny.PAD, "</s>": _tiny.EOS, "<s>": _tiny.BOS, "<image>": _tiny.IMAGE}
    for i in range(3, _tiny.TEXT_IDS):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = T.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>",
        additional_special_tokens=["<image>"],
    )
    fast.padding_side = "left"
    return fast


def _images(n: int):
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (20 + 4 * i, 24, 3), dtype=np.uint8)) for i in range(n)]


def test_llava_processor_output_generates_like_the_model():
    t = _tiny.llava()
    processor = T.LlavaProcessor(
        image_processor=T.CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
        tokenizer=_tokenizer(),
        patch_size=8,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    prompts = ["w5 w6 <image> w7 w8 w9", "<image> w10", "w11 w12 w13 <image> w14"]
    inputs = processor(text=prompts, images=_images(3), padding=True, return_tensors="pt")
    assert int((inputs["input_ids"] == _tiny.IMAGE).sum()) == 3 * 4  # the processor expanded <image>
    assert inputs["attention_mask"].min() == 0  # a padded batch
    with torch.no_grad():
        want = t.model.generate(**inputs, max_new_tokens=4, do_sample=False)
    guard = apply_sasa(
        t.model, SASAConfig(1, 2, scope="last"), probe=(torch.zeros(_tiny.VOCAB), torch.tensor(-60.0)),
        tokenizer=processor,
    )
    try:
        got = guard.generate(**inputs, max_new_tokens=4, do_sample=False)
        scores = guard.score(**inputs)
    finally:
        guard.remove()
    assert torch.equal(got.sequences, want) and not got.flagged.any()
    torch.testing.assert_close(got.scores, scores, atol=1e-6, rtol=1e-5)
