"""The Hugging Face side: what sasa knows about transformers and its models.

- :mod:`~sasa.hf.compat`: every difference between transformers releases (5.17 .. newest 5.x) that
  sasa meets; nothing else imports transformers internals or branches on its version;
- :mod:`~sasa.hf.families`: the supported model families and the few facts the guard needs of each;
- :mod:`~sasa.hf.loading`: which transformers classes load a ``save_pretrained`` directory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sasa._faces import lazy_exports

_EXPORTS = {
    "SUPPORTED_MODEL_TYPES": "families",
    "FAMILIES": "families",
    "Family": "families",
    "family_of": "families",
    "is_vision_language": "loading",
    "load_processor": "loading",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from sasa.hf.families import FAMILIES, SUPPORTED_MODEL_TYPES, Family, family_of
    from sasa.hf.loading import is_vision_language, load_processor
