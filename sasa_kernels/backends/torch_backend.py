"""The ``torch`` backend: the plain PyTorch reference, on any device and any float dtype."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import reference
from .base import Backend


class TorchBackend(Backend):
    name = "torch"
    dtypes = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})

    def unavailable_reason(self, device_type: str) -> Optional[str]:
        if device_type == "cuda" and not torch.cuda.is_available():
            return "no CUDA device is available"
        return None

    def project(self, hs, hf, out, a, b, eps):
        out.copy_(reference.project_ab(hs, hf, a, b, eps))

    def project_rmsnorm(self, hs, hf, norm_weight, out, out_normed, a, b, eps, norm_eps, weight_offset):
        self.project(hs, hf, out, a, b, eps)
        out_normed.copy_(reference.rmsnorm(out, norm_weight, eps=norm_eps, weight_offset=weight_offset))

    def probe(self, hidden, positions, weight, bias, norm_weight, out, norm_eps, weight_offset, sigmoid):
        if positions is None:
            hidden, positions = hidden[:, 0], None
        out.copy_(
            reference.probe(
                hidden, weight, bias, positions=positions, norm_weight=norm_weight, norm_eps=norm_eps,
                weight_offset=weight_offset, activation="sigmoid" if sigmoid else "none",
            )
        )
