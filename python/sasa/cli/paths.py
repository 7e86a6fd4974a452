"""Refuse a command's output paths that would overwrite its own inputs (standard library only).

:func:`check_output_paths` runs in :func:`sasa.cli.main` before every command, so each command
(the built-in ones and those of ``sasa.cli.COMMAND_MODULES``) gets the same check from the flags it
was parsed with: an output (``--out``, ``--doc``, ``--json``, ``--offload-folder``) may not be an
input file or directory (``--model``, ``--probe``, ``--data``, ``--image``, ``--refusal-phrases``), nor lie inside
an input directory; and an input may not lie inside an output directory where the command writes.
Paths are compared after resolving symlinks, so a link cannot smuggle an input in under another name.

A command says what it writes into its ``--out`` directory with ``set_defaults(out_writes=(names))``
(the top-level entries it creates there); a command that does not say is taken to write anything
there, so any input inside its ``--out`` directory is refused (fail closed). A command that reads
paths no flag names (``sasa demo`` reads the shipped organism) lists them with
``set_defaults(implicit_inputs=((label, path), ...))``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator, Optional, Sequence

from sasa.cli.errors import CLIError

#: Flags whose paths a command reads (a flag given several times, like ``--data``, is a list).
INPUT_FLAGS: tuple[str, ...] = ("model", "probe", "data", "image", "refusal_phrases")
#: Flags whose paths a command writes.
OUTPUT_FLAGS: tuple[str, ...] = ("out", "doc", "json", "offload_folder")
#: The ``argparse`` default that names what a command writes inside its ``--out`` directory.
WRITES_ATTR = "out_writes"
#: The ``argparse`` default that lists ``(label, path)`` inputs no flag names.
IMPLICIT_ATTR = "implicit_inputs"


def check_output_paths(args: argparse.Namespace) -> None:
    """Raise :class:`CLIError` (one line, naming both flags and paths) when an output would overwrite
    an input; see the module docstring for the rules."""
    inputs = list(_paths(args, INPUT_FLAGS))
    inputs += [(label, str(path)) for label, path in getattr(args, IMPLICIT_ATTR, None) or ()]
    writes: Optional[Sequence[str]] = getattr(args, WRITES_ATTR, None)
    for out_flag, out_given in _paths(args, OUTPUT_FLAGS):
        out = _resolve(out_flag, out_given)
        for in_flag, in_given in inputs:
            kind = collision(out, _resolve(in_flag, in_given), _entries_written(out_flag, writes))
            if kind is not None:
                where = _WHERE[kind].format(flag=in_flag, path=in_given)
                raise CLIError(f"{out_flag}: {out_given} {where}; writing there would overwrite what the command "
                               "reads (choose another output path)")


def _entries_written(flag: str, out_writes: Optional[Sequence[str]]) -> Optional[Sequence[str]]:
    """What ``flag``'s path gets inside it: the command's ``out_writes`` for ``--out``, nothing for a
    file (``--doc``, ``--json``), anything for ``--offload-folder`` (accelerate names its files after
    the weights)."""
    return {"--out": out_writes, "--doc": (), "--json": ()}.get(flag)


_WHERE = {
    "same": "is the {flag} input {path}",
    "inside": "is inside the {flag} directory {path}",
    "holds": "is the directory the command writes into, and holds the {flag} input {path}",
}


def collision(out: Path, source: Path, writes: Optional[Sequence[str]]) -> Optional[str]:
    """How writing to ``out`` would overwrite ``source`` (both resolved): ``"same"``, ``"inside"``
    (``out`` lies in the directory ``source``) or ``"holds"`` (``source`` lies in the directory
    ``out``, under an entry the command writes); ``None`` if it would not.

    ``writes`` are the top-level entries a directory output gets (``None``: anything; ``()``: none,
    ``out`` is a file).
    """
    if out == source:
        return "same"
    if source.is_dir() and source in out.parents:
        return "inside"
    if out.is_dir() and out in source.parents:
        entry = source.relative_to(out).parts[0]
        if writes is None or entry in writes:
            return "holds"
    return None


def _resolve(flag: str, given: str) -> Path:
    """``given`` with every symlink resolved; a symlink loop is the user's to fix (one line)."""
    try:
        return Path(given).resolve()
    except (OSError, RuntimeError) as err:  # RuntimeError: a loop, before Python 3.13
        raise CLIError(f"{flag}: {given} cannot be resolved ({err})") from None


def _paths(args: argparse.Namespace, names: Sequence[str]) -> Iterator[tuple[str, str]]:
    """``(flag, path)`` for every path given to one of ``names`` (a repeated flag yields each)."""
    for name in names:
        value = getattr(args, name, None)
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if isinstance(item, (str, Path)) and str(item):
                yield "--" + name.replace("_", "-"), str(item)
