"""Guarding models that do not fit one device: tensor parallel under ``torchrun``, or a ``device_map``.

Tensor parallel (transformers' own plan, ``tp_plan="auto"``; gloo on CPU, NCCL on GPUs)::

    # torchrun --nproc-per-node 2 serve.py
    import sasa, sasa.distributed as sd
    sd.init_process_group(timeout_s=600)           # every collective fails after 600 s, never hangs
    model = sd.load_pretrained("model_dir", placement=sd.Placement(tensor_parallel=True))
    guard = sasa.apply_sasa(model, probe="probe_dir", tokenizer=tokenizer)
    out = guard.generate(**guard.encode(prompts), max_new_tokens=64)   # every rank, the same inputs
    sd.rank_zero_print(out.flagged)

Layer placement (accelerate)::

    model = sd.load_pretrained("model_dir", placement=sd.Placement(device_map="auto", max_memory={0: "20GiB", "cpu": "64GiB"}))
    guard = sasa.apply_sasa(model, probe="probe_dir", tokenizer=tokenizer)

The guard itself needs nothing else: :func:`sasa.apply_sasa` recognises either kind of model
(see :mod:`sasa.distributed.tensor_parallel` and :mod:`sasa.distributed.placement` for what it does there).
The ``sasa`` command line does the same with ``--tp`` (or under ``torchrun`` with several
processes) and ``--device-map``.
"""

from __future__ import annotations

from sasa.distributed.env import (
    DEFAULT_TIMEOUT_S,
    TorchrunEnv,
    destroy_process_group,
    init_process_group,
    is_rank_zero,
    rank,
    rank_zero_print,
    torchrun_env,
    world_size,
)
from sasa.distributed.load import Placement, current_placement, load_pretrained, parse_max_memory
from sasa.distributed.tensor_parallel import is_dtensor, tensor_parallel_group

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "Placement",
    "TorchrunEnv",
    "current_placement",
    "destroy_process_group",
    "init_process_group",
    "is_dtensor",
    "is_rank_zero",
    "load_pretrained",
    "parse_max_memory",
    "rank",
    "rank_zero_print",
    "tensor_parallel_group",
    "torchrun_env",
    "world_size",
]
