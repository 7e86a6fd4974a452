"""One token per row through a decoder block: the arguments and the cache it sees.

The augmented token of ``scope="last"`` *is* each row's last prompt position, recomputed from the
projected state. A block called for it gets the normal pass's own arguments restricted to that
position (:func:`one_token_kwargs`: the mask row, rotary embeddings and position ids gathered per
row, so right padding and Qwen2-VL's 3-D rope positions come out right) and, in place of the cache,
a :class:`SwappedKV` that hands the attention the normal pass's keys and values with that row
swapped in (docs/method.md section 4).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from sasa.hf import compat


class CacheLengthPerRow(NotImplementedError):
    """A block asked :class:`SwappedKV` for one cache length while the rows' tokens sit at different positions."""


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
        if key_states.shape[-2] != 1:
            # Not the token's own key (it is one position): a cross-attention block's keys and values,
            # computed from other states (Mllama's image), the same ones the normal pass computed.
            return key_states, value_states
        keys, values = self.kv[layer_idx]
        return self._swap(keys, key_states), self._swap(values, value_states)

    def restore(self) -> None:
        for full, index, original in reversed(self._saved):
            full.scatter_(2, index, original)
        self._saved.clear()

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """How many positions precede the token: its own position ``p``, as in the normal pass
        (Llama 4's attention temperature tuning reads it). One number for the whole batch, so the
        rows must share ``p`` (left-padded or unpadded prompts); :class:`CacheLengthPerRow` otherwise."""
        positions = self.last_pos.unique()
        if positions.numel() != 1:
            raise CacheLengthPerRow(
                "sasa scope='last': a decoder block reads the cache length (e.g. Llama 4's attention temperature "
                "tuning), which for the re-run token is its position, and the rows' last prompt tokens sit at "
                f"different positions ({sorted(positions.tolist())}: right padding). Left-pad the prompts (as "
                "guard.encode and generate do) or use scope='all'."
            )
        return int(positions[0])

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


def all_tokens_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A block's normal-pass arguments with the cache removed (scope='all' writes nowhere)."""
    out = {name: (None if compat.is_cache(value) else value) for name, value in kwargs.items()}
    if "use_cache" in out:
        out["use_cache"] = False
    return out


#: Per-query-row masks of cross-attention blocks (Mllama): ``[B, 1, T, N]``, restricted to the token's row.
_QUERY_ROW_MASKS = ("cross_attention_mask", "full_text_row_masked_out_mask")


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
        elif name.startswith("position_embeddings") and isinstance(value, Tensor) and value.dim() >= 2 \
                and value.shape[-2] == seq_len:
            out[name] = gather_seq(value, last_pos, -2)  # one table, [B, T, D] (Llama 4's complex freqs)
        elif name in _QUERY_ROW_MASKS and isinstance(value, Tensor) and value.dim() == 4 and value.shape[-2] == seq_len:
            out[name] = gather_seq(value, last_pos, -2, batch_dim=0)  # [B, 1, T(query), N]: the token's row
        elif name in ("position_ids", "text_position_ids") and isinstance(value, Tensor):
            out[name] = gather_seq(value, last_pos, -1)
        elif name == "cache_position" and isinstance(value, Tensor):
            # Only caches read it; SwappedKV ignores it. One entry keeps its shape consistent.
            out[name] = value[-1:]
        elif isinstance(value, Tensor) and value.dim() >= 2 and seq_len in value.shape[1:]:
            raise NotImplementedError(
                f"sasa scope='last': decoder-block argument {name!r} has a per-position shape "
                f"{list(value.shape)} that sasa does not know how to restrict to one token"
            )
        else:
            out[name] = value
    return out


class NotLastTokenOnly(NotImplementedError):
    """``scope="last"`` cannot be exact for this prompt: other positions attend to the last one."""


def check_last_token_only(mask: Any, last_pos: Tensor, block: int, others_read_later: bool) -> None:
    """Refuse (:class:`NotLastTokenOnly`) a block mask under which re-running only each row's last
    prompt token ``p`` is not the re-run of the whole prompt with ``p`` projected.

    The one-token pass reuses the normal pass's keys and values at every other position. That is
    exact when no position the token reads can have changed: under this block's mask, ``p`` must
    attend to no key after it, and (when a later re-run block reads this block's output at other
    positions: ``others_read_later``) no position before ``p`` may attend to ``p`` or to anything
    after it. Plainly causal masks (sliding windows included) always pass; bidirectional blocks
    that contain ``p`` (a prompt ending inside a Gemma 3 image block, a prefix-LM prompt) do not.
    ``None`` is the causal mask of an unpadded prompt."""
    if mask is None:
        return
    if not isinstance(mask, Tensor) or mask.dim() != 4:
        return  # one_token_kwargs refuses masks it cannot restrict
    allowed = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
    allowed = allowed.any(dim=1)  # any head: [B or 1, T(query), T(key)]
    rows, width = last_pos.shape[0], allowed.shape[-1]
    allowed = allowed.expand(rows, allowed.shape[-2], width)
    pos = last_pos.to(allowed.device).view(rows, 1, 1)
    keys = torch.arange(width, device=allowed.device).view(1, 1, width)
    own_row = allowed.gather(1, pos.expand(rows, 1, width))  # [B, 1, T]
    bad = bool((own_row & (keys > pos)).any())
    if not bad and others_read_later:
        queries = torch.arange(allowed.shape[-2], device=allowed.device).view(1, -1, 1)
        bad = bool((allowed & (queries < pos) & (keys >= pos)).any())
    if bad:
        raise NotLastTokenOnly(
            f"sasa scope='last': under decoder block {block}'s attention mask, other prompt positions attend to "
            "each row's last prompt token (attention that is not plainly causal: a prompt ending inside a "
            "bidirectional image block, a prefix-LM prompt, ...), so re-running that token alone is not exact. "
            "Use scope='all'."
        )


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
