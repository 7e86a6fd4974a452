"""Data: labelled manifests, the public benchmarks' layouts, and how a row becomes model input.

- :mod:`~sasa.data.manifest`: ``Example`` rows from JSONL manifests, images, batches, ``encode_batch``;
- :mod:`~sasa.data.readers`: ``read_dataset`` for MM-SafetyBench, FigStep and VLGuard copies
  (:mod:`~sasa.data.reader_files`: their file helpers; :mod:`~sasa.data.formats`: the format names);
- :mod:`~sasa.data.prompt_format`: ``PromptFormat``, how a prompt becomes model text (recorded on
  the probe, checked on every guarded input);
- :mod:`~sasa.data.inputs`: checks on tensor inputs before any compute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sasa._faces import lazy_exports

_EXPORTS = {
    "Example": "manifest",
    "ManifestError": "manifest",
    "read_manifest": "manifest",
    "encode_batch": "manifest",
    "batches": "manifest",
    "load_image": "manifest",
    "check_images_supported": "manifest",
    "check_image": "manifest",
    "takes_images": "manifest",
    "encode_prompts": "manifest",
    "CARRIERS": "manifest",
    "read_dataset": "readers",
    "read_sources": "readers",
    "DatasetError": "reader_files",
    "PromptFormat": "prompt_format",
    "FORMATS": "formats",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from sasa.data.formats import FORMATS
    from sasa.data.manifest import (
        CARRIERS,
        Example,
        ManifestError,
        batches,
        check_image,
        check_images_supported,
        encode_batch,
        encode_prompts,
        load_image,
        read_manifest,
        takes_images,
    )
    from sasa.data.prompt_format import PromptFormat
    from sasa.data.reader_files import DatasetError
    from sasa.data.readers import read_dataset, read_sources
