"""How a prompt becomes model text, recorded on the probe and checked on every guarded input.

A probe only means something on inputs formatted like its calibration prompts: the same prompt
scores near 0 raw and near 1 inside the chat template, so a guard fed the other format silently
passes harmful requests. :class:`PromptFormat` records the format at calibration (chat template or
raw, the template's SHA-256, and the token ids every templated prompt ends with: the template's
generation prompt, e.g. ``<|im_start|>assistant\\n``). Every sasa entry point that takes text
formats it with the probe's :class:`PromptFormat`, and the guard refuses pre-tokenized input whose
rows do not end with the recorded generation prompt.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

logger = logging.getLogger("sasa")

KINDS = ("chat_template", "raw")
# Two different user messages: the generation prompt is what both renderings end with.
_PROBE_MESSAGES = ("hello", "what is this")


@dataclass(frozen=True)
class PromptFormat:
    """How calibration prompts were formatted.

    Attributes:
        kind: ``"chat_template"`` (the processor's chat template, one user turn, with the generation
            prompt) or ``"raw"`` (the prompt text as is; an image placeholder is prepended for an
            image).
        template_sha256: SHA-256 of the chat template text (``None`` for raw).
        generation_suffix: token ids every templated prompt ends with; the guard checks each input
            row ends with them. Empty when the template has no generation prompt to check (then
            pre-tokenized input cannot be verified, and a warning says so at calibration).
    """

    kind: str
    template_sha256: Optional[str] = None
    generation_suffix: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"prompt_format.kind: expected one of {list(KINDS)}, got {self.kind!r}")
        if self.kind == "raw" and (self.template_sha256 is not None or self.generation_suffix):
            raise ValueError("prompt_format: a raw format has no template hash or generation suffix")
        if self.kind == "chat_template" and not (isinstance(self.template_sha256, str) and len(self.template_sha256) == 64):
            raise ValueError("prompt_format.template_sha256: expected a 64-character hex digest for a chat template")
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.generation_suffix):
            raise ValueError("prompt_format.generation_suffix: expected non-negative token ids")
        object.__setattr__(self, "generation_suffix", tuple(self.generation_suffix))

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def of(cls, processor: Any, *, raw: bool = False) -> "PromptFormat":
        """The format ``processor`` gives prompts: its chat template unless ``raw`` or it has none."""
        template = chat_template(processor)
        if raw or not template:
            return cls("raw")
        suffix = _generation_suffix(processor)
        if not suffix:
            logger.warning(
                "sasa: the chat template has no generation prompt sasa can recognise, so guarded inputs given "
                "as token ids cannot be checked for the template; encode them with guard.encode()"
            )
        return cls("chat_template", _sha256(template), suffix)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "template_sha256": self.template_sha256, "generation_suffix": list(self.generation_suffix)}

    @classmethod
    def from_dict(cls, data: Any) -> "PromptFormat":
        if not isinstance(data, dict) or set(data) - {"kind", "template_sha256", "generation_suffix"}:
            raise ValueError(f"prompt_format: expected {{kind, template_sha256, generation_suffix}}, got {data!r}")
        suffix = data.get("generation_suffix") or []
        if not isinstance(suffix, list):
            raise ValueError("prompt_format.generation_suffix: expected a list of token ids")
        return cls(data.get("kind"), data.get("template_sha256"), tuple(suffix))

    def describe(self) -> str:
        if self.kind == "raw":
            return "raw"
        return f"chat template {self.template_sha256[:12]}"

    # --- use ------------------------------------------------------------------------------------

    def check_processor(self, processor: Any) -> None:
        """Refuse a processor whose chat template is not the one the probe was calibrated with."""
        if self.kind != "chat_template" or processor is None:
            return
        template = chat_template(processor)
        if not template:
            raise ValueError(
                "tokenizer: the probe was calibrated on chat-template prompts but this tokenizer/processor has no "
                "chat template; pass the processor the probe was calibrated with"
            )
        if _sha256(template) != self.template_sha256:
            raise ValueError(
                f"tokenizer: its chat template (sha256 {_sha256(template)[:12]}) differs from the one the probe was "
                f"calibrated with ({self.template_sha256[:12]}); prompts would be formatted differently"
            )

    def format(self, processor: Any, prompt: str, *, with_image: bool) -> str:
        """The text fed to the processor for one user prompt."""
        if self.kind == "raw":
            if with_image:
                token = getattr(processor, "image_token", None)
                if not isinstance(token, str) or not token:
                    raise ValueError(
                        "prompt: a raw prompt with an image needs the processor's image placeholder token, and this "
                        f"{type(processor).__name__} names none; use its chat template"
                    )
                return prompt if token in prompt else f"{token}\n{prompt}"
            return prompt
        return _render(processor, prompt, with_image=with_image, generation_prompt=True)

    @property
    def adds_special_tokens(self) -> bool:
        """Whether the tokenizer should add its own special tokens (the template writes them itself)."""
        return self.kind == "raw"

    def check_input_ids(self, input_ids: Optional[Tensor], last_pos: Tensor) -> None:
        """Raise ``ValueError`` naming the rows that do not end with the template's generation prompt."""
        if self.kind != "chat_template" or not self.generation_suffix or input_ids is None:
            return
        n = len(self.generation_suffix)
        suffix = torch.tensor(self.generation_suffix, dtype=input_ids.dtype, device=input_ids.device)
        offsets = torch.arange(-n + 1, 1, device=input_ids.device)
        index = last_pos.to(input_ids.device)[:, None] + offsets[None, :]
        short = (index < 0).any(dim=1)
        tails = input_ids.gather(1, index.clamp(min=0))
        bad = short | ~(tails == suffix).all(dim=1)
        if bool(bad.any()):
            rows = bad.nonzero().flatten().tolist()
            raise ValueError(
                f"input_ids: row(s) {rows} do not end with the chat template's generation prompt (token ids "
                f"{list(self.generation_suffix)}), but the probe was calibrated on chat-template prompts, and it "
                "cannot judge other text; format prompts with guard.encode(...) or the processor's "
                "apply_chat_template(..., add_generation_prompt=True)"
            )


def chat_template(processor: Any) -> Optional[str]:
    """The chat template text of a processor or tokenizer (the processor's own first), or ``None``."""
    for source in (processor, getattr(processor, "tokenizer", None)):
        template = getattr(source, "chat_template", None) if source is not None else None
        if isinstance(template, dict):  # several named templates: the default one
            template = template.get("default")
        if isinstance(template, str) and template:
            return template
    return None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _render(processor: Any, prompt: str, *, with_image: bool, generation_prompt: bool) -> str:
    if with_image:
        content: Any = [{"type": "image"}, {"type": "text", "text": prompt}]
    elif hasattr(processor, "image_processor"):
        content = [{"type": "text", "text": prompt}]
    else:
        content = prompt
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)


def _generation_suffix(processor: Any) -> tuple[int, ...]:
    tokenizer = getattr(processor, "tokenizer", processor)
    suffixes: list[tuple[int, ...]] = []
    for message in _PROBE_MESSAGES:
        with_prompt = _render(processor, message, with_image=False, generation_prompt=True)
        without = _render(processor, message, with_image=False, generation_prompt=False)
        if with_prompt == without or not with_prompt.startswith(without):
            return ()
        try:
            encoded = tokenizer(with_prompt, add_special_tokens=False, return_offsets_mapping=True)
        except (NotImplementedError, TypeError, ValueError):  # slow tokenizers have no offsets
            return ()
        boundary = len(without)
        suffixes.append(
            tuple(int(i) for i, (start, _end) in zip(encoded["input_ids"], encoded["offset_mapping"]) if start >= boundary)
        )
    return suffixes[0] if suffixes and all(s == suffixes[0] for s in suffixes) else ()

