"""The stand-in (``sasa demo --stand-in``): a seeded random 6-block Llama, its word-level tokenizer and
its demo run (:mod:`~sasa.demo.stand_in`), calibrated on the bundled prompts in ``data/``. It shows
the pipeline end to end in seconds; its "safety" means nothing. Tests build it as a fixture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sasa._faces import lazy_exports

_EXPORTS = {
    "build_default": "stand_in",
    "save_default": "stand_in",
    "build_model": "stand_in",
    "build_tokenizer": "stand_in",
    "run_demo": "stand_in",
    "DEMO_MANIFEST": "stand_in",
    "DEMO_CONFIG": "stand_in",
    "EXAMPLES": "stand_in",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from sasa.demo.stand_in import (
        DEMO_CONFIG,
        DEMO_MANIFEST,
        EXAMPLES,
        build_default,
        build_model,
        build_tokenizer,
        run_demo,
        save_default,
    )
