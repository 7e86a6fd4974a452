"""Tiny seeded models of every supported family, and padded input batches for them.

Kept small (hidden 32, 4 heads, 4-6 blocks, vocab 128) so the whole directory runs in minutes on
2 CPU cores. Token ids: 0 pad, 1 eos, 2 bos; prompts use ids 3..99; image tokens 120..127.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import transformers as T

from sasa.hf import compat

PAD, EOS, BOS = 0, 1, 2
VOCAB = 128
TEXT = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    pad_token_id=PAD,
    eos_token_id=EOS,
    bos_token_id=BOS,
)
TEXT_IDS = 100  # prompt token ids lie in [3, 100); image-related ids are 120..127
LENGTHS = (10, 7, 5)  # real tokens per row of the test batch


@dataclass
class Tiny:
    """A tiny model plus a batch in both padding layouts (``left`` is what generate expects)."""

    family: str
    model: Any
    left: dict[str, torch.Tensor]
    right: dict[str, torch.Tensor]
    safety_layer: int = 1
    fused_layer: int = 2
    extra: dict[str, Any] = field(default_factory=dict)

    def to(self, dtype: torch.dtype) -> "Tiny":
        """A deep copy in another dtype (inputs' float tensors converted too)."""
        model = copy.deepcopy(self.model).to(dtype)
        if dtype == torch.float64 and self.family in ROUTERS:
            # The default grouped-matmul experts take float32/bfloat16/float16 only; the float64
            # truth runs the same experts one at a time (the model's own eager implementation).
            model.set_experts_implementation("eager")

        def conv(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in batch.items()}

        return Tiny(self.family, model, conv(self.left), conv(self.right), self.safety_layer, self.fused_layer,
                    dict(self.extra))


def _finish(model: Any) -> Any:
    model.eval()
    gen = model.generation_config
    gen.pad_token_id, gen.eos_token_id, gen.bos_token_id = PAD, EOS, BOS
    gen.do_sample = False
    return model


def text_batch(seed: int = 1, lengths: tuple[int, ...] = LENGTHS, side: str = "left") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        tokens = torch.randint(3, TEXT_IDS, (n,), generator=g)
        sl = slice(width - n, width) if side == "left" else slice(0, n)
        ids[row, sl] = tokens
        mask[row, sl] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _text(family: str, config: Any, cls: Any) -> Tiny:
    torch.manual_seed(0)
    model = _finish(cls(config))
    return Tiny(family, model, text_batch(side="left"), text_batch(side="right"))


def llama() -> Tiny:
    return _text("llama", T.LlamaConfig(**TEXT), T.LlamaForCausalLM)


def mistral() -> Tiny:
    # A window shorter than the prompt, so the sliding-window masks matter.
    return _text("mistral", T.MistralConfig(**TEXT, head_dim=8, sliding_window=5), T.MistralForCausalLM)


def qwen2() -> Tiny:
    cfg = T.Qwen2Config(**TEXT, use_sliding_window=True, sliding_window=5, max_window_layers=2)
    return _text("qwen2", cfg, T.Qwen2ForCausalLM)


def qwen3() -> Tiny:
    return _text("qwen3", T.Qwen3Config(**TEXT, head_dim=8), T.Qwen3ForCausalLM)


def gemma2() -> Tiny:
    cfg = T.Gemma2Config(**TEXT, head_dim=8, query_pre_attn_scalar=8, sliding_window=5)
    cfg._attn_implementation = "eager"  # attention soft-capping: sdpa does not support it
    return _text("gemma2", cfg, T.Gemma2ForCausalLM)


def phi3() -> Tiny:
    return _text("phi3", T.Phi3Config(**TEXT), T.Phi3ForCausalLM)


def _qwen3_moe_router(output: Any) -> torch.Tensor:
    return output[2]  # (router_logits, routing_weights, selected_experts [N, top_k])


def qwen3_moe() -> Tiny:
    # Every block sparse (8 experts, top 2): the augmented token must be routed by the model's own router.
    cfg = T.Qwen3MoeConfig(**TEXT, head_dim=8, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=16,
                           decoder_sparse_step=1, norm_topk_prob=True)
    return _sharp_routers(_text("qwen3_moe", cfg, T.Qwen3MoeForCausalLM))


def _sharp_routers(t: Tiny) -> Tiny:
    """Scale the (small, seeded) router weights up so that the projection changes some routing
    decisions: a test that reused the normal pass's routing for the augmented token must fail."""
    path = ROUTERS[t.family][0]
    with torch.no_grad():
        for block in compat.find_decoder(t.model).layers:
            block.get_submodule(path).weight.mul_(30.0)
    return t


def olmo2() -> Tiny:
    # Norms after attention and MLP (no input norm: the projection runs unfused), q/k norms.
    return _text("olmo2", T.Olmo2Config(**TEXT), T.Olmo2ForCausalLM)


def granite() -> Tiny:
    # Multipliers everywhere, logits divided by logits_scaling (the read-out must do the same).
    cfg = T.GraniteConfig(**TEXT, embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=0.3,
                          logits_scaling=4.0)
    return _text("granite", cfg, T.GraniteForCausalLM)


def smollm3() -> Tiny:
    # Every other block without rotary embeddings (NoPE).
    return _text("smollm3", T.SmolLM3Config(**TEXT, no_rope_layer_interval=2), T.SmolLM3ForCausalLM)


def cohere2() -> Tiny:
    # Sliding-window blocks (window shorter than the prompt) with a full-attention block every 4th,
    # LayerNorm, parallel attention and MLP, logits multiplied by logit_scale.
    cfg = T.Cohere2Config(**TEXT, sliding_window=5, logit_scale=0.5)
    return _text("cohere2", cfg, T.Cohere2ForCausalLM)


TEXT_FAMILIES: dict[str, Callable[[], Tiny]] = {
    "llama": llama,
    "mistral": mistral,
    "qwen2": qwen2,
    "qwen3": qwen3,
    "gemma2": gemma2,
    "phi3": phi3,
    "qwen3_moe": qwen3_moe,
    "olmo2": olmo2,
    "granite": granite,
    "smollm3": smollm3,
    "cohere2": cohere2,
}

BUILDERS: dict[str, Callable[[], Tiny]] = dict(TEXT_FAMILIES)

#: Mixture-of-experts families: (the router's path inside a decoder block, its output -> expert indices).
ROUTERS: dict[str, tuple[str, Callable[[Any], torch.Tensor]]] = {
    "qwen3_moe": ("mlp.gate", _qwen3_moe_router),
    "qwen3_vl_moe": ("mlp.gate", _qwen3_moe_router),
    "glm4v_moe": ("mlp.gate", _qwen3_moe_router),
}


# ---------------------------------------------------------------------------- vision-language

IMAGE, START, END = 120, 121, 122  # image token, and the "vision start/end" tokens where used
IMG_SIZE = 16



def _padded(rows: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of token-id ``rows`` of different lengths, padded on ``side``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        sl = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, sl] = torch.tensor(r)
        mask[i, sl] = 1
    return ids, mask

def image_batch(
    n_image_tokens: int, side: str, *, start: int | None = None, end: int | None = None, seed: int = 1
) -> dict[str, torch.Tensor]:
    """Rows of different lengths, each ``text, [start], IMAGE * n, [end], text``, padded."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for before, after in ((4, 3), (2, 2), (1, 1)):
        image = ([start] if start is not None else []) + [IMAGE] * n_image_tokens + ([end] if end is not None else [])
        text_a = torch.randint(3, TEXT_IDS, (before,), generator=g).tolist()
        text_b = torch.randint(3, TEXT_IDS, (after,), generator=g).tolist()
        rows.append(text_a + image + text_b)
    ids, mask = _padded(rows, side)
    return {"input_ids": ids, "attention_mask": mask}


def _pixels(*shape: int, seed: int = 2) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _vision_small(**kw: Any) -> dict[str, Any]:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, **kw)


def _vlm(family: str, model: Any, n_tokens: int, extra: Callable[[dict], dict], **layout: Any) -> Tiny:
    model = _finish(model)
    batches = {}
    for side in ("left", "right"):
        batch = image_batch(n_tokens, side, **layout)
        batch.update(extra(batch))
        batches[side] = batch
    return Tiny(family, model, batches["left"], batches["right"])


def llava() -> Tiny:
    torch.manual_seed(0)
    vision = T.CLIPVisionConfig(**_vision_small(image_size=IMG_SIZE, patch_size=8, projection_dim=32))
    cfg = T.LlavaConfig(
        vision_config=vision, text_config=T.LlamaConfig(**TEXT), image_token_index=IMAGE, image_seq_length=4
    )
    # (16 / 8)^2 = 4 patches; the "default" feature strategy drops CLS: 4 image tokens per image.
    return _vlm("llava", T.LlavaForConditionalGeneration(cfg), 4, lambda b: {"pixel_values": _pixels(3, 3, IMG_SIZE, IMG_SIZE)})


def llava_next() -> Tiny:
    torch.manual_seed(0)
    vision = T.CLIPVisionConfig(**_vision_small(image_size=IMG_SIZE, patch_size=8, projection_dim=32))
    cfg = T.LlavaNextConfig(
        vision_config=vision, text_config=T.LlamaConfig(**TEXT), image_token_index=IMAGE,
        image_grid_pinpoints=[[16, 16], [16, 32]],
    )
    return _anyres("llava_next", T.LlavaNextForConditionalGeneration(cfg))


def _anyres(family: str, model: Any) -> Tiny:
    # A 16x32 image: the any-res layout is the base view plus 2 tiles; the model's own feature
    # packing says how many image tokens that is.
    pixels = _pixels(3, 3, 3, IMG_SIZE, IMG_SIZE)
    sizes = torch.tensor([[16, 32]] * 3)
    with torch.no_grad():
        feats = model.model.get_image_features(pixels[:1], sizes[:1])
    feats = getattr(feats, "pooler_output", feats)
    n_tokens = int(feats[0].shape[0])
    return _vlm(family, model, n_tokens, lambda b: {"pixel_values": pixels, "image_sizes": sizes})


def llava_onevision() -> Tiny:
    # SigLIP tower, Qwen2 text, any-res tiles with a newline token per row.
    torch.manual_seed(0)
    vision = T.SiglipVisionConfig(**_vision_small(image_size=IMG_SIZE, patch_size=8))
    cfg = T.LlavaOnevisionConfig(
        vision_config=vision, text_config=T.Qwen2Config(**TEXT), image_token_index=IMAGE,
        image_grid_pinpoints=[[16, 16], [16, 32]], vision_feature_layer=-1,
    )
    return _anyres("llava_onevision", T.LlavaOnevisionForConditionalGeneration(cfg))


def qwen2_vl() -> Tiny:
    vision = dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, patch_size=4, spatial_merge_size=2,
                  temporal_patch_size=2)
    return _qwen_vl("qwen2_vl", T.Qwen2VLVisionConfig, vision, T.Qwen2VLTextConfig, T.Qwen2VLConfig,
                    T.Qwen2VLForConditionalGeneration)


def _qwen_vl(family: str, vision_cls: Any, vision: dict, text_cls: Any, config_cls: Any, model_cls: Any,
             mrope_interleaved: bool = False, mrope_section: tuple = (1, 1, 2), image_start_token_id: Any = None,
             image_end_token_id: Any = None, **text_kw: Any) -> Tiny:
    """The Qwen VL families (and GLM-4V) differ only in their classes and vision settings (3-D M-RoPE text)."""
    torch.manual_seed(0)
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": list(mrope_section)}
    if mrope_interleaved:
        rope["mrope_interleaved"] = True
    text = text_cls(**{**TEXT, **text_kw}, rope_parameters=rope)
    tokens = dict(vision_start_token_id=START, vision_end_token_id=END)
    if image_start_token_id is not None:
        tokens = dict(image_start_token_id=image_start_token_id, image_end_token_id=image_end_token_id)
    cfg = config_cls(vision_config=vision_cls(**vision), text_config=text, image_token_id=IMAGE, video_token_id=123,
                     **tokens)
    model = model_cls(cfg)
    return _vlm(family, model, 4, _qwen_pixels(model), start=START, end=END)


def _qwen_pixels(model: Any) -> Callable[[dict], dict]:
    # Newer releases take the processor's mm_token_type_ids (1 marks image tokens) for M-RoPE;
    # 5.17 has no such argument.
    takes_types = "mm_token_type_ids" in inspect.signature(model.forward).parameters

    def extra(batch: dict) -> dict:
        # One 16x16 image per row: a 4x4 grid of 4-pixel patches (x2 temporal), merged 2x2: 4 tokens.
        rows = batch["input_ids"].shape[0]
        out = {
            "pixel_values": _pixels(rows * 16, 3 * 2 * 4 * 4),
            "image_grid_thw": torch.tensor([[1, 4, 4]] * rows),
        }
        if takes_types:
            out["mm_token_type_ids"] = (batch["input_ids"] == IMAGE).long()
        return out

    return extra


def qwen3_vl() -> Tiny:
    # DeepStack: the vision tower's features from 2 of its blocks are added to the hidden states
    # after text blocks 0 and 1 (outside the blocks), so the safety layer must be 2 or later
    # (5 text blocks, SASA at 2 and 3); interleaved 3-D M-RoPE.
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16, deepstack_visual_indexes=[0, 1])
    t = _qwen_vl("qwen3_vl", T.Qwen3VLVisionConfig, vision, T.Qwen3VLTextConfig, T.Qwen3VLConfig,
                 T.Qwen3VLForConditionalGeneration, num_hidden_layers=5, head_dim=8, mrope_interleaved=True)
    t.safety_layer, t.fused_layer = 2, 3
    return t


def qwen3_vl_moe() -> Tiny:
    # Qwen3-VL (DeepStack after text blocks 0 and 1) with every text block sparse: 8 experts, top 2.
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16, deepstack_visual_indexes=[0, 1])
    t = _qwen_vl("qwen3_vl_moe", T.Qwen3VLMoeVisionConfig, vision, T.Qwen3VLMoeTextConfig, T.Qwen3VLMoeConfig,
                 T.Qwen3VLMoeForConditionalGeneration, num_hidden_layers=5, head_dim=8, mrope_interleaved=True,
                 num_experts=8, num_experts_per_tok=2, moe_intermediate_size=16, decoder_sparse_step=1)
    t.safety_layer, t.fused_layer = 2, 3
    return _sharp_routers(t)


def glm4v() -> Tiny:
    # GLM-4V: Qwen-VL-like vision tower and 3-D M-RoPE, GLM-4 text blocks (extra post-attention
    # and post-MLP norms), image start/end tokens of its own.
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2, image_size=IMG_SIZE)
    return _qwen_vl("glm4v", T.Glm4vVisionConfig, vision, T.Glm4vTextConfig, T.Glm4vConfig,
                    T.Glm4vForConditionalGeneration, mrope_section=[1, 1, 2], image_start_token_id=START,
                    image_end_token_id=END)


def glm4v_moe() -> Tiny:
    # GLM-4.5V: GLM-4V's layout with every text block sparse: 8 routed experts in 2 groups (sigmoid
    # scores, top 2 from the best group) plus a shared expert; rope over half of each head (the
    # M-RoPE sections split those 2 frequency pairs between height and width).
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2, image_size=IMG_SIZE)
    t = _qwen_vl("glm4v_moe", T.Glm4vMoeVisionConfig, vision, T.Glm4vMoeTextConfig, T.Glm4vMoeConfig,
                 T.Glm4vMoeForConditionalGeneration, mrope_section=(0, 1, 1), image_start_token_id=START,
                 image_end_token_id=END,
                 n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1, n_shared_experts=1,
                 moe_intermediate_size=16, first_k_dense_replace=0)
    return _sharp_routers(t)


def qwen2_5_vl() -> Tiny:
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=8, fullatt_block_indexes=[1])
    return _qwen_vl("qwen2_5_vl", T.Qwen2_5_VLVisionConfig, vision, T.Qwen2_5_VLTextConfig, T.Qwen2_5_VLConfig,
                    T.Qwen2_5_VLForConditionalGeneration)


def idefics3() -> Tiny:
    torch.manual_seed(0)
    vision = T.Idefics3VisionConfig(**_vision_small(image_size=IMG_SIZE, patch_size=8))
    cfg = T.Idefics3Config(vision_config=vision, text_config=T.LlamaConfig(**TEXT), image_token_id=IMAGE, scale_factor=2)
    # (16 / 8)^2 = 4 patches, pixel-shuffled by scale_factor 2: 1 image token per image.
    return _vlm(
        "idefics3", T.Idefics3ForConditionalGeneration(cfg), 1,
        lambda b: {"pixel_values": _pixels(3, 1, 3, IMG_SIZE, IMG_SIZE)},
    )


def gemma3() -> Tiny:
    torch.manual_seed(0)
    vision = T.SiglipVisionConfig(**_vision_small(image_size=IMG_SIZE, patch_size=4))
    text = T.Gemma3TextConfig(**TEXT, head_dim=8, query_pre_attn_scalar=8, sliding_window=5)
    cfg = T.Gemma3Config(
        vision_config=vision, text_config=text, mm_tokens_per_image=4, image_token_index=IMAGE,
        boi_token_index=START, eoi_token_index=END,
    )

    def extra(batch: dict) -> dict:
        return {
            "pixel_values": _pixels(3, 3, IMG_SIZE, IMG_SIZE),
            "token_type_ids": (batch["input_ids"] == IMAGE).long(),
        }

    model = T.Gemma3ForConditionalGeneration(cfg)
    # Gemma 3 initialises its image projection to zeros, which would make every image look the
    # same to the language model; give it seeded random weights so images matter.
    proj = model.model.multi_modal_projector.mm_input_projection_weight
    with torch.no_grad():
        proj.copy_(torch.randn(proj.shape, generator=torch.Generator().manual_seed(5)) * 0.2)
    # (16 / 4)^2 = 16 patches pooled to mm_tokens_per_image = 4 image tokens.
    return _vlm("gemma3", model, 4, extra, start=START, end=END)


def image_last_batch(t: Tiny, side: str) -> dict[str, torch.Tensor]:
    """``t``'s image batch cut to end inside the image block (after its last image token, before
    the end-of-image token): rows of different lengths whose last prompt token is an image token
    (which the block's other image tokens attend to in Gemma 3)."""
    full = t.left if side == "left" else t.right
    rows = []
    for ids, mask in zip(full["input_ids"], full["attention_mask"]):
        real = ids[mask.bool()].tolist()
        rows.append(real[: len(real) - real[::-1].index(IMAGE)])
    ids, mask = _padded(rows, side)
    types = ("token_type_ids", "mm_token_type_ids")  # 1 marks image tokens
    batch = {k: v for k, v in full.items() if k not in ("input_ids", "attention_mask", *types)}
    batch.update(input_ids=ids, attention_mask=mask)
    batch.update({k: (ids == IMAGE).long() for k in types if k in full})
    return batch


def aya_vision() -> Tiny:
    # SigLIP tower, pixel-shuffle adapter (16 patches, downsampled 2x2: 4 image tokens), Cohere 2
    # text with sliding-window blocks.
    torch.manual_seed(0)
    vision = T.SiglipVisionConfig(**_vision_small(image_size=IMG_SIZE, patch_size=4))
    cfg = T.AyaVisionConfig(
        vision_config=vision, text_config=T.Cohere2Config(**TEXT, sliding_window=5), image_token_index=IMAGE,
        downsample_factor=2,
    )
    return _vlm("aya_vision", T.AyaVisionForConditionalGeneration(cfg), 4,
                lambda b: {"pixel_values": _pixels(3, 3, IMG_SIZE, IMG_SIZE)})


def mistral3() -> Tiny:
    # Pixtral tower (2-D rope over patches, 16 patches merged 2x2: 4 image tokens), Mistral text
    # with a sliding window shorter than the prompt.
    torch.manual_seed(0)
    vision = T.PixtralVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   head_dim=8, image_size=IMG_SIZE, patch_size=4)
    cfg = T.Mistral3Config(
        vision_config=vision, text_config=T.MistralConfig(**TEXT, head_dim=8, sliding_window=5),
        image_token_index=IMAGE, spatial_merge_size=2,
    )
    sizes = torch.tensor([[IMG_SIZE, IMG_SIZE]] * 3)
    return _vlm("mistral3", T.Mistral3ForConditionalGeneration(cfg), 4,
                lambda b: {"pixel_values": _pixels(3, 3, IMG_SIZE, IMG_SIZE), "image_sizes": sizes})


def internvl() -> Tiny:
    # InternViT tower (16 patches, pixel-shuffled by downsample_ratio 0.5: 4 image tokens), Qwen2 text.
    torch.manual_seed(0)
    vision = T.InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    image_size=[IMG_SIZE, IMG_SIZE], patch_size=[4, 4])
    cfg = T.InternVLConfig(vision_config=vision, text_config=T.Qwen2Config(**TEXT), image_token_id=IMAGE,
                           image_seq_length=4, downsample_ratio=0.5)
    return _vlm("internvl", T.InternVLForConditionalGeneration(cfg), 4,
                lambda b: {"pixel_values": _pixels(3, 3, IMG_SIZE, IMG_SIZE)})


def smolvlm() -> Tiny:
    # Idefics3's layout with SmolVLM's classes: 4 patches pixel-shuffled by 2: 1 image token per image.
    torch.manual_seed(0)
    vision = T.SmolVLMVisionConfig(**_vision_small(image_size=IMG_SIZE, patch_size=8))
    cfg = T.SmolVLMConfig(vision_config=vision, text_config=T.LlamaConfig(**TEXT), image_token_id=IMAGE, scale_factor=2)
    return _vlm("smolvlm", T.SmolVLMForConditionalGeneration(cfg), 1,
                lambda b: {"pixel_values": _pixels(3, 1, 3, IMG_SIZE, IMG_SIZE)})


def paligemma() -> Tiny:
    # Prefix-LM: the whole prompt (token_type_ids 0: image and text) is attended bidirectionally.
    # SigLIP tower (4 patches: 4 image tokens), Gemma text.
    torch.manual_seed(0)
    vision = T.SiglipVisionConfig(**_vision_small(image_size=IMG_SIZE, patch_size=8))
    cfg = T.PaliGemmaConfig(vision_config=vision, text_config=T.GemmaConfig(**TEXT, head_dim=8),
                            image_token_index=IMAGE, projection_dim=32)

    def extra(batch: dict) -> dict:
        return {"pixel_values": _pixels(3, 3, IMG_SIZE, IMG_SIZE), "token_type_ids": torch.zeros_like(batch["input_ids"])}

    return _vlm("paligemma", T.PaliGemmaForConditionalGeneration(cfg), 4, extra)


def _llama4_router(output: Any) -> torch.Tensor:
    scores = output[0]  # (router_scores [N, E]: sigmoid of the top-k logits, 0 elsewhere; router_logits)
    k = int((scores[0] > 0).sum())
    return scores.topk(k, dim=-1).indices


def llama4(temperature_tuning: bool = False) -> Tiny:
    # Every text block sparse (8 experts, top 1, plus a shared expert); chunked attention (chunks of 4
    # tokens) in every other block, the others full attention without rope; pixel-shuffled vision
    # tower (16 patches: 4 image tokens). ``temperature_tuning``: the no-rope blocks scale queries by
    # the token's position (floor_scale 4, so it changes within the prompt), which scope='last'
    # can reproduce only where the rows' last tokens share a position (left padding): tested apart.
    torch.manual_seed(0)
    text = T.Llama4TextConfig(**TEXT, head_dim=8, intermediate_size_mlp=64, num_local_experts=8, num_experts_per_tok=1,
                              interleave_moe_layer_step=1, no_rope_layer_interval=2, attention_chunk_size=4,
                              attn_temperature_tuning=temperature_tuning, floor_scale=4, attn_scale=0.5)
    vision = T.Llama4VisionConfig(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                  image_size=IMG_SIZE, patch_size=4, vision_output_dim=32, projector_input_dim=32,
                                  projector_output_dim=32, pixel_shuffle_ratio=0.5)
    cfg = T.Llama4Config(vision_config=vision, text_config=text, image_token_index=IMAGE, boi_token_index=START,
                         eoi_token_index=END)
    t = _vlm("llama4", T.Llama4ForConditionalGeneration(cfg), 4,
             lambda b: {"pixel_values": _pixels(3, 3, IMG_SIZE, IMG_SIZE)}, start=START, end=END)
    return _sharp_routers(t)


def phi4_multimodal() -> Tiny:
    # Phi-4-multimodal: Phi-3 text; the image enters through the embedding (a 16x16 image = a global
    # crop and one 16x16 sub-crop of 4x4 patches, pooled 2x2, with separator rows: 13 image tokens).
    # The speech tower is built too (tiny) and unused.
    torch.manual_seed(0)
    vision = T.Phi4MultimodalVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                          image_size=IMG_SIZE, patch_size=4, crop_size=IMG_SIZE, image_token_id=IMAGE,
                                          feature_layer=-1)
    audio = T.Phi4MultimodalAudioConfig(hidden_size=32, intermediate_size=64, num_blocks=1, num_attention_heads=4,
                                        ext_pw_out_channel=32, depthwise_separable_out_channel=32, nemo_conv_channels=32,
                                        input_size=16, audio_token_id=123, chunk_size=-1, left_chunk=18, kernel_size=3)
    cfg = T.Phi4MultimodalConfig(**TEXT, vision_config=vision, audio_config=audio)

    def extra(batch: dict) -> dict:
        rows = batch["input_ids"].shape[0]
        return {
            "image_pixel_values": _pixels(rows, 2, 3, IMG_SIZE, IMG_SIZE),
            "image_sizes": torch.tensor([[IMG_SIZE, IMG_SIZE]] * rows),
            "image_attention_mask": torch.ones(rows, 2, 4, 4, dtype=torch.long),
        }

    return _vlm("phi4_multimodal", T.Phi4MultimodalForCausalLM(cfg), 13, extra)


def mllama() -> Tiny:
    # Llama 3.2 Vision: the image enters only through a cross-attention block (block 3 of 5: the
    # re-run blocks 2..4 include it); one image token per row, and the rows attend to the image from
    # it on (cross_attention_mask). Tiled vision tower (one 16x16 tile of 4 patches).
    torch.manual_seed(0)
    vision = T.MllamaVisionConfig(hidden_size=32, num_hidden_layers=2, num_global_layers=1, attention_heads=4,
                                  intermediate_size=64, vision_output_dim=64, image_size=IMG_SIZE, patch_size=8,
                                  max_num_tiles=1, intermediate_layers_indices=[0], supported_aspect_ratios=[[1, 1]])
    text = T.MllamaTextConfig(**{**TEXT, "num_hidden_layers": 5, "cross_attention_layers": [3]})
    cfg = T.MllamaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE)

    def extra(batch: dict) -> dict:
        rows = batch["input_ids"].shape[0]
        sees_image = ((batch["input_ids"] == IMAGE).long().cumsum(1) > 0).long() * batch["attention_mask"]
        return {
            "pixel_values": _pixels(rows, 1, 1, 3, IMG_SIZE, IMG_SIZE),
            "aspect_ratio_ids": torch.ones(rows, 1, dtype=torch.long),
            "aspect_ratio_mask": torch.ones(rows, 1, 1, dtype=torch.long),
            "cross_attention_mask": sees_image[:, :, None, None],
        }

    model = T.MllamaForConditionalGeneration(cfg)
    # The cross-attention block's gates start at 0 (tanh(0): the image adds nothing); open them.
    block = compat.find_decoder(model).layers[3]
    with torch.no_grad():
        block.cross_attn_attn_gate.fill_(1.0)
        block.cross_attn_mlp_gate.fill_(1.0)
    return _vlm("mllama", model, 1, extra)


VLM_FAMILIES: dict[str, Callable[[], Tiny]] = {
    "llava": llava,
    "llava_next": llava_next,
    "qwen2_vl": qwen2_vl,
    "qwen2_5_vl": qwen2_5_vl,
    "qwen3_vl": qwen3_vl,
    "qwen3_vl_moe": qwen3_vl_moe,
    "glm4v": glm4v,
    "glm4v_moe": glm4v_moe,
    "paligemma": paligemma,
    "llama4": llama4,
    "phi4_multimodal": phi4_multimodal,
    "mllama": mllama,
    "idefics3": idefics3,
    "gemma3": gemma3,
    "llava_onevision": llava_onevision,
    "aya_vision": aya_vision,
    "mistral3": mistral3,
    "internvl": internvl,
    "smolvlm": smolvlm,
}
BUILDERS.update(VLM_FAMILIES)
ROUTERS["llama4"] = ("feed_forward.router", _llama4_router)
