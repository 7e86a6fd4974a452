"""The ``sasa`` command line (``sasa --help``; ``python -m sasa.cli`` is the same command).

- :mod:`~sasa.cli.app`: the parser, built from every command module, and ``main``;
- :mod:`~sasa.cli.commands`: one module per command (``calibrate``, ``score``, ``generate``, ``demo``,
  ``bench``, ``locate``, ``eval``, ``organism``, ``serve``), each with ``register_command``;
- what the commands share: :mod:`~sasa.cli.errors` (``CLIError``: one line, exit status 2),
  :mod:`~sasa.cli.flags` (the common flags), :mod:`~sasa.cli.loading` (``--model``, ``--device``,
  ``--probe``), :mod:`~sasa.cli.paths` (no output may overwrite an input).

Commands import the shared modules, never :mod:`~sasa.cli.app`; everything here imports only the
standard library at module level, so ``sasa --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sasa._faces import lazy_exports

_EXPORTS = {
    "main": "app",
    "build_parser": "app",
    "COMMAND_MODULES": "app",
    "CLIError": "errors",
    "add_common_flags": "flags",
    "load_model": "loading",
    "check_device": "loading",
    "check_model_dir": "loading",
    "load_probe": "loading",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from sasa.cli.app import COMMAND_MODULES, build_parser, main
    from sasa.cli.errors import CLIError
    from sasa.cli.flags import add_common_flags
    from sasa.cli.loading import check_device, check_model_dir, load_model, load_probe
