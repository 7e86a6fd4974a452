"""The benchmark scripts import their helpers by path: put ``benchmarks/`` (and, from a plain
checkout, the packages) on ``sys.path`` for these tests."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"

if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
if importlib.util.find_spec("sasa_kernels") is None:
    sys.path.insert(0, str(ROOT))
if importlib.util.find_spec("sasa") is None:
    sys.path.insert(0, str(ROOT / "python"))
