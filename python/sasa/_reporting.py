"""Small helpers shared by the ``locate`` and ``eval`` reports (standard library only)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional


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
