"""What the guard needs to run on a tensor-parallel model (transformers' ``tp_plan="auto"``).

Under tensor parallelism transformers stores the sharded weights (attention and MLP projections,
embeddings, output head) as DTensors, while the residual stream between decoder blocks, and so
``H_s``, ``H_f``, the block arguments and the final state, are plain tensors that every rank of
the tensor-parallel group holds in full (replicated): each block ends in an all-reduce. The guard
therefore computes on plain tensors everywhere, and needs exactly two collectives of its own:

- once, when the guard is applied: folding a logits probe into hidden space needs the whole output
  head, which is sharded over the vocabulary. :func:`replicated` finishes that product with one
  all-reduce of the ``[C, d]`` result (no rank ever holds the whole head);
- once per scored batch: :class:`ScoreAgreement` all-reduces the ``[B, C]`` probabilities with MAX,
  so every rank decides on the same scores. The ranks compute identical scores in practice; the
  agreement makes it a guarantee, because ranks that disagreed about a row would run different
  ``generate`` loops and deadlock in the model's own collectives. MAX keeps the guard fail-closed:
  a row flagged on any rank is flagged on all, and a NaN anywhere stays NaN.

Reading a few values of a sharded weight (the probe fingerprint) happens under
:func:`reading_sharded_weights`, where DTensor treats plain tensors as replicated.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import torch
from torch import Tensor, nn

try:  # torch.distributed is optional in some torch builds
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover - a torch without distributed support
    dist = None  # type: ignore[assignment]
    DTensor = None  # type: ignore[assignment,misc]


def is_dtensor(value: Any) -> bool:
    """Whether ``value`` is a DTensor (a sharded or replicated tensor-parallel parameter)."""
    return DTensor is not None and isinstance(value, DTensor)


def replicated(value: Tensor) -> Tensor:
    """``value`` as a plain tensor holding the whole (global) value on every rank.

    A DTensor is completed with its own collective (all-reduce for a partial sum, all-gather for a
    shard, none when already replicated); a plain tensor is returned as it is."""
    return value.full_tensor() if is_dtensor(value) else value


@contextlib.contextmanager
def reading_sharded_weights() -> Iterator[None]:
    """Let plain tensors meet DTensors in the ``with`` block (they count as replicated).

    Needed where sasa reads model weights outside the model's forward (the fingerprint's sampled
    values, the probe fold). Without tensor parallelism it changes nothing."""
    try:
        from torch.distributed.tensor.experimental import implicit_replication
    except ImportError:  # pragma: no cover - torch without DTensor: nothing can be sharded
        yield
        return
    with implicit_replication():
        yield


def tensor_parallel_group(model: nn.Module) -> Optional[Any]:
    """The process group over which ``model``'s weights are sharded, or ``None`` (not tensor-parallel).

    Read off the parameters themselves (a DTensor knows its device mesh), so it does not depend on
    the attribute names a transformers release uses for its mesh."""
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    for param in model.parameters():
        if not is_dtensor(param):
            continue
        mesh = param.device_mesh
        if mesh.ndim == 1:
            group = mesh.get_group()
        else:
            names = mesh.mesh_dim_names or ()
            dim = names.index("tp") if "tp" in names else max(range(mesh.ndim), key=mesh.size)
            group = mesh.get_group(dim)
        return group if dist.get_world_size(group) > 1 else None
    return None


class ScoreAgreement:
    """One MAX all-reduce of the probabilities over the tensor-parallel group (see the module docstring).

    A no-op (returns ``probs`` itself) for a model that is not tensor-parallel."""

    def __init__(self, group: Optional[Any]):
        self.group = group

    @classmethod
    def for_model(cls, model: nn.Module) -> "ScoreAgreement":
        return cls(tensor_parallel_group(model))

    @property
    def active(self) -> bool:
        return self.group is not None

    def __call__(self, probs: Tensor) -> Tensor:
        if self.group is None:
            return probs
        # NaN (scoring failed) must survive the reduction, whatever MAX does with NaN: it travels
        # as +inf, which no probability equals, and comes back as NaN.
        values = torch.nan_to_num(probs.detach().float(), nan=float("inf"))
        dist.all_reduce(values, op=dist.ReduceOp.MAX, group=self.group)
        return values.masked_fill(torch.isinf(values), float("nan"))


def check_replicated_residual(decoder: nn.Module, safety_layer: int) -> None:
    """Refuse a plan that distributes the norms on the residual stream (sequence-parallel plans do):
    the guard reads ``H_s``/``H_f`` and the final state as whole, plain tensors, and runs these
    norms itself (fused into its kernels), so they must be plain, replicated weights."""
    norms = [("the final norm", getattr(decoder, "norm", None))]
    if safety_layer + 1 < len(decoder.layers):
        norms.append((f"block {safety_layer + 1}'s input norm", getattr(decoder.layers[safety_layer + 1], "input_layernorm", None)))
    for what, norm in norms:
        if is_dtensor(getattr(norm, "weight", None)):
            raise ValueError(
                f"model: its tensor-parallel plan distributes {what} (a DTensor weight); sasa supports plans that "
                "leave the residual stream and its norms plain and replicated on every rank, such as the models' own "
                "tp_plan='auto' (sequence-parallel plans are not supported)"
            )


def flat_samples(weight: Tensor, positions: list[int]) -> list[float]:
    """``weight.reshape(-1)[positions]`` as floats, for a plain tensor or a DTensor.

    For a DTensor sharded over a 1-D mesh (what ``tp_plan="auto"`` makes), evenly or not (a
    vocabulary of 32001 rows over 2 ranks), each rank reads the positions that fall in its own shard
    and one all-reduce of ``2 * len(positions)`` numbers completes them: nothing is gathered. Other
    meshes fall back to gathering the whole tensor (``full_tensor``)."""
    if not is_dtensor(weight):
        index = torch.tensor(positions, dtype=torch.long, device=weight.device)
        return [float(v) for v in weight.reshape(-1).index_select(0, index).to(torch.float32).cpu()]
    mesh = weight.device_mesh
    if mesh.ndim != 1:
        return flat_samples(weight.full_tensor(), positions)
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    local_shape, offset = compute_local_shape_and_global_offset(weight.shape, mesh, weight.placements)
    local = weight.to_local()
    found = torch.zeros(2, len(positions), dtype=torch.float64, device=local.device)  # [values, owners]
    for k, flat in enumerate(positions):
        where = []
        for size in reversed(weight.shape):
            where.append(flat % size)
            flat //= size
        rel = [i - o for i, o in zip(reversed(where), offset)]
        if all(0 <= r < n for r, n in zip(rel, local_shape)):
            found[0, k] = float(local[tuple(rel)])
            found[1, k] = 1.0
    dist.all_reduce(found, group=mesh.get_group())
    # A replicated position is held by several ranks: each added the same value.
    return [float(v / n) for v, n in zip(found[0].tolist(), found[1].tolist())]
