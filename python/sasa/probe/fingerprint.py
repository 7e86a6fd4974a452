"""The model fingerprint a probe carries: which checkpoint its features came from.

A probe reads features of one model's hidden states; applied to another model it scores noise, and
a guard that scores noise lets requests through. So a saved probe records a fingerprint of the model
it was calibrated on, and loading it onto a model checks it.

What the fingerprint covers (version 2):

- the architecture: ``model_type``, hidden size, decoder-block count, vocabulary size;
- the weights: a fixed sample of :data:`SAMPLES_PER_TENSOR` elements of the input embeddings, the
  output head, the final norm and every parameter of every decoder block (in registration order),
  with each tensor's shape.

Weights are compared with a relative tolerance (:data:`RTOL`) rather than hashed, so the same
checkpoint loaded in float32, bfloat16 or float16 matches (a bfloat16 rounding is at most 2^-9
relative), while another checkpoint of the same architecture (different training or seed) differs
in almost every sampled element. A fine-tune that moves every sampled weight by less than about 1%
is not told apart; the fingerprint identifies a checkpoint, it does not certify its training.

Version 1 fingerprints (older probes: a SHA-256 of the head weights as float32) are still checked
exactly; they match only a model loaded in the dtype the head was saved in or wider.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from sasa.hf import compat

VERSION = 2
SAMPLES_PER_TENSOR = 8
#: Relative tolerance for a sampled weight; ``ATOL`` covers float16's subnormal spacing.
RTOL = 1e-2
ATOL = 1e-7
_ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")
_V1_KEYS = _ARCH_KEYS + ("head_sha256",)


class FingerprintError(ValueError):
    """A fingerprint is malformed, incomplete, or does not match the model."""


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """The version-2 fingerprint of ``model`` (a plain JSON-able dict).

    Raises:
        ValueError: the model's weights are on the meta device (not loaded), or it has no decoder
            blocks, so there is nothing to fingerprint.
    """
    text = compat.text_config(model)
    tensors = []
    for name, weight in _fingerprinted_tensors(model):
        if weight.device.type == "meta":
            raise ValueError(
                f"model: parameter {name} is on the meta device (weights not loaded); load the model's weights "
                "before fingerprinting or calibrating"
            )
        tensors.append({"name": name, "shape": list(weight.shape), "samples": _samples(weight)})
    return {
        "version": VERSION,
        "model_type": str(getattr(model.config, "model_type", "")),
        "hidden_size": int(getattr(text, "hidden_size", -1)),
        "num_hidden_layers": int(getattr(text, "num_hidden_layers", -1)),
        "vocab_size": int(getattr(text, "vocab_size", -1)),
        "tensors": tensors,
    }


def validate_fingerprint(fingerprint: Any) -> dict[str, Any]:
    """``fingerprint`` if it is a complete fingerprint of a known version; else :class:`FingerprintError`."""
    if not isinstance(fingerprint, dict):
        raise FingerprintError(
            f"fingerprint: expected a JSON object (as made by sasa.model_fingerprint), got {type(fingerprint).__name__}"
        )
    version = fingerprint.get("version", 1)
    keys = _V1_KEYS if version == 1 else (("version",) + _ARCH_KEYS + ("tensors",) if version == VERSION else None)
    if keys is None:
        raise FingerprintError(f"fingerprint: unknown version {version!r} (this sasa reads versions 1 and {VERSION})")
    missing = [k for k in keys if k not in fingerprint]
    if missing:
        raise FingerprintError(f"fingerprint: incomplete, missing {missing}")
    for key in _ARCH_KEYS:
        value = fingerprint[key]
        if key == "model_type":
            if not isinstance(value, str) or not value:
                raise FingerprintError(f"fingerprint: 'model_type' must be a non-empty string, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FingerprintError(f"fingerprint: {key!r} must be a positive integer, got {value!r}")
    if version == 1:
        if not isinstance(fingerprint["head_sha256"], str) or len(fingerprint["head_sha256"]) != 64:
            raise FingerprintError("fingerprint: 'head_sha256' must be a 64-character hex digest")
        return fingerprint
    tensors = fingerprint["tensors"]
    if not isinstance(tensors, list) or not tensors:
        raise FingerprintError("fingerprint: 'tensors' must be a non-empty list")
    for i, entry in enumerate(tensors):
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("shape"), list)
            and all(isinstance(n, int) and not isinstance(n, bool) for n in entry["shape"])
            and isinstance(entry.get("samples"), list)
            and entry["samples"]
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in entry["samples"])
        )
        if not ok:
            raise FingerprintError(f"fingerprint: tensors[{i}] must be {{name, shape, samples (finite numbers)}}")
    return fingerprint


def check_fingerprint(expected: Any, model: nn.Module) -> None:
    """Raise :class:`FingerprintError` naming the first difference between ``expected`` and ``model``."""
    expected = validate_fingerprint(expected)
    if expected.get("version", 1) == 1:
        actual = _v1_fingerprint(model)
        for key in _V1_KEYS:
            _same(key, expected[key], actual[key])
        return
    actual = model_fingerprint(model)
    for key in _ARCH_KEYS:
        _same(key, expected[key], actual[key])
    if len(expected["tensors"]) != len(actual["tensors"]):
        raise FingerprintError(
            f"probe: fitted for a different model: {len(expected['tensors'])} fingerprinted tensors in the probe, "
            f"{len(actual['tensors'])} in this model"
        )
    for want, got in zip(expected["tensors"], actual["tensors"]):
        if want["shape"] != got["shape"]:
            raise FingerprintError(
                f"probe: fitted for a different model: tensor {want['name']} has shape {want['shape']} in the probe "
                f"but {got['name']} has {got['shape']} in this model"
            )
        for a, b in zip(want["samples"], got["samples"]):
            if not abs(a - b) <= RTOL * abs(a) + ATOL:
                raise FingerprintError(
                    f"probe: fitted for a different model: the weights of {got['name']} differ (sampled value "
                    f"{b:.6g} here, {a:.6g} in the probe's fingerprint; a dtype change alone stays within {RTOL:.0%})"
                )


def _same(key: str, want: Any, got: Any) -> None:
    if want != got:
        raise FingerprintError(f"probe: fitted for a different model: {key} is {want!r} in the probe but {got!r} in this model")


def _fingerprinted_tensors(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    seen: set[int] = set()  # tied weights (embeddings = head) are sampled once

    def emit(name: str, weight: Any) -> Iterator[tuple[str, Tensor]]:
        if isinstance(weight, Tensor) and weight.is_floating_point() and weight.numel() and id(weight) not in seen:
            seen.add(id(weight))
            yield name, weight.detach()

    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    yield from emit("input_embeddings.weight", getattr(embeddings, "weight", None))
    head = compat.find_output_head(model)
    yield from emit("output_head.weight", getattr(head, "weight", None))
    decoder = compat.find_decoder(model)
    if decoder is None or not len(decoder.layers):
        raise ValueError(f"model: no decoder blocks found in this {type(model).__name__}; nothing to fingerprint")
    yield from emit("norm.weight", getattr(getattr(decoder, "norm", None), "weight", None))
    for i, block in enumerate(decoder.layers):
        for name, param in block.named_parameters():
            yield from emit(f"layers.{i}.{name}", param)


def _samples(weight: Tensor) -> list[float]:
    # Fixed, spread-out flat positions that depend only on the tensor's size (no RNG state). A
    # tensor-parallel (DTensor) weight is read shard by shard, nothing gathered.
    from sasa.distributed.tensor_parallel import flat_samples

    n = weight.numel()
    return flat_samples(weight, [(k * 2654435761 + 40503) % n for k in range(SAMPLES_PER_TENSOR)])


def _v1_fingerprint(model: nn.Module) -> dict[str, Any]:
    text = compat.text_config(model)
    head = compat.find_output_head(model)
    digest = hashlib.sha256()
    weight = head.weight.detach()
    with torch.no_grad():
        for start in range(0, weight.shape[0], 4096):  # bounded host memory
            digest.update(weight[start:start + 4096].to("cpu", torch.float32).contiguous().numpy().tobytes())
    return {
        "model_type": str(getattr(model.config, "model_type", "")),
        "hidden_size": int(getattr(text, "hidden_size", -1)),
        "num_hidden_layers": int(getattr(text, "num_hidden_layers", -1)),
        "vocab_size": int(getattr(text, "vocab_size", -1)),
        "head_sha256": digest.hexdigest(),
    }
