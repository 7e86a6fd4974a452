"""The ``torchrun`` environment: which process this is, the process group, rank-0 output, failures.

``torchrun --nproc-per-node N`` starts ``N`` copies of a program with ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. :func:`init_process_group` joins them with a
timeout on every collective (gloo on CPU, NCCL on CUDA), so a rank that stops answering makes the
others fail after that long instead of waiting forever. Every rank computes; only rank 0 writes
files and prints (:func:`is_rank_zero`, :func:`rank_zero_print`).

A failure on one rank is reported once, by the first rank that fails (:func:`claim_report`, through
the process group's key-value store, which outlives a failed rank); the other ranks fail too (their
next collective finds a peer gone, or times out) and exit non-zero without a second message.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from dataclasses import dataclass
from typing import Any, Optional

import torch

#: Default seconds a collective may wait for the other ranks (loading a large checkpoint can keep
#: one rank busy for minutes while the others already wait at a barrier).
DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class TorchrunEnv:
    """What ``torchrun`` told this process."""

    rank: int
    local_rank: int
    world_size: int


def torchrun_env() -> Optional[TorchrunEnv]:
    """This process's ``torchrun`` coordinates, or ``None`` when not started by ``torchrun`` (or a
    launcher that sets the same variables)."""
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError):
        return None
    if world < 1 or not 0 <= rank < world or "MASTER_ADDR" not in os.environ:
        return None
    return TorchrunEnv(rank, local, world)


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def is_initialized() -> bool:
    return torch.distributed.is_available() and _dist().is_initialized()


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return _dist().get_rank() if is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 outside a process group)."""
    return _dist().get_world_size() if is_initialized() else 1


def is_rank_zero() -> bool:
    """Whether this process writes files and prints (rank 0, or the only process)."""
    return rank() == 0


def rank_zero_print(*args: Any, **kwargs: Any) -> None:
    """``print`` on rank 0 only (every process outside a process group)."""
    if is_rank_zero():
        print(*args, **kwargs)


def default_backend(device_type: str) -> str:
    return "nccl" if device_type == "cuda" else "gloo"


def init_process_group(timeout_s: float = DEFAULT_TIMEOUT_S, backend: Optional[str] = None) -> TorchrunEnv:
    """Join the ``torchrun`` processes, every collective bounded by ``timeout_s`` seconds.

    ``backend`` defaults to NCCL when CUDA is available (each rank on ``cuda:LOCAL_RANK``), else
    gloo. Idempotent: an already initialized process group is kept (its own timeout applies).
    transformers' ``from_pretrained(tp_plan=...)`` uses the group made here.

    Raises:
        RuntimeError: not started by ``torchrun`` (no ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``).
        ValueError: ``timeout_s`` is not a positive number.
    """
    env = torchrun_env()
    if env is None:
        raise RuntimeError(
            "not started by torchrun (RANK, WORLD_SIZE and MASTER_ADDR are not set): run e.g. "
            "`torchrun --nproc-per-node 2 your_script.py`"
        )
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
        raise ValueError(f"timeout_s: expected a positive number of seconds, got {timeout_s!r}")
    if is_initialized():
        return env
    dist = _dist()
    if backend is None:
        backend = default_backend("cuda" if torch.cuda.is_available() else "cpu")
    kwargs: dict[str, Any] = {}
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
        kwargs["device_id"] = torch.device("cuda", env.local_rank)
    dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size,
                            timeout=dt.timedelta(seconds=float(timeout_s)), **kwargs)
    return env


def destroy_process_group() -> None:
    if is_initialized():
        _dist().destroy_process_group()


def claim_report(key: str = "sasa/failure") -> bool:
    """Whether this rank is the first to claim ``key`` (then it reports a failure; the others stay quiet).

    The claim is an atomic compare-and-set in the process group's key-value store (run by the
    ``torchrun`` agent, so it outlives a failed rank). Outside a process group, or when the store
    cannot be reached, every caller may report."""
    if not is_initialized() or world_size() == 1:
        return True
    token = str(rank())
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        store = _get_default_store()
        return store.compare_set(key, "", token).decode() == token
    except Exception:  # noqa: BLE001 - a lost store must not hide the error: report it
        return True


def is_peer_failure(err: BaseException) -> bool:
    """Whether ``err`` is a collective that failed because another rank failed, left or timed out."""
    dist_error = getattr(torch.distributed, "DistError", None)
    if dist_error is not None and isinstance(err, dist_error):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(
        marker in text for marker in ("connection closed by peer", "connection reset", "timed out", "gloo", "nccl")
    )


def describe_rank() -> str:
    """`` (rank r of n)`` inside a process group of several ranks, else ``""``."""
    return f" (rank {rank()} of {world_size()})" if is_initialized() and world_size() > 1 else ""


def print_error(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
