"""Which transformers classes load a ``save_pretrained`` directory: the model's kind and its processor.

Shared by :mod:`sasa.guard.auto`, :func:`sasa.distributed.load_pretrained` and the command line's
``--model`` loading; transformers is imported when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union


def is_vision_language(path: Union[str, Path]) -> bool:
    """Whether the ``save_pretrained`` directory holds an image-text-to-text model."""
    import transformers as tf

    config = tf.AutoConfig.from_pretrained(path)
    return type(config) in tf.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING


def load_processor(path: Union[str, Path], vision: bool) -> Any:
    """The directory's processor (``vision``) or tokenizer."""
    import transformers as tf

    return tf.AutoProcessor.from_pretrained(path) if vision else tf.AutoTokenizer.from_pretrained(path)
