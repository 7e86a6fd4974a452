"""The augmented pass (docs/method.md section 4): project ``H_s``, then re-run blocks ``s+1..L-1``.

The blocks are the model's own modules, called with the arguments the model's own forward gave
them in the normal pass (:mod:`sasa.guard.capture`); only the hidden states, and for ``scope="last"``
the per-position arguments, are changed.

Both scopes return the same thing: the pre-norm state after the last block at each row's last
prompt position, ``[B, d]`` (the only position the probe reads).

- ``scope="all"``: every prompt position is projected; the blocks run over the whole prompt with
  no cache at all, so nothing is written anywhere; the last block only as far as the last
  position needs (:mod:`sasa.guard.last_block`).
- ``scope="last"``: only each row's last prompt token is projected; it goes through the blocks
  alone (:class:`OneTokenPass`), attending to the normal pass's keys and values through
  :class:`SwappedKV`, which hands the attention ``keys`` with that row's last position replaced
  by the new key (swapped in place and restored bit for bit after each block). The attention
  mask row, rotary embeddings and position ids are those of that token in the normal pass,
  gathered per row (so right padding and Qwen2-VL's 3-D rope positions come out right). The
  pass can run after the normal forward, or ride along inside it: block ``j > f`` right after
  the normal pass leaves block ``j``, while that block's weights are still in cache
  (:meth:`AugmentedPass.start`). The normal tokens' computation is the same either way. With
  ``compile_augmented`` (:mod:`sasa.guard.compiled_pass`) it runs after the forward, blocks ``s+2..L-1``
  as one compiled graph.
"""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor, nn

import sasa_kernels as sk
from sasa.distributed.placement import real_device
from sasa.guard.capture import NormalPass
from sasa.guard.compiled_pass import CompiledBlocks
from sasa.guard.fused_norm import FusedNormSlot, can_fuse_rmsnorm
from sasa.guard.last_block import last_block_at_last_position
from sasa.guard.one_token import SwappedKV, all_tokens_kwargs, check_last_token_only, gather_seq, one_token_kwargs
from sasa.hf import compat


class AugmentedPass:
    """Runs the augmented pass for one model; built once by the guard.

    :meth:`install` lets block ``s+1`` read the kernel's fused input norm (see
    :class:`FusedNormSlot`); without it the projection runs unfused. :meth:`remove` undoes it.
    """

    def __init__(
        self,
        layers: nn.ModuleList,
        safety_layer: int,
        fused_layer: int,
        mode: str,
        coef: float,
        eps: float,
        norm_offset: float,
        llama_norm_numerics: bool,
    ):
        self.layers = layers
        self.safety_layer = safety_layer
        self.fused_layer = fused_layer
        self.mode = mode
        self.coef = coef
        self.eps = eps
        self.norm_offset = norm_offset
        self.llama_norm_numerics = llama_norm_numerics
        self._slot: Optional[FusedNormSlot] = None
        #: scope="all": run the last block only at the last position (sasa.guard.last_block); False
        #: runs it over the whole prompt (the tests compare both).
        self.last_block_one_token = True
        #: scope="last" with compile_augmented: blocks s+2..L-1 through one compiled graph.
        self.compiled: Optional[CompiledBlocks] = None

    def install(self) -> None:
        norm = getattr(self.layers[self.safety_layer + 1], "input_layernorm", None)
        if self._slot is None and isinstance(norm, nn.Module):
            self._slot = FusedNormSlot(norm)

    def remove(self) -> None:
        if self._slot is not None:
            self._slot.remove()
            self._slot = None

    def _project(self, hs: Tensor, hf: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        # With a device_map, blocks s, f and s+1 may sit on different devices: project where block
        # s+1's weights are (else where H_s is); the block's own hook moves its input there anyway.
        target = real_device(getattr(self._slot.norm, "weight", None)) if self._slot is not None else None
        target = target if target is not None else hs.device
        hs, hf = hs.to(target), hf.to(target)
        if self._slot is not None and can_fuse_rmsnorm(self._slot.norm, self.llama_norm_numerics, hs.dtype, hs.shape[-1]):
            norm = self._slot.norm
            return sk.project_rmsnorm(
                hs.contiguous(),
                hf.contiguous(),
                norm.weight.detach(),
                mode=self.mode,
                coef=self.coef,
                eps=self.eps,
                norm_eps=compat.rmsnorm_eps(norm),
                weight_offset=self.norm_offset,
            )
        return sk.project(hs.contiguous(), hf.contiguous(), mode=self.mode, coef=self.coef, eps=self.eps), None

    def run(self, normal: NormalPass, scope: str, last_pos: Tensor) -> Tensor:
        """The pre-norm state after the last block at each row's last prompt token: ``[B, d]``."""
        if scope == "last":
            return self.start(normal, last_pos).finish()
        h, normed = self._project(normal.hidden[self.safety_layer], normal.hidden[self.fused_layer])
        last = len(self.layers) - 1
        for idx in range(self.safety_layer + 1, last):
            if idx not in normal.skipped:  # (a block the model's own forward skipped is skipped here too)
                h = self.call_block(idx, h, all_tokens_kwargs(normal.block_kwargs[idx]), normed)
            normed = None  # block s+1's fused input norm: for it alone
        if normed is not None or not self.last_block_one_token:  # (block s+1 is the last one)
            h = self.call_block(last, h, all_tokens_kwargs(normal.block_kwargs[last]), normed)
            return gather_seq(h, last_pos, -2)[:, 0]
        return last_block_at_last_position(self.layers[last], h, normal.block_kwargs[last], last_pos)[:, 0]

    def start(self, normal: NormalPass, last_pos: Tensor) -> "OneTokenPass":
        """The ``scope="last"`` pass, begun: projection and blocks ``s+1..f`` done (they need
        ``H_f``); the rest one :meth:`OneTokenPass.step` at a time. Needs what the normal pass
        recorded for blocks ``s+1..f`` (arguments, keys and values) and ``H`` after ``s`` and ``f``."""
        return OneTokenPass(self, normal, last_pos)

    def call_block(self, idx: int, h: Tensor, kwargs: dict[str, Any], normed: Optional[Tensor]) -> Tensor:
        """Block ``idx`` on ``h``; ``normed`` (block ``s+1`` only) is its precomputed input norm."""
        block = self.layers[idx]
        if normed is None:
            return compat.block_output(block(h, **kwargs))
        token = self._slot.offer(h, normed)
        try:
            return compat.block_output(block(h, **kwargs))
        finally:
            self._slot.withdraw(token)


class OneTokenPass:
    """One call's ``scope="last"`` augmented pass, run a block at a time (see :meth:`AugmentedPass.start`)."""

    def __init__(self, augment: AugmentedPass, normal: NormalPass, last_pos: Tensor):
        self.augment = augment
        self.normal = normal
        self.last_pos = last_pos
        s, f = augment.safety_layer, augment.fused_layer
        hs = gather_seq(normal.hidden[s], last_pos, -2)
        hf = gather_seq(normal.hidden[f], last_pos, -2)
        self._seq_len = normal.hidden[s].shape[-2]
        self._view = SwappedKV(normal.kv, last_pos)
        self._checked: set = set()
        self.h, normed = augment._project(hs, hf)
        self.next_block = s + 1
        self._skip()
        self.step(self.next_block, normed if self.next_block == s + 1 else None)
        # Compiled, the rest runs in finish(): block s+1 stays eager (its fused input norm is
        # handed over through a ContextVar, which dynamo cannot trace).
        while augment.compiled is None and self._skip() <= f:
            self.step(self.next_block)

    def _skip(self) -> int:
        """Pass over the blocks the normal forward skipped (Mllama's cross-attention blocks on a
        prompt without an image); the next block to run."""
        while self.next_block in self.normal.skipped:
            self.next_block += 1
        return self.next_block

    def step(self, idx: int, normed: Optional[Tensor] = None) -> None:
        """Run block ``idx`` (the next one) on the token; needs the normal pass's record of it."""
        if idx != self._skip():
            raise RuntimeError(f"sasa: augmented pass expected block {self.next_block}, got {idx}")
        kwargs = self._kwargs(idx)
        try:
            self.h = self.augment.call_block(idx, self.h, kwargs, normed)
        finally:
            self._view.restore()
        self.next_block = idx + 1

    def _kwargs(self, idx: int) -> dict:
        """Block ``idx``'s normal-pass arguments for the token, once its mask is checked to allow it."""
        recorded = self.normal.block_kwargs[idx]
        mask = recorded.get("attention_mask")
        key = (id(mask), idx == len(self.augment.layers) - 1)
        if key not in self._checked:  # blocks of one attention type share one mask tensor
            check_last_token_only(mask, self.last_pos, idx, others_read_later=not key[1])
            self._checked.add(key)
        return one_token_kwargs(recorded, self._view, self.last_pos, self._seq_len)

    @property
    def done(self) -> bool:
        return self.next_block == len(self.augment.layers)

    def finish(self) -> Tensor:
        """Run the remaining blocks; the pre-norm state after the last block, ``[B, d]``."""
        if self.augment.compiled is not None and not self.done:
            self._run_compiled(self.augment.compiled)
        while self._skip() < len(self.augment.layers):
            self.step(self.next_block)
        return self.h[:, 0]

    def _run_compiled(self, compiled: CompiledBlocks) -> None:
        indices = [i for i in range(self.next_block, len(self.augment.layers)) if i not in self.normal.skipped]
        kwargs = [self._kwargs(i) for i in indices]
        try:
            h = compiled.run([self.augment.layers[i] for i in indices], self.h, kwargs, self._view)
        finally:
            self._view.restore()
        if h is not None:  # else it could not compile: finish() steps eagerly
            self.h = h
            self.next_block = len(self.augment.layers)
