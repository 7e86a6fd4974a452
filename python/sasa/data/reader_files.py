"""File helpers of the dataset readers (:mod:`sasa.data.readers`): finding a copy's folder, reading its
JSON, required text fields, images by stem, question-id order; and their one error class."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sasa.data.manifest import ManifestError


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
    """The JSON value in ``path``; :class:`DatasetError` naming the file for a missing file, a folder,
    an unreadable file, non-UTF-8 bytes, bad JSON, or an object with a repeated key (``json`` keeps
    the last one: a benchmark's repeated question id would silently lose a row)."""
    return _parse_json(path, read_text(path, "a JSON file"))


def read_text(path: Path, expected: str) -> str:
    """``path`` decoded as UTF-8 (a byte-order mark is allowed, as spreadsheet programs write one);
    :class:`DatasetError` naming the file otherwise (``expected`` says what it should be)."""
    if path.is_dir():
        raise DatasetError(f"{path}: a folder, expected {expected}")
    if not path.is_file():
        raise DatasetError(f"{path}: not found (expected {expected})")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"{path}: cannot be read ({err.strerror or err})") from err
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        start = err.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        raise DatasetError(f"{path}: not UTF-8 text (byte {start}: {err.reason}); expected {expected} "
                           "saved as UTF-8") from err


def _parse_json(path: Path, text: str) -> Any:
    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise DatasetError(f"{path}: duplicate key {key!r} in one JSON object (each id must appear once)")
            seen[key] = value
        return seen

    try:
        return json.loads(text, object_pairs_hook=unique_keys)
    except (json.JSONDecodeError, RecursionError) as err:  # RecursionError: nested too deep for the parser
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
