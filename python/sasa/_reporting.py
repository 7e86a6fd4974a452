"""Small helpers shared by the ``locate`` and ``eval`` reports (standard library only)."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence


def json_safe(obj: Any) -> Any:
    """A JSON-ready copy: NaN and infinities become ``null``, tuples lists, paths strings."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def fmt(value: Optional[float], digits: int = 3) -> str:
    """``value`` with ``digits`` decimals, ``-`` for ``None`` or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


#: Writes one report file at the path it is given.
Writer = Callable[[Path], Any]


def publish_report(directory: Path, writers: Sequence[tuple[str, Writer]], complete: str) -> list[Path]:
    """Write a report's files into ``directory`` so that an interrupted write never looks finished.

    Every file is first written whole into a hidden staging folder in ``directory`` (so that the
    final renames stay on one file system and are atomic); then the old ``complete`` file (the one
    whose presence says the report is finished, e.g. ``eval.json``) is removed, the other files are
    renamed into place, and ``complete`` is renamed last. Stopped anywhere (Ctrl-C included), the
    directory holds the previous finished report, or a report without its ``complete`` file, or the
    new finished one; the staging folder is removed on the way out.

    Args:
        directory: the output directory (created).
        writers: ``(file name, function writing that file at the path it is given)``, in order.
        complete: the name, among ``writers``, written last.

    Returns:
        the final paths, in the order of ``writers``.
    """
    names = [name for name, _ in writers]
    if complete not in names:
        raise ValueError(f"complete: {complete!r} is not one of the report's files {names}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=directory))
    try:
        for name, write in writers:
            write(staging / name)
        (directory / complete).unlink(missing_ok=True)  # from here on the directory does not look finished
        for name in [n for n in names if n != complete] + [complete]:
            os.replace(staging / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [directory / name for name in names]
