"""The normal pass, observed: what the augmented pass needs, read off the model's own forward.

Hooks (installed for one forward call, then removed) record

- ``H`` after block ``s`` and after block ``f`` (0-based decoder-block indices);
- the keyword arguments the model's forward hands to blocks ``s+1..L-1``: the attention mask its
  own mask builder made for that block, the rotary ``position_embeddings`` its own rotary module
  made (3-D for Qwen2-VL), position ids, and so on. The augmented pass calls the same blocks with
  the same arguments, so no model forward is copied;
- optionally (``scope="last"``) the full keys and values each of those blocks' attention got back
  from ``cache.update`` during the pass: by reference, no copy. For full-attention layers they are
  the cache's own tensors; for sliding-window layers they are the whole prompt's, which the cache
  itself trims to the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import Tensor, nn

from . import _compat as C


@dataclass
class NormalPass:
    """What one normal forward pass left behind (see the module docstring)."""

    hidden: dict[int, Tensor] = field(default_factory=dict)  # block index -> H after it [B, T, d]
    block_kwargs: dict[int, dict[str, Any]] = field(default_factory=dict)
    kv: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)
    cache: Any = None  # the normal pass's cache object, if it had one
    complete: bool = False  # set once the forward that was observed returned


class Capture:
    """Install the hooks with :meth:`arm`; they record one forward and :meth:`disarm` removes them.

    ``keep`` are the block indices whose output is kept; ``kwargs_from`` the first block whose
    call arguments are kept (all blocks from there to the end); ``record_kv`` whether to record
    the keys/values those blocks' attention got from the cache.
    """

    def __init__(self, layers: nn.ModuleList, keep: tuple[int, ...], kwargs_from: int, record_kv: bool):
        self.layers = layers
        self.keep = keep
        self.kwargs_from = kwargs_from
        self.record_kv = record_kv
        self.result = NormalPass()
        self._handles: list[Any] = []
        self._wrapped_cache: Any = None

    def arm(self) -> "Capture":
        self.result = NormalPass()
        for idx in self.keep:
            self._handles.append(self.layers[idx].register_forward_hook(self._output_hook(idx)))
        for idx in range(self.kwargs_from, len(self.layers)):
            self._handles.append(
                self.layers[idx].register_forward_pre_hook(self._kwargs_hook(idx), with_kwargs=True)
            )
        return self

    def disarm(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._wrapped_cache is not None:
            # Drop the instance attribute so the class's own ``update`` is found again.
            self._wrapped_cache.__dict__.pop("update", None)
            self._wrapped_cache = None

    def __enter__(self) -> "Capture":
        return self.arm()

    def __exit__(self, *exc: Any) -> None:
        self.disarm()

    def _output_hook(self, idx: int) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if idx not in self.result.hidden:  # only the first call (the prefill) counts
                self.result.hidden[idx] = C.block_output(output)

        return hook

    def _kwargs_hook(self, idx: int) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if idx in self.result.block_kwargs:
                return
            if len(args) > 1:
                raise RuntimeError(
                    f"sasa: decoder block {idx} was called with {len(args)} positional arguments; "
                    "expected the hidden states only"
                )
            self.result.block_kwargs[idx] = dict(kwargs)
            for value in kwargs.values():
                if C.is_cache(value):
                    self.result.cache = value
                    if self.record_kv and self._wrapped_cache is None:
                        self._wrap_update(value)

        return hook

    def _wrap_update(self, cache: Any) -> None:
        # An instance attribute shadows the class method for this one cache object only; disarm()
        # removes it. The wrapper records what the attention reads back and changes nothing.
        original = cache.update
        record = self.result.kv
        first = self.kwargs_from

        def update(key_states: Tensor, value_states: Tensor, layer_idx: int, *args: Any, **kwargs: Any):
            keys, values = original(key_states, value_states, layer_idx, *args, **kwargs)
            if layer_idx >= first and layer_idx not in record:
                record[layer_idx] = (keys, values)
            return keys, values

        cache.update = update
        self._wrapped_cache = cache
