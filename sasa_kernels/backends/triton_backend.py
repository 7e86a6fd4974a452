"""The ``triton`` backend: fused Triton kernels on CUDA, or on CPU under the Triton interpreter.

Importing this module raises :class:`ImportError` when ``triton`` is not installed, which leaves
the backend unregistered.

The kernels are launched from inside the opaque ``torch.ops.sasa.*`` ops, not registered with
``torch.library.triton_op`` + ``wrap_triton``. That would make each Triton kernel its own op
chosen when a graph is traced, so a compiled graph would fix the backend (``SASA_BACKEND`` and
``use_backend`` would stop applying to it) and the ops would differ per backend. What it buys is
that the compiler sees the kernel: inductor then launches it directly (it does not fuse a user
kernel with the ops around it), which removes the Python op body from a compiled or CUDA-graph
replay. That saving can only be measured on a GPU, which this project has not had; revisit then.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Optional

import torch
from torch import Tensor

from ..triton_kernels import INTERPRETED, launch_probe, launch_project
from .base import Backend, empty_rows, empty_scores

_CPU_HINT = (
    "Triton kernels run on CPU only under the Triton interpreter; set TRITON_INTERPRET=1 before "
    "importing sasa_kernels (Triton reads it when the kernels are defined)"
)


def _on_device(t: Tensor) -> ContextManager[object]:
    # Triton launches on the current CUDA device, which need not be the tensors' device.
    if t.device.type == "cuda":
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def _rows(x: Tensor) -> Tensor:
    """``x`` ``[..., d]`` as ``[N, d]`` with unit stride in the last dimension (copies only when it must)."""
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def _unit_last_stride(x: Optional[Tensor]) -> Optional[Tensor]:
    return x if x is None or x.stride(-1) == 1 else x.contiguous()


class TritonBackend(Backend):
    name = "triton"
    dtypes = frozenset({torch.float16, torch.bfloat16, torch.float32})

    def unavailable_reason(self, device_type: str) -> Optional[str]:
        if device_type == "cuda":
            return None if torch.cuda.is_available() else "no CUDA device is available"
        if device_type == "cpu":
            return None if INTERPRETED else _CPU_HINT
        return f"Triton kernels run on cuda (and on cpu under TRITON_INTERPRET=1), not on {device_type}"

    def project(
        self, hs: Tensor, hf: Tensor, a: float, b: float, eps: float, out: Optional[Tensor] = None,
    ) -> Tensor:
        out = empty_rows(hs) if out is None else out
        if out.numel():
            with _on_device(hs):
                launch_project(_rows(hs), _rows(hf), out.view(-1, out.shape[-1]), a, b, eps)
        return out

    def project_rmsnorm(
        self, hs: Tensor, hf: Tensor, norm_weight: Tensor, a: float, b: float, eps: float, norm_eps: float,
        weight_offset: float, out: Optional[Tensor] = None, out_normed: Optional[Tensor] = None,
    ) -> tuple[Tensor, Tensor]:
        out = empty_rows(hs) if out is None else out
        out_normed = empty_rows(hs) if out_normed is None else out_normed
        if out.numel():
            d = out.shape[-1]
            with _on_device(hs):
                launch_project(
                    _rows(hs), _rows(hf), out.view(-1, d), a, b, eps, norm_weight=norm_weight.contiguous(),
                    out_normed=out_normed.view(-1, d), norm_eps=norm_eps, weight_offset=weight_offset,
                )
        return out, out_normed

    def probe(
        self, hidden: Tensor, positions: Optional[Tensor], weight: Tensor, bias: Optional[Tensor],
        norm_weight: Optional[Tensor], norm_eps: float, weight_offset: float, sigmoid: bool,
        out: Optional[Tensor] = None,
    ) -> Tensor:
        out = empty_scores(hidden, weight) if out is None else out
        if out.shape[0]:
            hidden3 = _unit_last_stride(hidden if positions is not None else hidden.unsqueeze(1))
            with _on_device(hidden):
                launch_probe(
                    hidden3, positions, _unit_last_stride(weight), None if bias is None else bias.contiguous(),
                    None if norm_weight is None else norm_weight.contiguous(), out, norm_eps, weight_offset,
                    sigmoid,
                )
        return out
