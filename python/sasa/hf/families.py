"""The model families ``sasa`` supports, and the few facts about each that the engine needs.

Everything else (masks, rotary positions, image merging, attention) comes from the model's own
modules at run time, so a family entry only says how its RMSNorm computes (to decide whether the
``sasa_kernels`` fused norm reproduces it) and nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """Per-family facts.

    Attributes:
        model_type: ``config.model_type`` of the top-level model.
        norm_offset: the RMSNorm multiplies by ``norm_offset + weight`` (Gemma: 1.0).
        llama_norm_numerics: True when the RMSNorm normalizes in float32, casts back and then
            multiplies by the weight in the model dtype, which is what the ``sasa_kernels`` fused
            norm does. Gemma multiplies in float32 before casting; there the kernels' fused norm
            is used only for float32 models (where both orders give the same numbers).
        no_scope_last: why ``scope="last"`` cannot be exact for this family ("" where it can):
            ``apply_sasa`` refuses it with this reason, naming ``scope="all"``. (Per prompt, the
            augmented pass also refuses any mask under which other positions attend to the last
            prompt token: :func:`sasa.guard.one_token.check_last_token_only`.)
    """

    model_type: str
    norm_offset: float = 0.0
    llama_norm_numerics: bool = True
    no_scope_last: str = ""


_FAMILIES = (
    Family("llama"),
    Family("mistral"),
    Family("qwen2"),
    Family("qwen3"),
    Family("gemma2", norm_offset=1.0, llama_norm_numerics=False),
    Family("phi3"),
    Family("llava"),
    Family("llava_next"),
    Family("qwen2_vl"),
    Family("qwen2_5_vl"),
    Family("idefics3"),
    Family("gemma3", norm_offset=1.0, llama_norm_numerics=False),
    Family("qwen3_moe"),
    Family("olmo2"),
    Family("granite"),
    Family("smollm3"),
    Family("cohere2"),
    Family("llava_onevision"),
    Family("aya_vision"),
    Family("mistral3"),
    Family("internvl"),
    Family("smolvlm"),
    Family("qwen3_vl"),
    Family("qwen3_vl_moe"),
    Family("glm4v"),
    Family("glm4v_moe"),
    Family("llama4"),
    Family("phi4_multimodal"),
    Family("mllama"),
    Family(
        "paligemma", norm_offset=1.0, llama_norm_numerics=False,
        no_scope_last="its prompt is a prefix (image and text) attended bidirectionally, so every prompt position "
        "attends to the last one",
    ),
)

FAMILIES: dict[str, Family] = {f.model_type: f for f in _FAMILIES}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(f.model_type for f in _FAMILIES)


def family_of(model_type: str) -> Family:
    """The :class:`Family` for ``model_type``; ``ValueError`` listing the supported ones otherwise."""
    family = FAMILIES.get(model_type)
    if family is None:
        raise ValueError(
            f"model_type {model_type!r} is not supported by sasa; supported model_types: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return family
