"""Shared test set-up.

Triton kernels run on CPU tensors only under the interpreter, and triton reads TRITON_INTERPRET
when a kernel is defined, so it is set here before anything imports sasa_kernels. On a machine
with a GPU it is left alone so the compiled kernels are tested (benchmarks/gpu_check.sh).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tests.numerics import poisoned_outputs  # noqa: E402,F401  (fixture; imported after the env is set)
