"""The contract every backend implements, and the numerics each one follows.

The op layer (:mod:`sasa_kernels._ops`) validates the arguments, then calls the backend chosen for
the inputs' device and dtype. A backend receives well-formed tensors (any strides; it flattens or
copies as its kernels need), allocates its outputs unless it is given them (``out=...``: tests
pass NaN-filled buffers, see ``tests/numerics.py``), writes every element and returns them:

- ``project(hs, hf, a, b, eps, out=None) -> out``: ``hs``, ``hf`` ``[..., d]`` of one shape,
  ``d >= 1``; ``out`` contiguous of that shape; ``out = a * hs + b * alpha * hf`` with
  ``alpha = <hs, hf> / (||hf||^2 + eps)`` row-wise. There may be no rows at all.
- ``project_rmsnorm(hs, hf, norm_weight, a, b, eps, norm_eps, weight_offset, out=None,
  out_normed=None) -> (out, out_normed)``: the same, plus ``out_normed = rmsnorm(out) *
  (weight_offset + norm_weight)`` (Llama numerics); ``norm_weight`` is ``[d]``.
- ``probe(hidden, positions, weight, bias, norm_weight, norm_eps, weight_offset, sigmoid,
  out=None) -> out``: ``hidden`` ``[B, T, d]`` with ``positions`` ``[B]`` int64 (already checked
  to lie in ``[0, T)`` where data can be read; a kernel writes NaN scores for any other index and
  never reads it), or ``[B, d]`` with ``positions=None``; ``weight`` ``[C, d]``, ``bias`` ``[C]``
  or ``None``; ``out`` ``[B, C]`` contiguous, float32 (float64 for float64 ``hidden``); ``B`` may
  be 0.

:func:`empty_rows` and :func:`empty_scores` allocate outputs of the contracted layouts.

Accumulation precision, by backend (the one place it is stated):

======== =================================================================================
backend  numerics
======== =================================================================================
cpp      float32 values widened to float64, where products of two are exact; dot products,
cuda     squared norms and sums of squares accumulate in float64. ``b * alpha`` is formed in
triton   float64 and rounded to float32 once; ``h = a * hs + (b * alpha) * hf`` is computed in
         float32 with the reference's roundings. RMSNorm: ``1/rms`` from the float64 sum,
         rounded once, then Hugging Face Llama's roundings. probe: float64 dot products, bias
         and sigmoid, one rounding to float32; its final norm keeps the row in float64 for
         float32 inputs and rounds like Llama for float16/bfloat16 inputs.
torch    the reference (:mod:`sasa_kernels.reference`): float32 accumulation for
         float16/bfloat16/float32 inputs, float64 for float64.
======== =================================================================================

Why float64: with a dot product that cancels (``hs`` nearly orthogonal to ``hf``, or a probe
weight nearly orthogonal to the row) the float32 sum's error is many ulps of the result, and a
kernel summing in another order than PyTorch broke the 2x-eager tolerance rule on about 4% of
random fp32 inputs. With exact products and a float64 sum ``alpha`` is correctly rounded in all
but astronomically cancelling cases, so a kernel is never worse than PyTorch eager (the property
and fuzz tests in tests/sasa_kernels hold every backend to it, cancelling inputs included). The
price is compute: the widening and float64 FMAs are about half the cpp kernels' instructions, which
shows where the data sit in cache (bfloat16 rows of a few MiB) and not where memory bounds them.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def empty_rows(x: Tensor) -> Tensor:
    """A new contiguous output shaped like ``x`` (the project ops' ``out`` / ``out_normed``)."""
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def empty_scores(hidden: Tensor, weight: Tensor) -> Tensor:
    """A new ``[B, C]`` probe output: float32, float64 for float64 ``hidden``."""
    dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    return torch.empty((hidden.shape[0], weight.shape[0]), dtype=dtype, device=hidden.device)


class Backend:
    """Base class: a named set of kernels for some devices and dtypes."""

    #: Name used by ``SASA_BACKEND`` and :func:`sasa_kernels.use_backend`.
    name: str = ""
    #: Input dtypes this backend computes; others fall through to the next backend.
    dtypes: frozenset = frozenset({torch.float16, torch.bfloat16, torch.float32})

    def unavailable_reason(self, device_type: str) -> Optional[str]:
        """``None`` when usable on ``device_type`` (``"cpu"``, ``"cuda"``), else why not."""
        raise NotImplementedError

    #: Optional fast entries for CPU (the ``cpp`` backend has them; ``None`` elsewhere): the same
    #: signatures as :meth:`project` / :meth:`project_rmsnorm`, returning ``None`` unless every
    #: tensor is a plain CPU tensor the op layer's validator accepts as it is. The public
    #: functions call them before validating (:mod:`sasa_kernels._api`), which spares them reading
    #: shapes, dtypes and devices in Python; on ``None`` the call takes the validated path.
    project_if_plain = None
    project_rmsnorm_if_plain = None

    def project(self, hs: Tensor, hf: Tensor, a: float, b: float, eps: float, out: Optional[Tensor] = None) -> Tensor:
        raise NotImplementedError

    def project_rmsnorm(
        self, hs: Tensor, hf: Tensor, norm_weight: Tensor, a: float, b: float, eps: float, norm_eps: float,
        weight_offset: float, out: Optional[Tensor] = None, out_normed: Optional[Tensor] = None,
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def probe(
        self, hidden: Tensor, positions: Optional[Tensor], weight: Tensor, bias: Optional[Tensor],
        norm_weight: Optional[Tensor], norm_eps: float, weight_offset: float, sigmoid: bool,
        out: Optional[Tensor] = None,
    ) -> Tensor:
        raise NotImplementedError
