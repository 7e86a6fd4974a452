"""The contract every backend implements.

The op layer (:mod:`sasa_kernels._ops`) validates arguments, flattens leading dimensions, makes the
last dimension contiguous, allocates the outputs, and only then calls a backend. A backend therefore
receives well-formed tensors and writes every element of the outputs it is given:

- ``project(hs, hf, out, a, b, eps)``: ``hs``, ``hf``, ``out`` are ``[N, d]`` with ``N >= 1``,
  ``d >= 1`` and unit stride in the last dimension (row strides may differ); computes
  ``out = a * hs + b * alpha * hf`` with ``alpha = <hs, hf> / (||hf||^2 + eps)``.
- ``project_rmsnorm(hs, hf, norm_weight, out, out_normed, a, b, eps, norm_eps, weight_offset)``:
  the same, plus ``out_normed = rmsnorm(out) * (weight_offset + norm_weight)`` (Llama numerics).
- ``probe(hidden, positions, weight, bias, norm_weight, out, norm_eps, weight_offset, sigmoid)``:
  ``hidden`` is ``[B, T, d]`` (unit last stride), ``positions`` ``[B]`` int64 or ``None`` (then
  ``T == 1``), ``weight`` ``[C, d]`` contiguous, ``bias`` ``[C]`` or ``None``, ``out`` ``[B, C]``
  float32 (float64 for float64 ``hidden``), ``B >= 1``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


class Backend:
    """Base class: a named set of kernels for some devices and dtypes."""

    #: Name used by ``SASA_BACKEND`` and :func:`sasa_kernels.use_backend`.
    name: str = ""
    #: Input dtypes this backend computes; others fall through to the next backend.
    dtypes: frozenset = frozenset({torch.float16, torch.bfloat16, torch.float32})

    def unavailable_reason(self, device_type: str) -> Optional[str]:
        """``None`` when usable on ``device_type`` (``"cpu"``, ``"cuda"``), else why not."""
        raise NotImplementedError

    def project(self, hs: Tensor, hf: Tensor, out: Tensor, a: float, b: float, eps: float) -> None:
        raise NotImplementedError

    def project_rmsnorm(
        self, hs: Tensor, hf: Tensor, norm_weight: Tensor, out: Tensor, out_normed: Tensor,
        a: float, b: float, eps: float, norm_eps: float, weight_offset: float,
    ) -> None:
        raise NotImplementedError

    def probe(
        self, hidden: Tensor, positions: Optional[Tensor], weight: Tensor, bias: Optional[Tensor],
        norm_weight: Optional[Tensor], out: Tensor, norm_eps: float, weight_offset: float, sigmoid: bool,
    ) -> None:
        raise NotImplementedError
