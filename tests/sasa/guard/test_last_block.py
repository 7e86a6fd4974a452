"""``scope="all"`` runs its last block only at each row's last position (sasa.guard.last_block).

Checked on every family, both paddings, fp32 and bf16: the one-position block equals the full
block at that position under the tolerance rule (float64 model as the truth, or the fp32 full block
where the float64 model overflows; the full block in the same dtype as the eager baseline), and the shortcut is really taken (the block sees one position).
"""

from __future__ import annotations

import functools

import pytest
import torch

from sasa import SASAConfig, apply_sasa
from sasa.guard import last_block
from sasa.hf import compat
from tests.sasa import _tiny

FAMILIES = sorted(_tiny.BUILDERS)


@functools.lru_cache(maxsize=None)
def tiny(family: str, dtype: torch.dtype) -> _tiny.Tiny:
    t = _tiny.BUILDERS[family]()
    return t if dtype == torch.float32 else t.to(dtype)


def _features(t: _tiny.Tiny, batch, one_token: bool, seen_lengths: list | None = None) -> torch.Tensor:
    guard = apply_sasa(t.model, SASAConfig(t.safety_layer, t.fused_layer, scope="all", feature="hidden"))
    last = compat.find_decoder(t.model).layers[-1]
    handle = None
    if seen_lengths is not None:
        handle = last.register_forward_pre_hook(lambda m, args: seen_lengths.append(args[0].shape[-2]))
    try:
        guard._augment.last_block_one_token = one_token
        return guard.features(**batch)
    finally:
        guard.remove()
        if handle is not None:
            handle.remove()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_last_block_at_one_position_equals_the_full_block(family, side, dtype):
    t = tiny(family, dtype)
    batch = getattr(t, side)
    seen: list = []
    fast = _features(t, batch, one_token=True, seen_lengths=seen)
    width = batch["input_ids"].shape[1]
    # normal pass (all positions), the keys-only call (all positions), then one position per row
    assert seen[-2:] == [width, 1], seen
    full = _features(t, batch, one_token=False)
    t64 = tiny(family, torch.float64)
    truth = _features(t64, getattr(t64, side), one_token=False).double()
    if not torch.isfinite(truth).all():
        # gemma2's tiny model overflows in float64 even unguarded: the fp32 full block is the truth
        truth = _features(tiny(family, torch.float32), batch, one_token=False).double()
    eager_err = float((full.double() - truth).abs().max())
    atol = 1e-6 if dtype == torch.float32 else 1e-2
    err = float((fast.double() - truth).abs().max())
    assert err <= 2 * eager_err + atol, (err, eager_err)


def test_falls_back_to_the_full_block_when_the_block_never_calls_update():
    calls = []

    class NoAttention(torch.nn.Module):
        def forward(self, hidden_states, attention_mask=None, past_key_values=None, **kwargs):
            calls.append(hidden_states.shape[-2])
            return hidden_states * 2 + torch.arange(hidden_states.shape[-2]).view(1, -1, 1)

    h = torch.randn(2, 5, 3)
    pos = torch.tensor([4, 2])
    block = NoAttention()
    out = last_block.last_block_at_last_position(block, h, {}, pos)
    assert calls == [5]  # one full call, no one-token call
    want = torch.stack([h[0, 4] * 2 + 4, h[1, 2] * 2 + 2])[:, None]
    assert torch.equal(out, want)


def test_a_mask_it_cannot_restrict_runs_the_full_block():
    calls = []

    class Block(torch.nn.Module):
        def forward(self, hidden_states, attention_mask=None, past_key_values=None, **kwargs):
            calls.append((hidden_states.shape[-2], past_key_values))
            return hidden_states + 1

    h = torch.randn(2, 5, 3)
    pos = torch.tensor([4, 4])
    block = Block()
    flash_mask = torch.ones(2, 5, dtype=torch.long)  # 2-D: what flash attention gets
    out = last_block.last_block_at_last_position(block, h, {"attention_mask": flash_mask}, pos)
    assert calls == [(5, None)]
    assert torch.equal(out, h[:, 4:5] + 1)
