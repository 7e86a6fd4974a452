"""Evaluation (``sasa eval``): what the guard changes in the model's answers.

``sasa.evaluate(...)`` and ``sasa.evaluate.evaluate(...)`` are the same call (the package is
callable). :mod:`~sasa.evaluate.run` is the entry (outputs described there);
:mod:`~sasa.evaluate.generations` answers every row guarded and unguarded;
:mod:`~sasa.evaluate.metrics` computes detection, attack success and over-refusal per group from the
rows alone; :mod:`~sasa.evaluate.plots` draws ``eval.png``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sasa._faces import lazy_exports, make_callable

_EXPORTS = {
    "evaluate": "run",
    "EvalResult": "run",
    "format_summary": "run",
    "print_summary": "run",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
make_callable(__name__, "evaluate")  # sasa.evaluate(...) calls evaluate(...)

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from sasa.evaluate.run import EvalResult, evaluate, format_summary, print_summary
