"""File helpers of the dataset readers (:mod:`sasa.readers`): finding a copy's folder, reading its
JSON, required text fields, images by stem, question-id order; and their one error class."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .data import ManifestError


class DatasetError(ManifestError):
    """A benchmark copy is missing a file, or a file is not in its published layout."""


def first_dir(path: Path, here: tuple[str, ...], below: tuple[str, ...], format: str, expected: str) -> Path:
    """The folder at or under ``path`` that holds one of the ``here`` entries."""
    for rel in here:
        if (path / rel).exists():
            return path
    for rel in below:
        if (path / rel).exists():
            return path / Path(rel).parts[0]
    raise DatasetError(f"{path}: not a {format} copy (expected {expected}, here or under data/)")


def load_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetError(f"{path}: not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from err


def text_field(item: dict, field: str, where: str) -> str:
    value = item.get(field)
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: expected a non-empty string field {field!r}")
    return value.strip()


def existing_image(folder: Path, stem: str, suffixes: tuple[str, ...], where: str) -> Path:
    for suffix in suffixes:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate.resolve()
    raise DatasetError(f"{where}: image {folder / (stem + suffixes[0])} not found")


def id_key(qid: str) -> tuple[int, Any]:
    return (0, int(qid)) if str(qid).isdigit() else (1, str(qid))
