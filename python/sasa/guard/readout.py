"""The read-out: from the augmented state at the last prompt token to features and probe scores.

``z = final_norm(h)``; features are ``z`` (``feature="hidden"``) or the output head's logits of
``z`` (``"logits"``, soft-capped where the model soft-caps). A logits probe over a plain linear head
is folded into hidden space once (``w_h = W_lm^T w``, exact: docs/method.md section 5), so scoring
never runs the vocabulary-size matmul; then the final norm, the probe matmul, bias and sigmoid run
in one ``sasa_kernels.probe`` call whenever the kernel reproduces the model's final norm.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

import sasa_kernels as sk
from sasa.distributed.placement import real_device, weights_on_device
from sasa.distributed.tensor_parallel import reading_sharded_weights, replicated
from sasa.guard.fused_norm import can_fuse_rmsnorm
from sasa.hf import compat
from sasa.hf.families import Family
from sasa.probe.tensors import ProbeTensors, fold_into_hidden


class Readout:
    """Features and scores for one model, config and probe; built once by the guard."""

    def __init__(self, model: nn.Module, decoder: nn.Module, family: Family, feature: str, probe: Optional[ProbeTensors]):
        self.feature = feature
        self.family = family
        self.norm: nn.Module = decoder.norm
        self.model = model
        self.head: Optional[nn.Module] = compat.find_output_head(model)
        self.softcap = compat.final_logit_softcap(model)
        # Fold the logits probe into hidden space only when the head (times the model's logit
        # scale, if any) is a plain linear map.
        self.folded = (
            probe is not None and feature == "logits" and isinstance(self.head, nn.Linear) and self.softcap is None
        )
        self._probe = _fold(probe, self.head, compat.final_logit_scale(model)) if self.folded else probe
        self._on_device: dict[torch.device, ProbeTensors] = {}

    @property
    def probe(self) -> Optional[ProbeTensors]:
        return self._probe

    def features(self, h: Tensor) -> Tensor:
        """float32 ``[B, F]`` from the pre-norm state ``h`` ``[B, d]``."""
        z = self.norm(h)
        return (z if self.feature == "hidden" else self._logits(z)).float()

    def scores(self, h: Tensor) -> Tensor:
        """Probe probabilities, float32 ``[B, C]``, from the pre-norm state ``h`` ``[B, d]``."""
        hidden_space = self.feature == "hidden" or self.folded
        norm_device = real_device(getattr(self.norm, "weight", None))
        if norm_device is not None and norm_device != h.device:
            h = h.to(norm_device)  # device_map: the final norm may sit on another device than the last block
        probe = self._probe_on(h.device)
        if hidden_space and can_fuse_rmsnorm(self.norm, self.family.llama_norm_numerics, h.dtype, h.shape[-1]):
            # Final norm, matmul, bias and sigmoid in one launch.
            return sk.probe(
                h.contiguous(), probe.weight, probe.bias, norm_weight=self.norm.weight.detach(),
                norm_eps=compat.rmsnorm_eps(self.norm), weight_offset=self.family.norm_offset,
            )
        z = self.norm(h)
        rows = z if hidden_space else self._logits(z)
        probe = self._probe_on(rows.device)  # an offloaded norm or head computes where its hook says
        return sk.probe(rows.contiguous(), probe.weight, probe.bias)

    def _logits(self, z: Tensor) -> Tensor:
        if self.head is None:
            raise ValueError("model: feature='logits' needs an output head (lm_head); use feature='hidden'")
        return compat.final_logits(self.model, self.head(z))

    def _probe_on(self, device: torch.device) -> ProbeTensors:
        # The model may have moved since the guard was built; keep one copy of the probe per device.
        probe = self._probe
        if probe is None:
            raise ValueError("probe: this guard has no probe; pass probe=... to apply_sasa")
        if probe.weight.device == device:
            return probe
        if device not in self._on_device:
            self._on_device[device] = probe.to(device)
        return self._on_device[device]


def _fold(probe: ProbeTensors, head: nn.Linear, scale: Optional[float]) -> ProbeTensors:
    """:func:`fold_into_hidden` for a head anywhere: offloaded (its weights are brought in for the
    product) or sharded over the vocabulary by tensor parallelism (the ``[C, d]`` product is
    completed with one all-reduce, here, once; see :mod:`sasa.distributed.tensor_parallel`). A logit scale
    ``c`` (logits ``c (W z + b)``) is folded into the probe's weight: ``w . c l = (c w) . l``."""
    if scale is not None:
        probe = ProbeTensors(probe.weight * scale, probe.bias, probe.threshold, probe.categories)
    with weights_on_device(head), reading_sharded_weights():
        device = real_device(head.weight)
        folded = fold_into_hidden(probe.to(device) if device is not None else probe, head)
    weight, bias = replicated(folded.weight), replicated(folded.bias)
    return ProbeTensors(weight.contiguous(), bias.contiguous(), folded.threshold, folded.categories)
