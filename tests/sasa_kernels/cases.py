"""Random inputs for the property and fuzz tests, built deterministically from a few numbers.

A case is a small frozen dataclass (dtype, sizes, a seed, how the two states relate, ...) whose
``tensors()`` builds the inputs with a seeded generator, so hypothesis shrinks the numbers and a
failing case is written down as a one-line ``@example``.

The relations between ``hs`` and ``hf`` (and between a probe weight and its row):

- ``independent``: unrelated rows; ``<hs, hf>`` is about ``sqrt(d)`` times smaller than the sum
  of ``|hs * hf|``, so float32 sums lose several bits (the case that first broke the rule);
- ``cancelling``: ``hf`` made orthogonal to ``hs`` in float64, plus ``delta * hs``: the dot
  product cancels almost completely (down to the rounding of the inputs themselves);
- ``aligned``: ``hf`` close to a multiple of ``hs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from hypothesis import strategies as st

import sasa_kernels as sk

RELATIONS = ("independent", "cancelling", "aligned")
# Decimal exponent ranges that keep every output finite in the dtype (a residual projection can
# reach a few times |hs|), while still spanning tiny and huge values.
EXPONENTS = {torch.float32: (-18, 18), torch.float16: (-3, 3), torch.bfloat16: (-18, 18)}
DTYPES = tuple(EXPONENTS)


def relate(hs: torch.Tensor, noise: torch.Tensor, relation: str, delta: float) -> torch.Tensor:
    """A float64 ``[N, d]`` partner for each float64 row of ``hs`` (see the module docstring)."""
    if relation == "independent":
        return noise
    unit = hs / hs.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    if relation == "cancelling":
        orthogonal = noise - (noise * unit).sum(-1, keepdim=True) * unit
        return orthogonal + delta * noise.norm(dim=-1, keepdim=True) * unit
    if relation == "aligned":
        return 0.7 * hs + delta * noise
    raise ValueError(relation)


@dataclass(frozen=True)
class ProjectCase:
    dtype: torch.dtype
    rows: int
    d: int
    seed: int
    relation: str = "independent"
    delta: float = 1e-4
    mode: str = "replace"
    coef: float = 0.5
    eps: float = 1e-6
    zero_rows: tuple = ()

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        lo, hi = EXPONENTS[self.dtype]
        # Each row gets its own magnitudes, so one call mixes tiny and huge rows.
        scale_s = 10.0 ** torch.randint(lo, hi + 1, (self.rows, 1), generator=g).double()
        scale_f = 10.0 ** torch.randint(lo, hi + 1, (self.rows, 1), generator=g).double()
        s = torch.randn(self.rows, self.d, generator=g, dtype=torch.float64)
        f = relate(s, torch.randn(self.rows, self.d, generator=g, dtype=torch.float64), self.relation, self.delta)
        f = f / f.norm(dim=-1, keepdim=True).clamp_min(1e-300) * s.norm(dim=-1, keepdim=True)
        hs, hf = (s * scale_s).to(self.dtype), (f * scale_f).to(self.dtype)
        for r, which in self.zero_rows:
            if r < self.rows:
                (hs if which == "hs" else hf)[r] = 0
        return hs, hf

    def kwargs(self) -> dict:
        return dict(mode=self.mode, coef=self.coef, eps=self.eps)


@st.composite
def project_cases(draw, max_rows: int = 5, max_d: int = 300) -> ProjectCase:
    rows = draw(st.integers(0, max_rows))
    zero = st.tuples(st.integers(0, max(rows - 1, 0)), st.sampled_from(["hs", "hf"]))
    return ProjectCase(
        dtype=draw(st.sampled_from(DTYPES)),
        rows=rows,
        d=draw(st.integers(1, max_d)),
        seed=draw(st.integers(0, 2**31 - 1)),
        relation=draw(st.sampled_from(RELATIONS)),
        delta=draw(st.sampled_from([1e-8, 1e-6, 1e-4, 1e-2, 1.0])),
        mode=draw(st.sampled_from(sk.reference.MODES)),
        coef=draw(st.floats(-1.0, 2.0, allow_nan=False)),
        eps=draw(st.sampled_from([1e-6, 1e-12, 1.0, 1.1754944e-38])),
        zero_rows=tuple(draw(st.lists(zero, max_size=2))) if rows else (),
    )


@dataclass(frozen=True)
class ProbeCase:
    dtype: torch.dtype
    batch: int
    seq: int
    d: int
    num_probes: int
    seed: int
    exponent: int = 0
    with_norm: bool = False
    weight_offset: float = 0.0
    cancelling: bool = False
    delta: float = 1e-4
    weight_in_dtype: bool = False
    with_bias: bool = True
    activation: str = "none"

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]:
        """``(hidden [B, T, d], weight [C, d], bias, positions [B], norm_weight)``."""
        g = torch.Generator().manual_seed(self.seed)
        hidden = (torch.randn(self.batch, self.seq, self.d, generator=g) * 10.0**self.exponent).to(self.dtype)
        positions = torch.randint(0, self.seq, (self.batch,), generator=g)
        weight = torch.randn(self.num_probes, self.d, generator=g, dtype=torch.float64) / self.d
        bias = torch.randn(self.num_probes, generator=g) if self.with_bias else None
        norm_weight = (2 * torch.rand(self.d, generator=g)).to(self.dtype) if self.with_norm else None
        if self.cancelling and self.batch:
            # Probe c nearly orthogonal to the row it scores for batch entry c % B (as the kernel
            # sees the row: gathered and normalized).
            rows = sk.reference.probe(
                hidden.double(), torch.eye(self.d, dtype=torch.float64), None, positions=positions,
                norm_weight=None if norm_weight is None else norm_weight.double(),
                weight_offset=self.weight_offset, activation="none",
            )
            target = rows[torch.arange(self.num_probes) % self.batch]
            weight = relate(target, weight, "cancelling", self.delta)
        wdtype = self.dtype if self.weight_in_dtype else torch.float32
        weight = weight.to(wdtype)
        bias = None if bias is None else bias.to(wdtype)
        return hidden, weight, bias, positions, norm_weight

    def kwargs(self, positions, norm_weight) -> dict:
        return dict(
            positions=positions, norm_weight=norm_weight, norm_eps=1e-6, weight_offset=self.weight_offset,
            activation=self.activation,
        )


@st.composite
def probe_cases(draw, max_batch: int = 9, max_d: int = 200) -> ProbeCase:
    dtype = draw(st.sampled_from(DTYPES))
    with_norm = draw(st.booleans())
    return ProbeCase(
        dtype=dtype,
        batch=draw(st.integers(0, max_batch)),
        seq=draw(st.integers(1, 7)),
        d=draw(st.integers(1, max_d)),
        num_probes=draw(st.integers(1, 20)),
        seed=draw(st.integers(0, 2**31 - 1)),
        exponent=draw(st.integers(-3, 3)),
        with_norm=with_norm,
        weight_offset=draw(st.sampled_from([0.0, 1.0])) if with_norm else 0.0,
        cancelling=draw(st.booleans()),
        delta=draw(st.sampled_from([1e-8, 1e-6, 1e-4, 1e-2])),
        weight_in_dtype=draw(st.booleans()),
        with_bias=draw(st.booleans()),
        activation=draw(st.sampled_from(sk.reference.ACTIVATIONS)),
    )
