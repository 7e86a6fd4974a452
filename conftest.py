"""pytest set-up at the repository root: ``pytest --benchmark-only`` runs the benchmark suite.

A bare ``pytest`` collects ``tests/`` (``testpaths`` in ``pyproject.toml``), where
``--benchmark-only`` would skip every unit test one by one. With ``--benchmark-only`` and no paths
given, ``benchmarks/`` is collected instead (its ``test_bench_*.py``: kernels, host overhead and
the guard's end-to-end overhead). Paths given on the command line are always respected, so
``python -m pytest tests`` is unchanged. Standard library only: this file loads in every run.
"""

from pathlib import Path


def pytest_configure(config):
    if not config.getoption("benchmark_only", default=False):
        return
    if getattr(config, "args_source", None) is config.ArgsSource.TESTPATHS:
        config.args = [str(Path(__file__).resolve().parent / "benchmarks")]
