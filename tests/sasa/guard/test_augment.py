"""The pieces the augmented pass swaps in, each against the Hugging Face module it stands in for."""

from __future__ import annotations

import contextlib

import pytest
import torch

import sasa_kernels as sk
from sasa.guard.fused_norm import FusedNormSlot, can_fuse_rmsnorm
from sasa.guard.one_token import SwappedKV, gather_seq
from sasa.hf import compat
from sasa.hf.families import FAMILIES
from tests.sasa import _tiny

TEXT = sorted(_tiny.TEXT_FAMILIES)


@contextlib.contextmanager
def fused_input_norm(block, h, normed):
    """Offer ``normed`` for ``h`` to block's input norm, as the augmented pass does."""
    slot = FusedNormSlot(block.input_layernorm)
    token = slot.offer(h, normed)
    try:
        yield
    finally:
        slot.withdraw(token)
        slot.remove()


@pytest.mark.parametrize("family", TEXT)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_projection_norm_matches_the_blocks_own_input_norm(family, dtype):
    t = _tiny.BUILDERS[family]()
    block = compat.find_decoder(t.model).layers[2].to(dtype)
    fam = FAMILIES[family]
    gen = torch.Generator().manual_seed(0)
    hs = torch.randn(2, 7, 32, generator=gen).to(dtype)
    hf = torch.randn(2, 7, 32, generator=gen).to(dtype)
    if not hasattr(block, "input_layernorm"):
        # OLMo 2 normalizes after attention and MLP: there is no input norm to fuse, and the guard
        # projects unfused (no slot on any module).
        assert family == "olmo2"
        from sasa import SASAConfig, apply_sasa

        with apply_sasa(t.model, SASAConfig(1, 2)) as guard:
            assert guard._augment._slot is None
        return
    if not can_fuse_rmsnorm(block.input_layernorm, fam.llama_norm_numerics, dtype, 32):
        # Gemma-style norms in bf16 are not fused (their rounding differs from the kernel's), nor is
        # a LayerNorm (Cohere: it subtracts the mean).
        assert (not fam.llama_norm_numerics and dtype == torch.bfloat16) or family == "cohere2"
        return
    norm = block.input_layernorm
    h, normed = sk.project_rmsnorm(
        hs, hf, norm.weight.detach(), norm_eps=compat.rmsnorm_eps(norm), weight_offset=fam.norm_offset
    )
    with torch.no_grad():
        want = norm(h)
    tol = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(normed, want, **tol)
    # Inside the swap, the block's norm returns the kernel's result for h and defers otherwise.
    with fused_input_norm(block, h, normed):
        assert block.input_layernorm(h) is normed
        other = h.clone()
        torch.testing.assert_close(block.input_layernorm(other), want, **tol)
    assert block.input_layernorm is norm and "forward" not in norm.__dict__  # restored exactly


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_block_with_fused_norm_equals_block_unfused(family):
    t = _tiny.BUILDERS[family]()
    decoder = compat.find_decoder(t.model)
    fam = FAMILIES[family]
    # Reuse the arguments the model's forward gives block 2 (its mask, rotary tables, ...).
    seen = {}

    def grab(module, args, kwargs):
        seen.setdefault("kw", dict(kwargs))

    handle = decoder.layers[2].register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        t.model(**t.right)
    handle.remove()
    kwargs = {k: (None if compat.is_cache(v) else v) for k, v in seen["kw"].items()}
    gen = torch.Generator().manual_seed(1)
    hs, hf = torch.randn(2, 3, 10, 32, generator=gen).unbind(0)
    hs, hf = hs.contiguous(), hf.contiguous()
    block = decoder.layers[2]
    norm = block.input_layernorm
    h, normed = sk.project_rmsnorm(hs, hf, norm.weight.detach(), norm_eps=compat.rmsnorm_eps(norm), weight_offset=fam.norm_offset)
    with torch.no_grad():
        plain = compat.block_output(block(sk.project(hs, hf), **kwargs))
        with fused_input_norm(block, h, normed):
            fused = compat.block_output(block(h, **kwargs))
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-5)


def test_gather_seq_and_the_swapped_kv_row():
    x = torch.arange(2 * 5 * 3).view(2, 5, 3)
    pos = torch.tensor([4, 1])
    assert torch.equal(gather_seq(x, pos, -2)[:, 0], torch.stack([x[0, 4], x[1, 1]]))
    # broadcast batch dim and leading dims (Qwen2-VL's [3, B, T, D] rotary tables)
    y = torch.arange(3 * 1 * 5 * 2).view(3, 1, 5, 2)
    got = gather_seq(y, pos, -2)
    assert got.shape == (3, 2, 1, 2) and torch.equal(got[:, 1, 0], y[:, 0, 1])
    # masks: batch is dim 0, the query dim is -2
    mask = torch.arange(2 * 1 * 5 * 5).view(2, 1, 5, 5)
    assert torch.equal(gather_seq(mask, pos, -2, batch_dim=0)[1, 0, 0], mask[1, 0, 1])
    full = torch.randn(2, 2, 5, 4)
    before = full.clone()
    view = SwappedKV({3: (full, full * 2)}, pos)
    keys, values = view.update(torch.ones(2, 2, 1, 4), torch.ones(2, 2, 1, 4), 3)
    out = keys.clone()
    assert out[0, :, 4].eq(1).all() and out[1, :, 1].eq(1).all()
    assert torch.equal(out[0, :, :4], before[0, :, :4]) and torch.equal(out[1, :, 2:], before[1, :, 2:])
    view.restore()
    assert torch.equal(full, before)  # the normal pass's keys, bit for bit


@pytest.mark.parametrize("scope", ["all", "last"])
def test_guard_uses_the_fused_norm_for_block_s_plus_1(monkeypatch, scope):
    """The augmented pass really feeds block s+1 the kernel's fused norm (not a silent fallback)."""
    from sasa import SASAConfig, apply_sasa
    from sasa.guard import fused_norm

    hits, offered = [], []
    real_offer = fused_norm.FusedNormSlot.offer

    def spy(self, source, normed):
        offered.append(normed)
        return real_offer(self, source, normed)

    monkeypatch.setattr(fused_norm.FusedNormSlot, "offer", spy)
    t = _tiny.llama()
    norm = compat.find_decoder(t.model).layers[2].input_layernorm
    handle = norm.register_forward_hook(lambda m, a, out: hits.append(out is offered[-1]) if offered else None)
    guard = apply_sasa(t.model, SASAConfig(1, 2, scope=scope))
    try:
        guard.features(**t.left)
    finally:
        guard.remove()
        handle.remove()
    assert hits == [True]
