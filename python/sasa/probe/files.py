"""Saving and loading :class:`sasa.SASAProbe` directories: no pickle, checksummed, atomic.

A probe directory holds ``probe.safetensors`` (``weight`` ``[C, F]``, ``bias`` ``[C]``,
``threshold`` ``[C]``) and ``sasa_config.json`` (the :class:`sasa.SASAConfig`, feature kind,
category names, held-out metrics, the prompt format, the model fingerprint, and a SHA-256 over both
files, so an edited, truncated or mixed-up pair is refused).

Saving writes the new pair into a temporary directory beside the target, links the target's other
files (plots) into it, then swaps the two directories in one step (``renameat2`` with
``RENAME_EXCHANGE`` on Linux; elsewhere two renames, where a crash between them leaves the old
probe intact under a ``.<name>.old-*`` name). A failure while writing never touches the old probe.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch

from sasa.config import SASAConfig
from sasa.data.prompt_format import PromptFormat
from sasa.metrics import ProbeMetrics
from sasa.probe.fingerprint import FingerprintError, check_fingerprint, validate_fingerprint

WEIGHTS_FILE = "probe.safetensors"
CONFIG_FILE = "sasa_config.json"
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)  # 1: before prompt formats and version-2 fingerprints
#: Size limits checked before a probe file is read whole: far above any real probe (a [C, F]
#: float32 weight with F the vocabulary, 262k, and C = 16 categories is 17 MB; its safetensors
#: header a few hundred bytes; its config a few kB), far below what would exhaust memory.
MAX_WEIGHTS_BYTES = 1 << 30
MAX_HEADER_BYTES = 1 << 20
MAX_CONFIG_BYTES = 16 << 20
_TENSORS = ("weight", "bias", "threshold")


def check_save_target(directory: Path) -> None:
    """Raise ``ValueError`` unless a probe may be saved at ``directory`` (new, empty, or a probe)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"probe directory: {directory} exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not (directory / CONFIG_FILE).is_file():
        raise ValueError(
            f"probe directory: {directory} is not empty and holds no sasa probe; save into a new or empty "
            "directory (or an existing probe directory, which is replaced)"
        )


def save(probe: Any, directory: Path) -> Path:
    from safetensors.torch import save_file

    directory = Path(directory)
    check_save_target(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        tensors = {
            "weight": probe.weight.detach().float().contiguous().cpu(),
            "bias": probe.bias.detach().float().contiguous().cpu(),
            "threshold": probe.threshold.detach().float().contiguous().cpu(),
        }
        save_file(tensors, str(staging / WEIGHTS_FILE))
        meta = metadata(probe)
        meta["sha256"] = _checksum((staging / WEIGHTS_FILE).read_bytes(), meta)
        (staging / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n")
        if directory.is_dir():
            _link_other_files(directory, staging)
        _swap_into_place(staging, directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return directory


def metadata(probe: Any) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "sasa_config": None if probe.config is None else probe.config.to_dict(),
        "feature": probe.feature,
        "categories": list(probe.categories),
        "threshold": [float(t) for t in probe.threshold],
        "feature_size": probe.feature_size,
        "metrics": {k: _json_metrics(m) for k, m in probe.metrics.items()},
        "fingerprint": probe.fingerprint,
        "prompt_format": None if probe.prompt_format is None else probe.prompt_format.to_dict(),
    }


def load(cls: Any, directory: Path, model: Optional[torch.nn.Module], *, require_fingerprint: bool) -> Any:
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    weights_path, config_path = directory / WEIGHTS_FILE, directory / CONFIG_FILE
    for path in (weights_path, config_path):
        if not path.is_file():
            raise FileNotFoundError(f"probe: {path} not found (expected {WEIGHTS_FILE} and {CONFIG_FILE})")
    _check_sizes(weights_path, config_path)
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:  # RecursionError: nested too deep
        raise ValueError(f"probe: {config_path} is not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format_version") not in _READABLE_VERSIONS:
        raise ValueError(f"probe: {config_path} is not a sasa probe config (formats {list(_READABLE_VERSIONS)})")
    raw = weights_path.read_bytes()
    stored = meta.pop("sha256", None)
    if stored != _checksum(raw, meta):
        raise ValueError(
            f"probe: checksum mismatch in {directory}: {WEIGHTS_FILE} or {CONFIG_FILE} was edited, "
            "truncated or copied from different probes"
        )
    try:
        tensors = load_bytes(raw)
    except (SafetensorError, ValueError) as err:
        raise ValueError(f"probe: {weights_path} is corrupted ({err})") from err
    missing = set(_TENSORS) - set(tensors)
    if missing:
        raise ValueError(f"probe: {weights_path} lacks tensor(s) {sorted(missing)}")
    _check_tensors_finite(weights_path, tensors)
    where = f"probe: {config_path}"
    metrics = meta.get("metrics")
    if not isinstance(metrics, dict) or not all(isinstance(v, dict) for v in metrics.values()):
        raise ValueError(f"{where}: 'metrics' must be an object of name -> metrics objects")
    fingerprint = meta.get("fingerprint")
    if fingerprint is not None:
        try:
            validate_fingerprint(fingerprint)
        except FingerprintError as err:
            raise FingerprintError(f"{where}: {err}") from err
    try:
        config = None if meta["sasa_config"] is None else SASAConfig.from_dict(meta["sasa_config"])
        prompt_format = meta.get("prompt_format")
        probe = cls(
            weight=tensors["weight"],
            bias=tensors["bias"],
            threshold=tensors["threshold"],
            categories=list(meta["categories"]),
            feature=meta["feature"],
            config=config,
            metrics={k: ProbeMetrics(**{f: _nan_from_json(x) for f, x in v.items()}) for k, v in metrics.items()},
            fingerprint=fingerprint,
            prompt_format=None if prompt_format is None else PromptFormat.from_dict(prompt_format),
        )
    except (KeyError, TypeError) as err:
        raise ValueError(f"{where} is missing or has a malformed field ({err})") from err
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err
    if model is not None:
        if probe.fingerprint is None:
            if require_fingerprint:
                raise FingerprintError(
                    f"probe: {directory} has no model fingerprint, so it cannot be checked against this model; "
                    "recalibrate it with sasa.calibrate, or load it with require_fingerprint=False if you built it "
                    "by hand and know it fits"
                )
        else:
            check_fingerprint(probe.fingerprint, model)
    return probe


def _check_sizes(weights_path: Path, config_path: Path) -> None:
    """Refuse files no probe could have, before either is read whole: a weights file or config over
    its limit, and a safetensors header (its length is the first 8 bytes, little-endian) that
    claims more than :data:`MAX_HEADER_BYTES` or more than the file holds."""
    for path, limit in ((weights_path, MAX_WEIGHTS_BYTES), (config_path, MAX_CONFIG_BYTES)):
        size = path.stat().st_size
        if size > limit:
            raise ValueError(f"probe: {path} is {size} bytes, over the {limit} a probe file may have")
    size = weights_path.stat().st_size
    with weights_path.open("rb") as handle:
        prefix = handle.read(8)
    if len(prefix) < 8:
        raise ValueError(f"probe: {weights_path} is {size} bytes, too short for a safetensors file")
    header = int.from_bytes(prefix, "little")
    if header > MAX_HEADER_BYTES or 8 + header > size:
        raise ValueError(f"probe: {weights_path}: its safetensors header claims {header} bytes (the file has {size}; "
                         f"a probe's header is at most {MAX_HEADER_BYTES}); the file is corrupted or not a probe")


def _check_tensors_finite(weights_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """A NaN or infinite weight, bias or threshold makes a probe that cannot fire (or always
    fires): refused here naming the file, before the probe is built."""
    for name in _TENSORS:
        values = tensors[name]
        if values.is_floating_point():
            bad = int((~torch.isfinite(values)).sum())
            if bad:
                raise ValueError(f"probe: {weights_path}: tensor {name!r} holds {bad} NaN or infinite value(s); "
                                 "a probe must be finite")


def _json_metrics(metrics: ProbeMetrics) -> dict[str, Any]:
    # Strict JSON has no NaN: an undefined metric (one class missing) is written as null.
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.to_dict().items()}


def _nan_from_json(value: Any) -> Any:
    return math.nan if value is None else value


def _checksum(weights: bytes, meta: dict[str, Any]) -> str:
    digest = hashlib.sha256(weights)
    digest.update(json.dumps(meta, sort_keys=True).encode())
    return digest.hexdigest()


def _link_other_files(old: Path, staging: Path) -> None:
    """Carry the old directory's other files (plots, notes) over, as hard links where possible."""
    for entry in old.iterdir():
        if entry.name in (WEIGHTS_FILE, CONFIG_FILE):
            continue
        target = staging / entry.name
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, copy_function=_link_or_copy, symlinks=True)
        else:
            _link_or_copy(str(entry), str(target))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def _swap_into_place(staging: Path, directory: Path) -> None:
    if not directory.exists():
        os.rename(staging, directory)
        return
    if _exchange(staging, directory):
        shutil.rmtree(staging, ignore_errors=True)  # staging now holds the old probe
        return
    old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
    os.rmdir(old)
    os.rename(directory, old)
    os.rename(staging, directory)
    shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where that is not available."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0
