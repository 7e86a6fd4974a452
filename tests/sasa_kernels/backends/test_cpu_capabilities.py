"""The CPU kernels' instruction sets agree bit for bit where they share their sums.

``avx512_bf16`` is ``avx512`` with bfloat16 rounding done by ``vcvtneps2bf16``, which flushes
subnormals and keeps NaN payloads; vectors holding either take ``avx512``'s integer rounding
(csrc/cpu/simd_avx512_bf16.h). Their sums are the same code, so every output must have the same
bits, on inputs chosen to reach every rounding case: ties, subnormal and overflowing results,
infinities and NaNs. Each side runs in its own subprocess (``SASA_CPU_CAPABILITY`` is read when the
extension loads).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from sasa_kernels.backends import compiled

INFO = compiled.build_info()
pytestmark = pytest.mark.skipif(
    INFO is None or INFO["cpu_capability"] != "avx512_bf16",
    reason="needs the avx512_bf16 CPU kernels (a CPU with AVX512_BF16 and the extension built)",
)

# Writes the outputs of a fixed set of bfloat16 calls to the file named by argv[1]; it runs once
# per capability, so both sides compute exactly this.
_CALLS = r'''
import sys
import torch
import sasa_kernels  # noqa: F401  (registers torch.ops.sasa)

def inputs():
    g = torch.Generator().manual_seed(0)
    d = 4099  # whole vectors and a partial one
    rows = []
    rows.append(torch.randn(d, generator=g))                        # ordinary values
    rows.append(torch.randn(d, generator=g) * 1e-38)                # results near and below FLT_MIN
    rows.append(torch.randn(d, generator=g) * 1e-40)                # subnormal inputs
    big = (0.5 + 0.5 * torch.rand(d, generator=g)) * 1.5e38 * torch.randn(d, generator=g).sign()
    rows.append(big)                                                # results that overflow
    odd = torch.randn(d, generator=g)
    odd[::7] = float("inf"); odd[3::11] = -float("inf"); odd[5::13] = float("nan")
    rows.append(odd)                                                # infinities and NaNs
    mixed = torch.randn(d, generator=g)
    mixed[::5] = 1e-39; mixed[2::9] = 0.0; mixed[4::17] = -0.0
    rows.append(mixed)                                              # subnormals among normals
    hs = torch.stack(rows).to(torch.bfloat16)
    hf = torch.roll(hs, 1, 0).flip(1).contiguous()
    return hs, hf

hs, hf = inputs()
w = (1 + 0.1 * torch.randn(hs.shape[1], generator=torch.Generator().manual_seed(1))).to(torch.bfloat16)
outs = []
# a = 1 + 2**-8 puts every a * hs exactly halfway between two bfloat16 values: ties to even.
for a, b in ((1.0 + 2.0**-8, 0.0), (1.0 + 2.0**-8, 0.25), (0.5, 1.0), (0.0, -1.0), (3.0, 1e-3)):
    out = torch.empty_like(hs)
    torch.ops.sasa._compiled_project(hs, hf, out, a, b, 1e-6)
    outs.append(out)
    h, normed = torch.empty_like(hs), torch.empty_like(hs)
    torch.ops.sasa._compiled_project_rmsnorm(hs, hf, w, h, normed, a, b, 1e-6, 1e-6, 0.0)
    outs += [h, normed]
weight = torch.randn(3, hs.shape[1], generator=torch.Generator().manual_seed(2))
scores = torch.empty(hs.shape[0], 3)
torch.ops.sasa._compiled_probe(hs.unsqueeze(1), None, weight, None, w, scores, 1e-6, 0.0, False)
outs.append(scores)
torch.save([o.view(torch.int16) if o.dtype == torch.bfloat16 else o.view(torch.int32) for o in outs], sys.argv[1])
'''


def _run(path, capability):
    env = dict(os.environ, SASA_CPU_CAPABILITY=capability)
    result = subprocess.run([sys.executable, "-c", _CALLS, str(path)], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(path)


def test_avx512_bf16_rounds_like_avx512(tmp_path):
    fast = _run(tmp_path / "avx512_bf16.pt", "avx512_bf16")
    integer = _run(tmp_path / "avx512.pt", "avx512")
    assert len(fast) == len(integer) == 16
    for i, (x, y) in enumerate(zip(fast, integer)):
        different = (x != y).nonzero()
        assert different.numel() == 0, f"output {i}: {different.shape[0]} elements differ, first at {different[:3].tolist()}"
    # The inputs reach the cases the fast path hands over: NaN and subnormal results exist.
    bits = torch.cat([t.flatten() for t in fast[:-1]]).int() & 0x7FFF
    assert (bits > 0x7F80).any(), "no NaN result"
    assert ((bits > 0) & (bits < 0x0080)).any(), "no subnormal result"
    assert (bits == 0x7F80).any(), "no infinite result"
