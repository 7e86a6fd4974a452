"""The ``triton`` backend: fused Triton kernels on CUDA, or on CPU under the Triton interpreter.

Importing this module raises :class:`ImportError` when ``triton`` is not installed, which leaves
the backend unregistered.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Optional

import torch
from torch import Tensor

from ..triton_kernels import INTERPRETED, launch_probe, launch_project
from .base import Backend

_CPU_HINT = (
    "Triton kernels run on CPU only under the Triton interpreter; set TRITON_INTERPRET=1 before "
    "importing sasa_kernels (Triton reads it when the kernels are defined)"
)


def _on_device(t: Tensor) -> ContextManager[object]:
    # Triton launches on the current CUDA device, which need not be the tensors' device.
    if t.device.type == "cuda":
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


class TritonBackend(Backend):
    name = "triton"
    dtypes = frozenset({torch.float16, torch.bfloat16, torch.float32})

    def unavailable_reason(self, device_type: str) -> Optional[str]:
        if device_type == "cuda":
            return None if torch.cuda.is_available() else "no CUDA device is available"
        if device_type == "cpu":
            return None if INTERPRETED else _CPU_HINT
        return f"Triton kernels run on cuda (and on cpu under TRITON_INTERPRET=1), not on {device_type}"

    def project(self, hs: Tensor, hf: Tensor, out: Tensor, a: float, b: float, eps: float) -> None:
        with _on_device(hs):
            launch_project(hs, hf, out, a, b, eps)

    def project_rmsnorm(
        self, hs: Tensor, hf: Tensor, norm_weight: Tensor, out: Tensor, out_normed: Tensor,
        a: float, b: float, eps: float, norm_eps: float, weight_offset: float,
    ) -> None:
        with _on_device(hs):
            launch_project(
                hs, hf, out, a, b, eps, norm_weight=norm_weight, out_normed=out_normed,
                norm_eps=norm_eps, weight_offset=weight_offset,
            )

    def probe(
        self, hidden: Tensor, positions: Optional[Tensor], weight: Tensor, bias: Optional[Tensor],
        norm_weight: Optional[Tensor], out: Tensor, norm_eps: float, weight_offset: float, sigmoid: bool,
    ) -> None:
        with _on_device(hidden):
            launch_probe(hidden, positions, weight, bias, norm_weight, out, norm_eps, weight_offset, sigmoid)
