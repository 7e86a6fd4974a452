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


def pytest_collection_modifyitems(config, items):
    """Without a GPU, the CUDA-marked tests (about 1,500 parametrizations) are deselected as one
    group with one reason line, instead of a screen of skips; gpu_check.sh runs them on a GPU."""
    if torch.cuda.is_available() or config.getoption("-m"):
        return
    cuda = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not cuda:
        return
    items[:] = [item for item in items if item.get_closest_marker("cuda") is None]
    config.hook.pytest_deselected(items=cuda)
    config._sasa_cuda_deselected = len(cuda)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    count = getattr(config, "_sasa_cuda_deselected", 0)
    if count:
        terminalreporter.write_line(
            f"sasa: {count} CUDA tests not run: no CUDA device here (benchmarks/gpu_check.sh runs them on a GPU)"
        )
