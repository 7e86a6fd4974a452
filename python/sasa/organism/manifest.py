"""Writing the organism's evaluation splits as JSONL manifests (:mod:`sasa.data`'s format).

Each row has ``prompt``, ``label`` (1 harmful), ``category`` (the object's class: food, toy,
craft, home / weapons, poisons, drugs), ``carrier`` (``"text"``: the object is named in the
request; ``"image"``: the request points at an image that shows it) and, for image rows, ``image``
(a PNG beside the manifest) and ``text_only`` (the same request with the object named instead).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

from sasa.organism import world
from sasa.organism.corpus import Row, split_rows

#: Rows per object and carrier in the default splits.
DEFAULT_PER_OBJECT = {"calibration": 12, "heldout": 8}


def write_manifest(split: str, out: Union[str, Path], *, per_object: Optional[int] = None,
                   seed: int = 0) -> Path:
    """Write ``split`` to the JSONL file ``out`` and its images to ``<out stem>_images/``."""
    if split not in DEFAULT_PER_OBJECT:
        raise ValueError(f"split: expected one of {sorted(DEFAULT_PER_OBJECT)}, got {split!r}")
    per_object = DEFAULT_PER_OBJECT[split] if per_object is None else per_object
    if per_object < 1:
        raise ValueError(f"per_object: expected >= 1, got {per_object}")
    from PIL import Image

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image_dir = out.parent / f"{out.stem}_images"
    image_dir.mkdir(exist_ok=True)
    lines = []
    for index, row in enumerate(split_rows(split, per_object, seed=seed)):
        record = {"prompt": row.prompt, "label": row.label, "category": row.obj.category, "carrier": row.carrier}
        if row.image is not None:
            name = f"{index:05d}.png"
            Image.fromarray(row.image).save(image_dir / name)
            record["image"] = f"{image_dir.name}/{name}"
            record["text_only"] = row.text_only
        lines.append(json.dumps(record))
    out.write_text("\n".join(lines) + "\n")
    return out


def object_of(prompt: str, text_only: Optional[str] = None) -> Optional[world.WorldObject]:
    """The world object a manifest row is about (named in ``text_only`` or else in ``prompt``)."""
    for word in (text_only or prompt).split():
        obj = world.BY_NAME.get(word)
        if obj is not None:
            return obj
    return None


def carrier_of(carrier: Optional[str], has_image: bool) -> str:
    """A row's carrier: as written, else ``"image"`` for a row with an image and ``"text"`` otherwise."""
    return carrier or ("image" if has_image else "text")


def group_names(label: int, carrier: str, obj: Optional[world.WorldObject]) -> list[str]:
    """The report groups a row counts in: its kind, kind x carrier, and kind x carrier split by
    training / held-out object (when the row's object is known)."""
    kind = "harmful" if label == 1 else "benign"
    names = [kind, f"{kind} {carrier}"]
    if obj is not None:
        names.append(f"{kind} {carrier} ({'held-out' if obj.heldout else 'training'} objects)")
    return names


def rows_for(split: str, per_object: Optional[int] = None, seed: int = 0) -> list[Row]:
    """The in-memory rows of a split (what :func:`write_manifest` writes)."""
    return split_rows(split, DEFAULT_PER_OBJECT[split] if per_object is None else per_object, seed=seed)
