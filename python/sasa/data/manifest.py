"""Labelled prompt manifests (JSONL) and turning their rows into model inputs.

One JSON object per line::

    {"prompt": "How do I bake bread?", "label": 0}
    {"prompt": "Describe the image.", "label": 1, "image": "imgs/a.png", "category": "weapons"}

``prompt`` (str) and ``label`` (0 benign, 1 harmful) are required; ``image`` is a path relative to
the manifest; ``category`` names the harm category of a harmful row; ``text_only`` is the same
request with the image's content written as words (for ``sasa locate``'s fusion analysis);
``carrier`` says what carries the request's meaning, ``"text"`` or ``"image"``. Blank lines and lines starting
with ``#`` are skipped. Errors name the file and line number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

from sasa._types import PathLike
from sasa.data.prompt_format import PromptFormat

_FIELDS = {"prompt", "label", "image", "category", "text_only", "carrier"}
CARRIERS = ("text", "image")


class ManifestError(ValueError):
    """A manifest file is missing, unreadable or has a bad line."""


@dataclass(frozen=True)
class Example:
    """One manifest row. ``image`` is a path (or, built in code, a ``PIL.Image``); ``label`` is -1
    when unknown; ``line`` is the manifest line number (0 when not from a file)."""

    prompt: str
    label: int
    image: Optional[Any] = None
    category: Optional[str] = None
    line: int = 0
    text_only: Optional[str] = None
    carrier: Optional[str] = None


def read_manifest(path: PathLike, *, require_labels: bool = True) -> list[Example]:
    """Parse a JSONL manifest; raise :class:`ManifestError` naming the line of the first problem."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ManifestError(f"{path}:{line}: not valid UTF-8 (byte {err.start}: {err.reason}); save the manifest as UTF-8") from err
    examples = []
    for number, raw in enumerate(text.splitlines(), start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise ManifestError(f"{where}: not valid JSON ({err.msg})") from err
        except RecursionError as err:  # small, but nested deeper than json's parser goes
            raise ManifestError(f"{where}: not valid JSON (nested too deep)") from err
        if not isinstance(obj, dict):
            raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        unknown = sorted(set(obj) - _FIELDS)
        if unknown:
            raise ManifestError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(_FIELDS)}")
        prompt = obj.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ManifestError(f"{where}: 'prompt' must be a non-empty string")
        for name in ("prompt", "text_only", "category"):
            _check_encodable(where, name, obj.get(name))
        label = obj.get("label")
        if label is None and not require_labels:
            label = -1
        elif isinstance(label, bool) or label not in (0, 1):
            raise ManifestError(f"{where}: 'label' must be 0 (benign) or 1 (harmful), got {label!r}")
        image = obj.get("image")
        if image is not None:
            if not isinstance(image, str):
                raise ManifestError(f"{where}: 'image' must be a path string")
            image = (path.parent / image).resolve()
            if not image.is_file():
                raise ManifestError(f"{where}: image {image} not found")
        category = obj.get("category")
        if category is not None and not (isinstance(category, str) and category):
            raise ManifestError(f"{where}: 'category' must be a non-empty string")
        text_only = obj.get("text_only")
        if text_only is not None and not (isinstance(text_only, str) and text_only.strip()):
            raise ManifestError(f"{where}: 'text_only' must be a non-empty string")
        carrier = obj.get("carrier")
        if carrier is not None and carrier not in CARRIERS:
            raise ManifestError(f"{where}: 'carrier' must be one of {list(CARRIERS)}, got {carrier!r}")
        examples.append(Example(prompt, int(label), image, category, number, text_only, carrier))
    if not examples:
        raise ManifestError(f"{path}: no examples")
    return examples


def takes_images(processor: Any) -> bool:
    """Whether ``processor`` can turn images into model inputs (a vision-language processor)."""
    return hasattr(processor, "image_processor")


def check_images_supported(processor: Any, examples: Sequence[Example]) -> None:
    """A text-only model given an image row would silently drop the image: refuse, naming the line."""
    if takes_images(processor):
        return
    for example in examples:
        if example.image is not None:
            where = f"line {example.line}: " if example.line else ""
            raise ValueError(
                f"{where}row has an image ({example.image}) but the model is text-only (its "
                f"{type(processor).__name__} takes no images); remove the image or use a vision-language model"
            )


def check_image(path: PathLike) -> None:
    """Raise ``ValueError`` naming ``path`` unless it is an image PIL can open within
    ``PIL.Image.MAX_IMAGE_PIXELS`` (reads the header only: cheap, before any model loads)."""
    _open_image(Path(path)).close()


def load_image(path: PathLike) -> Any:
    """The image at ``path``, decoded as RGB; errors as :func:`check_image`'s, naming the file."""
    path = Path(path)
    image = _open_image(path)
    try:
        with image:
            return image.convert("RGB")
    except OSError as err:  # truncated or corrupt pixel data: PIL's message does not name the file
        raise ValueError(f"image {path}: cannot be decoded ({err})") from None


def _open_image(path: Path) -> Any:
    """``PIL.Image.open`` (lazy: the header only), refusing a decompression bomb before its pixels
    are decoded: PIL raises past twice ``MAX_IMAGE_PIXELS`` and only warns between one and two
    times it, where decoding still takes gigabytes; both are refused here (fail closed)."""
    from PIL import Image

    try:
        image = Image.open(path)
    except Image.DecompressionBombError as err:
        raise ValueError(f"image {path}: refused as a possible decompression bomb ({err})") from None
    except OSError as err:
        raise ValueError(f"image {path}: not an image PIL can read ({err})") from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        width, height = image.size
        image.close()
        raise ValueError(f"image {path}: {width}x{height} pixels is over the limit of {limit} "
                         "(PIL.Image.MAX_IMAGE_PIXELS); refused as a possible decompression bomb")
    return image


def encode_batch(
    processor: Any,
    examples: Sequence[Example],
    *,
    prompt_format: Optional[PromptFormat] = None,
    raw_prompt: bool = False,
    device: Any = None,
) -> dict[str, Any]:
    """Tokenize (and load images for) a batch, left-padded, as tensors on ``device``.

    Prompts are formatted with ``prompt_format`` (a probe's :attr:`~sasa.SASAProbe.prompt_format`),
    or, when it is ``None``, with the processor's chat template unless ``raw_prompt``. The caller's
    tokenizer is not modified (padding side is a per-call argument).
    """
    check_images_supported(processor, examples)
    fmt = prompt_format if prompt_format is not None else PromptFormat.of(processor, raw=raw_prompt)
    texts = [fmt.format(processor, e.prompt, with_image=e.image is not None) for e in examples]
    kwargs: dict[str, Any] = dict(return_tensors="pt", padding=True, padding_side="left")
    images = [e.image for e in examples if e.image is not None]
    if images:
        if len(images) != len(examples):
            raise ValueError("encode_batch: mix rows with and without images in separate batches")
        # One list per prompt (each prompt has one image): what every image processor takes, and
        # the only form some take (Mllama's processor counts images per prompt).
        kwargs["images"] = [[load_image(p) if isinstance(p, (str, Path)) else p.convert("RGB")] for p in images]
        batch = processor(text=texts, **kwargs)
    else:
        tokenizer = getattr(processor, "tokenizer", processor)
        batch = tokenizer(texts, add_special_tokens=fmt.adds_special_tokens, **kwargs)
    batch = dict(batch)
    if device is not None:
        batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
    return batch


def encode_prompts(
    processor: Any, prompts: Union[str, Sequence[str]], images: Any = None, *,
    prompt_format: Optional[PromptFormat] = None, device: Any = None,
) -> dict[str, Any]:
    """:func:`encode_batch` for a prompt or a list of prompts, with one image per prompt if given
    (what :meth:`sasa.SASAGuard.encode` takes); checks the arguments first."""
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not texts or not all(isinstance(t, str) and t for t in texts):
        raise TypeError("prompts: expected a non-empty string or a non-empty list of non-empty strings")
    if images is None:
        pictures: list[Any] = [None] * len(texts)
    else:
        pictures = [images] if not isinstance(images, (list, tuple)) else list(images)
        if len(pictures) != len(texts):
            raise ValueError(f"images: expected one image per prompt ({len(texts)}), got {len(pictures)}")
    examples = [Example(t, -1, image) for t, image in zip(texts, pictures)]
    return encode_batch(processor, examples, prompt_format=prompt_format, device=device)


def _check_encodable(where: str, name: str, value: Any) -> None:
    # A lone surrogate (valid in JSON, not in UTF-8) makes tokenizers fail far from its source.
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ManifestError(
                f"{where}: {name!r} contains a lone surrogate ({value[err.start:err.end]!r} at character "
                f"{err.start}), which is not text; fix the \\u escape in the manifest"
            ) from None


def batches(examples: Sequence[Example], batch_size: int) -> Iterator[list[Example]]:
    """Batches of at most ``batch_size``; rows with and without images never share a batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    for has_image in (False, True):
        group = [e for e in examples if (e.image is not None) == has_image]
        for start in range(0, len(group), batch_size):
            yield group[start:start + batch_size]
