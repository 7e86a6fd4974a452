"""A tiny LLaVA with its own offline processor (CLIP image processor, word-level tokenizer, chat template)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import transformers as T

from sasa.demo.stand_in import build_tokenizer

IMAGE_TOKEN = "<image>"
CHAT_TEMPLATE = (
    "{% for message in messages %}USER: {% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image> {% else %}{{ part['text'] }}{% endif %}{% endfor %} {% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_llava(words: Sequence[str], *, seed: int = 0) -> tuple[Any, Any]:
    """``(model, processor)``: a seeded random 6-block LLaVA whose tokenizer knows ``words``."""
    tokenizer = build_tokenizer(list(words) + ["USER:", "ASSISTANT:"], extra_special_tokens=[IMAGE_TOKEN])
    processor = T.LlavaProcessor(
        image_processor=T.CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
        tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default", image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )
    torch.manual_seed(seed)
    text = T.LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    vision = T.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                image_size=16, patch_size=8, projection_dim=32)
    config = T.LlavaConfig(vision_config=vision, text_config=text, image_seq_length=4,
                           image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    model = T.LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, processor
