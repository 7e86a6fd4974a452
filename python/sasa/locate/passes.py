"""The forward passes of ``sasa locate``: one normal pass per batch serves every layer and every pair.

Each batch of manifest rows runs the model's own forward once, observed by
:class:`sasa.guard.capture.Capture` (every block's output kept, the block arguments and keys/values of
blocks ``min(s)+1..L-1`` recorded). From it come the last-token state ``H_i`` of every block, and
for each grid pair ``(s, f)`` one augmented pass (:class:`sasa.guard.augment.AugmentedPass`,
``scope="last"``): one token per row through blocks ``s+1..L-1``, read-only on the normal pass's
cache. The text-only twins of image rows get one more normal pass per batch (states only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from sasa.data.inputs import check_inputs, last_positions
from sasa.data.manifest import Example, batches, encode_batch
from sasa.guard.augment import AugmentedPass
from sasa.guard.capture import Capture
from sasa.hf import compat
from sasa.hf.families import Family

Pair = tuple[int, int]


@dataclass
class Collected:
    """What the passes left: row states, per-pair final states, and what it cost."""

    examples: list[Example]  # rows in the order processed (text rows first, then image rows)
    states: Tensor  # [N, L, d] float32: H after each block at each row's last prompt token
    grid_z: dict[Pair, Tensor]  # pair -> [N, d] final-normed augmented state (model dtype, CPU)
    twin_rows: list[int] = field(default_factory=list)  # indices into examples of rows with a twin
    twin_states: Optional[Tensor] = None  # [P, L, d] float32 states of those rows' text twins
    normal_passes: int = 0
    augmented_passes: int = 0  # one-token calls of AugmentedPass.run (one per pair per batch)
    augmented_block_calls: int = 0  # sum over those calls of the blocks each re-ran


class Passes:
    """Runs the passes for one model; ``pairs`` are the grid's ``(s, f)``."""

    def __init__(self, model: nn.Module, family: Family, pairs: Sequence[Pair], *, mode: str, coef: float,
                 eps: float):
        decoder = compat.find_decoder(model)
        if decoder is None or len(decoder.layers) == 0:
            raise ValueError(f"model: no decoder blocks found in this {type(model).__name__}")
        self.model = model
        self.layers: nn.ModuleList = decoder.layers
        self.norm: nn.Module = decoder.norm
        self.pairs = list(pairs)
        first = next(decoder.parameters())
        self.device, self.dtype = first.device, first.dtype
        self.pad_id = compat.generation_pad_id(model)
        self.logits_to_keep = compat.forward_accepts(model, "logits_to_keep")
        self.augment = {
            (s, f): AugmentedPass(self.layers, s, f, mode, coef, eps, family.norm_offset, family.llama_norm_numerics)
            for s, f in self.pairs
        }
        self.kwargs_from = min(s for s, _ in self.pairs) + 1 if self.pairs else len(self.layers)

    def _normal(self, inputs: dict[str, Any], *, grid: bool) -> tuple[Tensor, Tensor, Any]:
        """One observed forward: (last positions [B], last-token states [B, L, d] fp32, NormalPass)."""
        tensors = {k: v for k, v in inputs.items() if isinstance(v, Tensor)}
        batch, length = check_inputs(tensors, self.device, self.pad_id)
        last_pos = last_positions(inputs, batch, length, self.device)
        kwargs = dict(inputs)
        kwargs["use_cache"] = grid  # scope="last" reads the prefill's keys and values
        if self.logits_to_keep:
            kwargs["logits_to_keep"] = 1  # the normal pass's own logits are not needed
        num = len(self.layers)
        # Blocks run back to back from the first re-run block (the grid re-runs each row's last token,
        # scope="last"), and from block 0 on for the states: a block the model skips (Mllama's
        # cross-attention blocks on a prompt without an image) leaves the previous block's state.
        capture = Capture(self.layers, keep=tuple(range(num)), kwargs_from=self.kwargs_from if grid else num,
                          record_kv=grid, chain_from=0, chain_positions=last_pos)
        with capture:
            self.model(**kwargs)
            normal = capture.result
        for i in sorted(normal.skipped):
            normal.hidden.setdefault(i, normal.hidden[i - 1])
        missing = [i for i in range(num) if i not in normal.hidden]
        if missing:
            raise RuntimeError(f"sasa locate: the forward did not run decoder block(s) {missing}")
        changed = normal.unchained
        if grid and changed is not None and any(s < changed for s, _ in self.pairs):
            # (as the guard refuses: sasa.guard.capture.check_observed) the re-run of blocks s+1.. would miss it
            raise RuntimeError(
                f"sasa locate: the model changed the hidden states between decoder blocks {changed - 1} and "
                f"{changed}, outside the blocks, at a row's last prompt token (e.g. Qwen3-VL's DeepStack visual "
                f"features on a prompt ending in an image token), so pairs with a "
                f"safety block before {changed} cannot be re-run exactly; start the safety range at {changed}"
            )
        rows = torch.arange(batch, device=last_pos.device)
        states = torch.stack([normal.hidden[i][rows, last_pos] for i in range(num)], dim=1)
        return last_pos, states.float().cpu(), normal

    def run(self, processor: Any, examples: Sequence[Example], *, batch_size: int, raw_prompt: bool,
            progress: bool) -> Collected:
        from tqdm.auto import tqdm

        twins = [e for e in examples if e.image is not None and e.text_only is not None]
        ordered: list[Example] = []
        states: list[Tensor] = []
        grid: dict[Pair, list[Tensor]] = {pair: [] for pair in self.pairs}
        out = Collected(examples=ordered, states=torch.empty(0), grid_z={})
        num = len(self.layers)
        with torch.no_grad(), tqdm(total=len(examples) + len(twins), desc="sasa locate", unit="prompt",
                                   disable=not progress) as bar:
            for batch in batches(examples, batch_size):
                inputs = encode_batch(processor, batch, raw_prompt=raw_prompt, device=self.device)
                last_pos, batch_states, normal = self._normal(inputs, grid=bool(self.pairs))
                out.normal_passes += 1
                for pair, augment in self.augment.items():
                    h = augment.run(normal, "last", last_pos)  # [B, d] before the final norm
                    grid[pair].append(self.norm(h).cpu())
                    out.augmented_passes += 1
                    out.augmented_block_calls += num - 1 - pair[0]
                del normal
                ordered.extend(batch)
                states.append(batch_states)
                bar.update(len(batch))
            position = {id(e): i for i, e in enumerate(ordered)}
            twin_states: list[Tensor] = []
            for start in range(0, len(twins), batch_size):
                chunk = twins[start:start + batch_size]
                as_text = [Example(e.text_only, e.label, None, e.category, e.line) for e in chunk]
                inputs = encode_batch(processor, as_text, raw_prompt=raw_prompt, device=self.device)
                _, batch_states, _ = self._normal(inputs, grid=False)
                out.normal_passes += 1
                twin_states.append(batch_states)
                out.twin_rows.extend(position[id(e)] for e in chunk)
                bar.update(len(chunk))
        out.states = torch.cat(states)
        out.grid_z = {pair: torch.cat(rows) for pair, rows in grid.items()}
        out.twin_states = torch.cat(twin_states) if twin_states else None
        return out
