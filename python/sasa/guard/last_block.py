"""``scope="all"``: the last re-run block computed only where the probe reads it.

Block ``L-1``'s output is read at one position per row (the last prompt token), but its attention
needs keys and values at every position. So the block runs twice, both times as the model's own
module with the normal pass's arguments:

1. over every position with a :class:`_KeysOnly` cache, whose ``update`` (called by the attention
   right after its key/value projections and rotary embedding) records the keys and values and
   stops the block there: the attention scores, output projection and MLP of the other ``T-1``
   positions are never computed;
2. for the last token of each row only, like ``scope="last"`` (:func:`sasa.guard.one_token.one_token_kwargs`),
   attending to those keys and values through a :class:`SwappedKV`.

The result equals the full block at that position within the kernels' tolerance (the same
products, on one row instead of ``T``). Where it cannot be done (a mask that cannot be restricted
to one row, a block that never calls ``update``), the full block's output is used instead.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from sasa.guard.one_token import CacheLengthPerRow, SwappedKV, all_tokens_kwargs, gather_seq, one_token_kwargs
from sasa.hf import compat


class _KeysRecorded(Exception):
    """Raised by :class:`_KeysOnly` to stop a block once its attention has produced keys and values."""


class _KeysOnly:
    """A stand-in cache that records one ``update`` and stops the block (see the module docstring)."""

    def __init__(self) -> None:
        self.kv: dict[int, tuple[Tensor, Tensor]] = {}

    def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args: Any, **kwargs: Any):
        self.kv[layer_idx] = (key_states, value_states)
        raise _KeysRecorded

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # nothing is cached before this call


def last_block_at_last_position(block: Any, h: Tensor, kwargs: dict[str, Any], last_pos: Tensor) -> Tensor:
    """Block ``block``'s output at each row's last position, ``[B, 1, d]``.

    ``kwargs`` are the block's normal-pass arguments (the normal pass's cache, if it had one, is not
    touched: :class:`_KeysOnly` takes its place)."""
    def call(x: Tensor, kw: dict[str, Any]) -> Tensor:
        return compat.block_output(block(x, **kw))

    cache_name = next((name for name, value in kwargs.items() if compat.is_cache(value)), None)
    cache_name = cache_name or compat.cache_argument(block)
    base = all_tokens_kwargs(kwargs)
    keys_only = _KeysOnly()
    view = SwappedKV(keys_only.kv, last_pos)
    try:
        one_token = one_token_kwargs({**base, cache_name: keys_only}, view, last_pos, h.shape[-2])
    except NotImplementedError:  # e.g. a 2-D mask (flash attention): only the full block can take it
        return gather_seq(call(h, {**base, cache_name: None}), last_pos, -2)
    try:
        full = call(h, {**base, cache_name: keys_only})
    except _KeysRecorded:
        pass
    else:  # the block never called update: read its output off
        return gather_seq(full, last_pos, -2)
    one_token[cache_name] = view
    try:
        return call(gather_seq(h, last_pos, -2), one_token)
    except CacheLengthPerRow:  # the block needs each row's own position as one number: run it whole
        view.restore()
        return gather_seq(call(h, {**base, cache_name: None}), last_pos, -2)
    finally:
        view.restore()
