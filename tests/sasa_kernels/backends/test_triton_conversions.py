"""The Triton kernels' dtype conversions (``round_to``, ``to_float32``) bit for bit against torch.

Every bf16 value the kernels read is widened by ``to_float32`` and every bf16 value they write is
formed by ``round_to``. Triton 3.9's interpreter gets both wrong for subnormals (and can turn a NaN
into an infinity), so under it the helpers work on the bit patterns; compiled kernels use the
native conversions. Either way the result must be torch's, for every bf16 bit pattern and for
float32 inputs at every rounding boundary: the kernels' accuracy tests only see these errors when
a value is close to zero, where their tolerance hides them.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from sasa_kernels.triton_kernels import INTERPRETED  # noqa: E402
from sasa_kernels.triton_kernels.project import round_to, to_float32  # noqa: E402

if INTERPRETED:
    DEVICE = "cpu"
elif torch.cuda.is_available():
    DEVICE = "cuda"
    # Seconds on a GPU: benchmarks/gpu_check.sh runs the cuda-marked tests, so these come along.
    pytestmark = pytest.mark.cuda
else:
    pytestmark = pytest.mark.skip(reason="Triton kernels need a GPU or TRITON_INTERPRET=1")
    DEVICE = "cpu"

BLOCK = 4096


@triton.jit
def _widen_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr, SOFT_RTNE: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(dst_ptr + offs, to_float32(tl.load(src_ptr + offs, mask=mask), SOFT_RTNE), mask=mask)


@triton.jit
def _round_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr, SOFT_RTNE: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(src_ptr + offs, mask=mask)
    tl.store(dst_ptr + offs, round_to(x, dst_ptr.dtype.element_ty, SOFT_RTNE), mask=mask)


def _launch(kernel, src: torch.Tensor, dst_dtype: torch.dtype) -> torch.Tensor:
    src = src.to(DEVICE)
    # Poisoned: an element the kernel does not write fails the comparison.
    dst = torch.full(src.shape, 12345.0, dtype=dst_dtype, device=DEVICE)
    kernel[(triton.cdiv(src.numel(), BLOCK),)](src, dst, src.numel(), BLOCK=BLOCK, SOFT_RTNE=INTERPRETED)
    return dst.cpu()


def _all_bf16() -> torch.Tensor:
    return torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.view(torch.int16 if x.element_size() == 2 else torch.int32)


def _assert_same_values(got: torch.Tensor, want: torch.Tensor) -> None:
    """Bit-identical, except that any NaN may stand for any NaN (payloads are not specified)."""
    nan = torch.isnan(want)
    assert torch.equal(torch.isnan(got), nan), "NaN where torch has none, or a NaN lost"
    same = _bits(got)[~nan] == _bits(want)[~nan]
    bad = (~same).nonzero().flatten()
    assert bad.numel() == 0, (
        f"{bad.numel()} values differ; first: got {got[~nan][bad[:4]].tolist()}, want {want[~nan][bad[:4]].tolist()}"
    )


def test_every_bf16_widens_to_torchs_float32():
    src = _all_bf16()
    got = _launch(_widen_kernel, src, torch.float32)
    # Widening is exact, NaN payloads included: compare every bit.
    assert torch.equal(_bits(got), _bits(src.float()))


def test_float32_rounds_to_torchs_bf16_at_every_boundary():
    # Each bf16 pattern with low halves below, at and above the halfway point: ties to even and
    # odd, subnormal results, rounding up into the next binade and into infinity, NaNs whose
    # payload sits only in the low half (truncation would make them infinities).
    high = _all_bf16().view(torch.int16).to(torch.int64) & 0xFFFF
    low = torch.tensor([0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF], dtype=torch.int64)
    bits = ((high[:, None] << 16) | low[None, :]).flatten()
    src = bits.where(bits < (1 << 31), bits - (1 << 32)).to(torch.int32).view(torch.float32)
    got = _launch(_round_kernel, src, torch.bfloat16)
    _assert_same_values(got, src.to(torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_other_dtypes_round_natively(dtype):
    g = torch.Generator().manual_seed(0)
    src = torch.randn(3 * BLOCK + 5, generator=g) * 10.0 ** torch.randint(-8, 5, (3 * BLOCK + 5,), generator=g)
    got = _launch(_round_kernel, src, dtype)
    _assert_same_values(got, src.to(dtype))
