"""The augmented pass (SASA.md section 4): project ``H_s``, then re-run blocks ``s+1..L-1``.

The blocks are the model's own modules, called with the arguments the model's own forward gave
them in the normal pass (:mod:`sasa._capture`); only the hidden states, and for ``scope="last"``
the per-position arguments, are changed.

Both scopes return the same thing: the pre-norm state after the last block at each row's last
prompt position, ``[B, d]`` (the only position the probe reads).

- ``scope="all"``: every prompt position is projected; the blocks run over the whole prompt with
  no cache at all, so nothing is written anywhere.
- ``scope="last"``: only each row's last prompt token is projected; it goes through the blocks
  alone (:class:`OneTokenPass`), attending to the normal pass's keys and values through
  :class:`SwappedKV`, which hands the attention ``keys`` with that row's last position replaced
  by the new key (swapped in place and restored bit for bit after each block). The attention
  mask row, rotary embeddings and position ids are those of that token in the normal pass,
  gathered per row (so right padding and Qwen2-VL's 3-D rope positions come out right). The
  pass can run after the normal forward, or ride along inside it: block ``j > f`` right after
  the normal pass leaves block ``j``, while that block's weights are still in cache
  (:meth:`AugmentedPass.start`). The normal tokens' computation is the same either way.
"""

from __future__ import annotations

import contextvars
import types
from typing import Any, Optional

import torch
from torch import Tensor, nn

import sasa_kernels as sk

from . import _compat as compat
from ._capture import GuardPart, NormalPass
from .distributed._placement import real_device
from .distributed._tp import is_dtensor


class SwappedKV:
    """Stands in for the cache while one token per row runs through the blocks.

    ``update`` hands the attention the normal pass's keys/values for that block with each row's
    position ``last_pos[b]`` replaced by the new token's key/value (the new token *is* that
    position, recomputed from the projected state). The replacement is written in place, one row
    per sequence, and :meth:`restore` writes the original rows back bit for bit: cheaper than an
    out-of-place copy of the whole ``[B, H, T, D]`` keys per block. Always ``restore()`` (in a
    ``finally``) before anything else reads the cache.
    """

    def __init__(self, kv: dict[int, tuple[Tensor, Tensor]], last_pos: Tensor):
        self.kv = kv
        self.last_pos = last_pos
        self._saved: list[tuple[Tensor, Tensor, Tensor]] = []

    def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args: Any, **kwargs: Any):
        keys, values = self.kv[layer_idx]
        return self._swap(keys, key_states), self._swap(values, value_states)

    def restore(self) -> None:
        for full, index, original in reversed(self._saved):
            full.scatter_(2, index, original)
        self._saved.clear()

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return int(next(iter(self.kv.values()))[0].shape[-2])

    def _swap(self, full: Tensor, new: Tensor) -> Tensor:
        # full [B, H, T, D], new [B, H, 1, D].
        # (With a device_map the block's keys live on its own device, not the inputs'.)
        index = self.last_pos.to(full.device).view(-1, 1, 1, 1).expand(full.shape[0], full.shape[1], 1, full.shape[3])
        self._saved.append((full, index, full.gather(2, index)))
        full.scatter_(2, index, new.to(full.dtype))
        return full


def gather_seq(x: Tensor, pos: Tensor, seq_dim: int, batch_dim: Optional[int] = None) -> Tensor:
    """``x[..., b, ..., pos[b], ...]`` keeping a length-1 sequence dim. The batch dim (default: just
    before ``seq_dim``, as in hidden states, rotary tables and position ids, including Qwen2-VL's
    ``[3, B, T]``) may be 1 (broadcast), as the model's masks and rotary tables often are."""
    seq_dim = seq_dim % x.dim()
    batch_dim = seq_dim - 1 if batch_dim is None else batch_dim % x.dim()
    shape = list(x.shape)
    shape[batch_dim] = pos.shape[0]
    x = x.expand(*shape)
    index_shape = [1] * x.dim()
    index_shape[batch_dim] = pos.shape[0]
    index = pos.to(x.device).view(index_shape)  # x may sit on another device (device_map)
    expand_shape = list(x.shape)
    expand_shape[seq_dim] = 1
    return x.gather(seq_dim, index.expand(*expand_shape))


def one_token_kwargs(kwargs: dict[str, Any], view: SwappedKV, last_pos: Tensor, seq_len: int) -> dict[str, Any]:
    """A block's normal-pass arguments, restricted to each row's last prompt token."""
    out: dict[str, Any] = {}
    for name, value in kwargs.items():
        if compat.is_cache(value):
            out[name] = view
        elif name == "attention_mask":
            out[name] = _mask_row(value, last_pos, seq_len)
        elif name.startswith("position_embeddings") and isinstance(value, (tuple, list)):
            out[name] = type(value)(gather_seq(t, last_pos, -2) for t in value)
        elif name in ("position_ids", "text_position_ids") and isinstance(value, Tensor):
            out[name] = gather_seq(value, last_pos, -1)
        elif name == "cache_position" and isinstance(value, Tensor):
            # Only caches read it; SwappedKV ignores it. One entry keeps its shape consistent.
            out[name] = value[-1:]
        elif isinstance(value, Tensor) and value.dim() >= 2 and value.shape[-1] == seq_len:
            raise NotImplementedError(
                f"sasa scope='last': decoder-block argument {name!r} has a per-position shape "
                f"{list(value.shape)} that sasa does not know how to restrict to one token"
            )
        else:
            out[name] = value
    return out


def _mask_row(mask: Any, last_pos: Tensor, seq_len: int) -> Any:
    if mask is None:
        # The model's mask builder returns None only for a causal prompt without padding; then
        # every row's last token is the final position and may attend to all keys.
        return None
    if isinstance(mask, Tensor) and mask.dim() == 4 and mask.shape[-1] == seq_len and mask.shape[-2] == seq_len:
        return gather_seq(mask, last_pos, -2, batch_dim=0)  # [B, heads, T(query), T(key)]
    raise NotImplementedError(
        "sasa scope='last' needs a 4-D [B, 1, T, T] attention mask (the eager and sdpa attention "
        f"implementations); got {type(mask).__name__}"
        + (f" of shape {list(mask.shape)}" if isinstance(mask, Tensor) else "")
        + ". Use scope='all' or attn_implementation='sdpa'."
    )


def all_tokens_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A block's normal-pass arguments with the cache removed (scope='all' writes nowhere)."""
    out = {name: (None if compat.is_cache(value) else value) for name, value in kwargs.items()}
    if "use_cache" in out:
        out["use_cache"] = False
    return out


class FusedNormSlot(GuardPart):
    """Lets the augmented pass hand block ``s+1`` the kernel's fused ``rmsnorm(h)``.

    Installed on block ``s+1``'s ``input_layernorm`` instance (its ``forward``, an instance
    attribute: no class and no module tree is changed, so ``state_dict`` is unaffected) for the
    guard's lifetime. When the augmented pass, in the current context only, has offered a
    precomputed result for the exact tensor the norm receives, that result is returned; any other
    call (the model's normal forward, another thread) runs the norm's own forward.
    """

    def __init__(self, norm: nn.Module):
        self.norm = norm
        self._offer: contextvars.ContextVar[Optional[tuple[Tensor, Tensor]]] = contextvars.ContextVar(
            "sasa_fused_norm", default=None
        )
        self._had_instance_forward = "forward" in norm.__dict__
        self._previous = norm.__dict__.get("forward")
        slot = self

        def forward(module: nn.Module, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
            offer = slot._offer.get()
            if offer is not None and x is offer[0] and not args and not kwargs:
                return offer[1]
            if slot._previous is not None:
                return slot._previous(x, *args, **kwargs)
            return type(module).forward(module, x, *args, **kwargs)

        # A bound method (not a closure over ``norm``) so a copy of the module calls its own forward.
        norm.forward = types.MethodType(forward, norm)

    def offer(self, source: Tensor, normed: Tensor) -> contextvars.Token:
        return self._offer.set((source, normed))

    def withdraw(self, token: contextvars.Token) -> None:
        self._offer.reset(token)

    def remove(self) -> None:
        """Restore the norm's ``forward`` exactly as it was."""
        if self._had_instance_forward:
            self.norm.forward = self._previous
        else:
            self.norm.__dict__.pop("forward", None)


def can_fuse_rmsnorm(norm: Any, family_llama_numerics: bool, dtype: torch.dtype, hidden: int) -> bool:
    """Whether ``norm`` is an RMSNorm the ``sasa_kernels`` fused norm reproduces for this model."""
    weight = getattr(norm, "weight", None)
    if not isinstance(norm, nn.Module) or not isinstance(weight, Tensor) or weight.shape != (hidden,):
        return False
    # The kernels take plain tensors with values: not an offloaded (meta) or tensor-parallel weight.
    if real_device(weight) is None or is_dtensor(weight):
        return False
    if getattr(norm, "bias", None) is not None or compat.rmsnorm_eps(norm) is None:
        return False
    if "RMSNorm" not in type(norm).__name__:
        return False
    # Gemma-style norms multiply in float32 before casting back; identical only for float32.
    return family_llama_numerics or dtype == torch.float32


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
        for idx in range(self.safety_layer + 1, len(self.layers)):
            h = self.call_block(idx, h, all_tokens_kwargs(normal.block_kwargs[idx]), normed)
            normed = None
        return gather_seq(h, last_pos, -2)[:, 0]

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
        self.h, normed = augment._project(hs, hf)
        self.next_block = s + 1
        while self.next_block <= f:
            self.step(self.next_block, normed if self.next_block == s + 1 else None)

    def step(self, idx: int, normed: Optional[Tensor] = None) -> None:
        """Run block ``idx`` (the next one) on the token; needs the normal pass's record of it."""
        if idx != self.next_block:
            raise RuntimeError(f"sasa: augmented pass expected block {self.next_block}, got {idx}")
        kwargs = one_token_kwargs(self.normal.block_kwargs[idx], self._view, self.last_pos, self._seq_len)
        try:
            self.h = self.augment.call_block(idx, self.h, kwargs, normed)
        finally:
            self._view.restore()
        self.next_block = idx + 1

    @property
    def done(self) -> bool:
        return self.next_block == len(self.augment.layers)

    def finish(self) -> Tensor:
        """Run the remaining blocks; the pre-norm state after the last block, ``[B, d]``."""
        while not self.done:
            self.step(self.next_block)
        return self.h[:, 0]
