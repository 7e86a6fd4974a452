"""The normal pass, observed: what the augmented pass needs, read off the model's own forward.

A :class:`Recorder` records, for one forward call,

- ``H`` after the kept blocks (0-based decoder-block indices; the safety and fused blocks);
- the keyword arguments the model's forward hands to blocks ``kwargs_from..L-1``: the attention
  mask its own mask builder made for that block, the rotary ``position_embeddings`` its own rotary
  module made (3-D for Qwen2-VL), position ids, and so on. The augmented pass calls the same blocks
  with the same arguments, so no model forward is copied;
- optionally (``scope="last"``) the full keys and values each of those blocks' attention got back
  from ``cache.update`` during the pass: by reference, no copy. For full-attention layers they are
  the cache's own tensors; for sliding-window layers they are the whole prompt's, which the cache
  itself trims to the window.

Thread safety: a guard installs its hooks once (:class:`BlockHooks`) and each call activates its
own recorder in a :class:`contextvars.ContextVar`. A hook firing in a forward run by another thread
(or by code that is not a guard call) finds no recorder in its context and does nothing, so
concurrent calls on one model never see each other's states. :class:`Capture` is the same for one
``with`` block, for tools that observe a model once (it installs and removes its own hooks).
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import torch
from torch import Tensor, nn

from sasa.hf import compat


class GuardPart:
    """Something a guard installs on a model. A deep copy of the model would share it with the
    original (hooks that serve the original's calls), so copying a guarded model is refused."""

    def __deepcopy__(self, memo: dict) -> Any:
        raise TypeError(
            "a model with an active SASA guard cannot be deep-copied (the copy would share the guard's hooks); "
            "call guard.remove(), copy the model, then apply_sasa to each copy"
        )


class InstanceAttribute(GuardPart):
    """``obj.__dict__[name] = value`` on one instance, and :meth:`remove` restores exactly what was
    there (an instance attribute someone else had set, or nothing). Writing the instance's
    ``__dict__`` bypasses ``nn.Module.__setattr__`` and always shadows the class's attribute."""

    def __init__(self, obj: Any, name: str, value: Any):
        self.obj, self.name = obj, name
        self._had_attr = name in obj.__dict__
        self._previous = obj.__dict__.get(name)
        obj.__dict__[name] = value

    def remove(self) -> None:
        if self._had_attr:
            self.obj.__dict__[self.name] = self._previous
        else:
            self.obj.__dict__.pop(self.name, None)


@dataclass
class NormalPass:
    """What one normal forward pass left behind (see the module docstring)."""

    hidden: dict[int, Tensor] = field(default_factory=dict)  # block index -> H after it [B, T, d]
    block_kwargs: dict[int, dict[str, Any]] = field(default_factory=dict)
    kv: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)
    cache: Any = None  # the normal pass's cache object, if it had one
    #: The last decoder block (from ``chain_from + 1``) whose input was not the previous block's
    #: output: the model changed the hidden states between blocks (Qwen3-VL's DeepStack features).
    unchained: Optional[int] = None
    #: Blocks after ``chain_from`` the model's forward did not call at all while calling a later one
    #: (Mllama skips its cross-attention blocks on a prompt without an image): the re-run skips them too.
    skipped: set[int] = field(default_factory=set)


class Recorder:
    """Records one forward (the first call of each block: in ``generate``, the prefill)."""

    def __init__(self, keep: tuple[int, ...], kwargs_from: int, record_kv: bool, chain_from: Optional[int] = None,
                 chain_positions: Optional[Tensor] = None):
        self.keep = keep
        self.kwargs_from = kwargs_from
        self.record_kv = record_kv
        #: Check that each block from ``chain_from + 1`` on gets the previous block's output as its
        #: input (:attr:`NormalPass.unchained`; needs the hooks' ``chain_from`` too): at every position,
        #: or only at ``chain_positions[b]`` of each row (scope="last" re-runs only those; the other
        #: positions' keys and values are the normal pass's own, changes included).
        self.chain_from = chain_from
        self.chain_positions = chain_positions
        self._last_output: Optional[tuple[int, Any]] = None  # (block, its output) of the latest block
        self._chain_seen: set[int] = set()
        self._called: set[int] = set()  # blocks whose first call was seen (later calls: a re-run's)
        self.result = NormalPass()
        self._wrapped_cache: Any = None
        self._finished = False
        #: Called with the block index after each block output the hooks report (see BlockHooks).
        self.after_block: Optional[Callable[[int], None]] = None

    def on_output(self, idx: int, output: Any) -> None:
        if self._finished:
            return
        if idx in self.keep and idx not in self.result.hidden:
            self.result.hidden[idx] = compat.block_output(output)
        if self.chain_from is not None and idx >= self.chain_from and idx not in self._chain_seen:
            self._chain_seen.add(idx)
            self._last_output = (idx, compat.block_output(output))
        if self.after_block is not None:
            self.after_block(idx)

    def on_call(self, idx: int, args: tuple, kwargs: dict) -> None:
        if self._finished or idx in self._called:
            return
        self._called.add(idx)
        if self.chain_from is not None and idx > self.chain_from:
            given = args[0] if args else kwargs.get("hidden_states")
            previous, output = self._last_output if self._last_output is not None else (-1, None)
            if previous < self.chain_from or not _same_states(given, output, self.chain_positions):
                self.result.unchained = idx  # the latest such block
            else:  # blocks between the previous one and this were not called: skipped by the model
                self.result.skipped.update(range(previous + 1, idx))
            self._last_output = None
        if idx < self.kwargs_from:
            return
        if len(args) > 1:
            raise RuntimeError(
                f"sasa: decoder block {idx} was called with {len(args)} positional arguments; expected the hidden states only"
            )
        self.result.block_kwargs[idx] = dict(kwargs)
        for value in kwargs.values():
            if compat.is_cache(value):
                self.result.cache = value
                if self.record_kv and self._wrapped_cache is None:
                    self._wrap_update(value)

    def close(self) -> None:
        self._last_output = None
        self._close_cache()

    def _close_cache(self) -> None:
        """Undo the cache wrapping (the cache object is this call's own; nothing else is touched)."""
        if self._wrapped_cache is not None:
            # Drop the instance attribute so the class's own ``update`` is found again.
            self._wrapped_cache.__dict__.pop("update", None)
            self._wrapped_cache = None

    def finish(self) -> None:
        """Stop recording and let go of what was recorded (later forwards are ignored)."""
        self.close()
        self._finished = True
        self.result = NormalPass()

    def _wrap_update(self, cache: Any) -> None:
        # An instance attribute shadows the class method for this one cache object only; close()
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


class BlockHooks(GuardPart):
    """Hooks on decoder blocks that hand what they see to the recorder active in the caller's context.

    ``keep``: the blocks whose output is recorded; ``kwargs_from``: the first block whose call
    arguments are recorded (every block from there to the end); ``notify_from``: also report the
    outputs of every block from there on (to :attr:`Recorder.after_block`; not stored).
    """

    def __init__(self, layers: nn.ModuleList, keep: tuple[int, ...], kwargs_from: int, notify_from: Optional[int] = None,
                 chain_from: Optional[int] = None):
        self._active: contextvars.ContextVar[Optional[Recorder]] = contextvars.ContextVar("sasa_recorder", default=None)
        self._handles: list[Any] = []
        notified = set(range(notify_from, len(layers))) if notify_from is not None else set()
        if chain_from is not None:  # the outputs each next block's input is compared with
            notified |= set(range(chain_from, len(layers) - 1))
        for idx in sorted(set(keep) | notified):
            self._handles.append(layers[idx].register_forward_hook(self._output_hook(idx)))
        first_call = kwargs_from if chain_from is None else min(kwargs_from, chain_from + 1)
        for idx in range(first_call, len(layers)):
            self._handles.append(layers[idx].register_forward_pre_hook(self._call_hook(idx), with_kwargs=True))

    @contextlib.contextmanager
    def recording(self, recorder: Recorder) -> Iterator[Recorder]:
        """Route this context's block calls to ``recorder`` for the ``with`` block."""
        token = self._active.set(recorder)
        try:
            yield recorder
        finally:
            self._active.reset(token)
            recorder.close()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _output_hook(self, idx: int) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            recorder = self._active.get()
            if recorder is not None:
                recorder.on_output(idx, output)

        return hook

    def _call_hook(self, idx: int) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            recorder = self._active.get()
            if recorder is not None:
                recorder.on_call(idx, args, kwargs)

        return hook


class Capture:
    """Observe one forward: ``with Capture(layers, keep, kwargs_from, record_kv) as cap: model(...)``.

    Installs its own hooks for the ``with`` block; ``cap.result`` is the :class:`NormalPass`.
    Only the forward run in the same context (thread) as the ``with`` block is recorded.
    """

    def __init__(self, layers: nn.ModuleList, keep: tuple[int, ...], kwargs_from: int, record_kv: bool,
                 chain_from: Optional[int] = None, chain_positions: Optional[Tensor] = None):
        self._layers = layers
        self._recorder = Recorder(tuple(keep), kwargs_from, record_kv, chain_from=chain_from,
                                  chain_positions=chain_positions)
        self._stack: Optional[contextlib.ExitStack] = None

    @property
    def result(self) -> NormalPass:
        return self._recorder.result

    def __enter__(self) -> "Capture":
        stack = contextlib.ExitStack()
        hooks = BlockHooks(self._layers, self._recorder.keep, self._recorder.kwargs_from,
                           chain_from=self._recorder.chain_from)
        stack.callback(hooks.remove)
        stack.enter_context(hooks.recording(self._recorder))
        self._stack = stack
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None


def _same_states(given: Any, previous: Any, positions: Optional[Tensor]) -> bool:
    if given is previous:
        return True
    if not isinstance(given, Tensor) or not isinstance(previous, Tensor) or given.shape != previous.shape:
        return False
    previous = previous.to(given.device)  # moved (device_map), not changed
    if positions is not None and given.dim() == 3:
        rows = torch.arange(given.shape[0], device=given.device)
        positions = positions.to(given.device)
        return bool(torch.equal(given[rows, positions], previous[rows, positions]))
    return bool(torch.equal(given, previous))


def check_observed(normal: NormalPass, safety_layer: int, fused_layer: int, scope: str, num_layers: int, length: int) -> None:
    """The forward that was observed must be the whole prompt's, with everything the augmented
    pass needs; anything else would score the wrong thing (a prefill in chunks, a skipped block)."""
    s, f = safety_layer, fused_layer
    if s not in normal.hidden or f not in normal.hidden:
        raise RuntimeError("the model's forward did not run the safety and fused decoder blocks")
    if normal.hidden[s].shape[-2] != length:
        raise RuntimeError(f"the observed forward covered {normal.hidden[s].shape[-2]} positions, the prompt has {length}")
    if normal.unchained is not None:
        j = normal.unchained
        raise RuntimeError(
            f"the model changed the hidden states between decoder blocks {j - 1} and {j}, outside the blocks (e.g. "
            f"Qwen3-VL adds its DeepStack visual features to image positions after its first blocks"
            + (", here at a row's last prompt token" if scope == "last" else "")
            + f"); SASA re-runs blocks {s + 1}..{num_layers - 1} back to back and would miss that. Use a "
            f"safety_layer of at least {j}"
        )
    run = [i for i in range(s + 1, num_layers) if i not in normal.skipped]
    missing = [i for i in run if i not in normal.block_kwargs]
    if scope == "last":
        missing += [i for i in run if i not in normal.kv and i not in missing]
    if missing:
        raise RuntimeError(f"the observed forward left nothing recorded for decoder block(s) {sorted(set(missing))}")
