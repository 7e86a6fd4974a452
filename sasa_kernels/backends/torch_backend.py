"""The ``torch`` backend: the plain PyTorch reference, on any device and any float dtype."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import reference
from .base import Backend


def _into(result: Tensor, out: Optional[Tensor]) -> Tensor:
    if out is None:
        return result.contiguous()
    return out.copy_(result)


class TorchBackend(Backend):
    name = "torch"
    dtypes = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})

    def unavailable_reason(self, device_type: str) -> Optional[str]:
        if device_type == "cuda" and not torch.cuda.is_available():
            return "no CUDA device is available"
        return None

    def project(self, hs, hf, a, b, eps, out=None):
        return _into(reference.project_weighted(hs, hf, a, b, eps), out)

    def project_rmsnorm(self, hs, hf, norm_weight, a, b, eps, norm_eps, weight_offset, out=None, out_normed=None):
        h = self.project(hs, hf, a, b, eps, out=out)
        return h, _into(reference.rmsnorm(h, norm_weight, eps=norm_eps, weight_offset=weight_offset), out_normed)

    def probe(self, hidden, positions, weight, bias, norm_weight, norm_eps, weight_offset, sigmoid, out=None):
        scores = reference.probe(
            hidden, weight, bias, positions=positions, norm_weight=norm_weight, norm_eps=norm_eps,
            weight_offset=weight_offset, activation="sigmoid" if sigmoid else "none",
        )
        return _into(scores, out)
