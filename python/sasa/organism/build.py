"""The organism's tokenizer, chat template, ``LlavaProcessor`` and ``LlavaForConditionalGeneration``.

The tokenizer is word-level over the world's vocabulary (:func:`sasa.organism.world.all_texts`),
built offline with :func:`sasa.demo.build_tokenizer`. The model is a real Hugging Face LLaVA: a
small CLIP vision tower (32x32 images, 8x8 patches: 16 image tokens after dropping CLS) and a
small Llama language model, both trained from scratch by :mod:`sasa.organism.train`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from sasa.organism import world

IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
#: ``<s><user> [<image> ]request <assistant>`` for prompts; a finished assistant turn ends in ``</s>``.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}<user> {% else %}<assistant> {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image> {% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] != 'user' %} {{ eos_token }}{% endif %} "
    "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
)


@dataclass(frozen=True)
class ModelSize:
    """Sizes of the two towers (the shipped organism uses the defaults)."""

    hidden: int = 128
    layers: int = 8
    heads: int = 4
    intermediate: int = 384
    vision_hidden: int = 96
    vision_layers: int = 3
    vision_heads: int = 4
    vision_intermediate: int = 192

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def build_processor() -> Any:
    """The ``LlavaProcessor``: a CLIP image processor (32x32) and the world's word-level tokenizer."""
    import transformers as T

    from sasa.demo.stand_in import build_tokenizer

    tokenizer = build_tokenizer(world.all_texts(), extra_special_tokens=[IMAGE_TOKEN])
    tokenizer.chat_template = CHAT_TEMPLATE
    # The PIL-backed class where it exists (no torchvision needed, no fallback warning).
    image_processor_class = getattr(T, "CLIPImageProcessorPil", None) or T.CLIPImageProcessor
    image_processor = image_processor_class(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    return T.LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", image_token=IMAGE_TOKEN, num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )


def build_model(processor: Any, size: ModelSize = ModelSize(), *, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised (seeded) LLaVA sized by ``size`` for ``processor``'s vocabulary."""
    import transformers as T

    tok = processor.tokenizer
    text = T.LlamaConfig(
        vocab_size=len(tok), hidden_size=size.hidden, intermediate_size=size.intermediate,
        num_hidden_layers=size.layers, num_attention_heads=size.heads, num_key_value_heads=size.heads,
        max_position_embeddings=128, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, tie_word_embeddings=False,
    )
    vision = T.CLIPVisionConfig(
        hidden_size=size.vision_hidden, intermediate_size=size.vision_intermediate,
        num_hidden_layers=size.vision_layers, num_attention_heads=size.vision_heads,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=size.vision_hidden,
    )
    config = T.LlavaConfig(
        vision_config=vision, text_config=text, image_seq_length=IMAGE_TOKENS,
        image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN), vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = T.LlavaForConditionalGeneration(config)
    gen = model.generation_config
    gen.pad_token_id, gen.eos_token_id, gen.bos_token_id = tok.pad_token_id, tok.eos_token_id, tok.bos_token_id
    gen.do_sample = False
    return model


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
