"""What :func:`sasa.apply_sasa` works out before a guard exists: every check, in one place.

The model (supported family, decoder blocks, final norm, attention for ``scope="last"``), the
config (explicit, or the probe's own; an explicit one that disagrees with the probe's is refused),
the probe (loaded, fingerprint-checked, validated against the feature size) and its prompt format
(checked against the tokenizer given). All of it is raised before the model is touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from sasa.config import SASAConfig
from sasa.data.prompt_format import PromptFormat
from sasa.distributed.placement import input_device
from sasa.distributed.tensor_parallel import check_replicated_residual, reading_sharded_weights
from sasa.hf import compat
from sasa.hf.families import Family, family_of
from sasa.probe.fingerprint import check_fingerprint
from sasa.probe.tensors import ProbeTensors, probe_tensors

#: The config fields a probe's features depend on: applying a probe under other values scores noise.
PROBE_BOUND_FIELDS = ("safety_layer", "fused_layer", "mode", "coef", "eps", "scope", "feature")


@dataclass
class Resolved:
    config: SASAConfig
    family: Family
    decoder: nn.Module
    probe: Optional[ProbeTensors]
    prompt_format: Optional[PromptFormat]


def resolve(
    model: nn.Module, config: Optional[SASAConfig], probe: Any, tokenizer: Any, *, allow_config_override: bool
) -> Resolved:
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise TypeError(f"model: expected a transformers PreTrainedModel, got {type(model).__name__}")
    # The fingerprint samples weights, which tensor parallelism shards (DTensors).
    with reading_sharded_weights():
        if isinstance(probe, (str, os.PathLike)):
            from sasa.probe.sasa_probe import SASAProbe

            # A directory written by SASAProbe.save: loading checks it was fitted for this model.
            probe = SASAProbe.load(probe, model=model)
        elif getattr(probe, "fingerprint", None) is not None:
            check_fingerprint(probe.fingerprint, model)
    config = _choose_config(config, probe, allow_config_override)
    family = family_of(getattr(model.config, "model_type", None))
    decoder = compat.find_decoder(model)
    if decoder is None or len(decoder.layers) == 0:
        raise ValueError(f"model: no decoder blocks found in this {type(model).__name__} (expected a non-empty .layers)")
    if not isinstance(getattr(decoder, "norm", None), nn.Module):
        raise ValueError(f"model: the decoder {type(decoder).__name__} has no final norm (.norm)")
    num_layers = len(decoder.layers)
    for name in ("safety_layer", "fused_layer"):
        value = getattr(config, name)
        if value >= num_layers:
            raise ValueError(
                f"{name}: {value} is out of range for this model, which has {num_layers} decoder blocks "
                f"(0-based indices 0..{num_layers - 1})"
            )
    check_replicated_residual(decoder, config.safety_layer)
    if config.scope == "last" and family.no_scope_last:
        raise ValueError(
            f"config.scope: 'last' cannot be exact for model_type {family.model_type!r}: {family.no_scope_last} "
            "(re-running the last token alone would compute something else); use scope='all'"
        )
    if config.scope == "last" and compat.attn_implementation(model) not in ("eager", "sdpa"):
        raise ValueError(
            f"config.scope: 'last' supports the eager and sdpa attention implementations, this model uses "
            f"{compat.attn_implementation(model)!r}; use scope='all'"
        )
    tensors = None
    if probe is not None:
        tensors = probe_tensors(probe, feature_size(model, decoder, config.feature), config.feature, model_device(model))
    prompt_format = getattr(probe, "prompt_format", None)
    if prompt_format is not None:
        if not isinstance(prompt_format, PromptFormat):
            raise TypeError(f"probe.prompt_format: expected a sasa.PromptFormat, got {type(prompt_format).__name__}")
        prompt_format.check_processor(tokenizer)
    return Resolved(config, family, decoder, tensors, prompt_format)


def _choose_config(config: Optional[SASAConfig], probe: Any, allow_override: bool) -> SASAConfig:
    own = getattr(probe, "config", None)
    if config is None:
        if own is None:
            raise TypeError("config: expected a SASAConfig (or a probe object carrying one), got None")
        config = own
    if not isinstance(config, SASAConfig):
        raise TypeError(f"config: expected a SASAConfig, got {type(config).__name__}")
    feature = getattr(probe, "feature", None)
    if isinstance(feature, str) and feature != config.feature and not allow_override:
        raise ValueError(
            f"config.feature: {config.feature!r}, but the probe reads {feature!r} features; pass a matching config "
            "(or config=None to use the probe's own)"
        )
    if isinstance(own, SASAConfig) and own is not config and not allow_override:
        diffs = [name for name in PROBE_BOUND_FIELDS if _bound_value(config, name) != _bound_value(own, name)]
        if diffs:
            both = ", ".join(f"{n}={getattr(config, n)!r} (the probe's: {getattr(own, n)!r})" for n in diffs)
            raise ValueError(
                f"config: differs from the config the probe was calibrated with: {both}. The probe's scores mean "
                "nothing on other features. Pass config=None to use the probe's own, or allow_config_override=True "
                "if you know the probe transfers."
            )
    return config


def _bound_value(config: SASAConfig, name: str) -> Any:
    # ``coef`` plays no role in mode "replace".
    if name == "coef" and config.mode == "replace":
        return None
    return getattr(config, name)


def feature_size(model: nn.Module, decoder: nn.Module, feature: str) -> int:
    """``F``: the output-head width for ``feature="logits"``, the hidden size for ``"hidden"``."""
    if feature == "logits":
        head = compat.find_output_head(model)
        if head is None or not isinstance(getattr(head, "weight", None), Tensor):
            raise ValueError("model: feature='logits' needs an output head (lm_head); use feature='hidden'")
        return int(head.weight.shape[0])
    return hidden_size(decoder)


def hidden_size(decoder: nn.Module) -> int:
    weight = getattr(decoder.norm, "weight", None)
    if isinstance(weight, Tensor) and weight.dim() == 1:
        return int(weight.shape[0])
    return int(getattr(compat.text_config(decoder), "hidden_size", -1))


def model_device(model: nn.Module) -> torch.device:
    """Where a guard call's inputs go: the device of the input embeddings (with a device_map they
    may be elsewhere than the first parameters, or offloaded: see :mod:`sasa.distributed.placement`)."""
    return input_device(model)
