"""Type aliases shared across the package (standard library only: safe for light modules)."""

from __future__ import annotations

from pathlib import Path
from typing import Union

#: A filesystem path as users pass it.
PathLike = Union[str, Path]
