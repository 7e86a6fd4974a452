"""Set-up for the ``sasa`` tests: make ``sasa`` importable from a source checkout.

An installed package (``pip install -e .``) wins; otherwise ``python/`` (where ``sasa`` lives)
and the repository root (``sasa_kernels``) are put on ``sys.path``.
"""

import importlib.util
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if importlib.util.find_spec("sasa_kernels") is None:
    sys.path.insert(0, _ROOT)
if importlib.util.find_spec("sasa") is None:
    sys.path.insert(0, os.path.join(_ROOT, "python"))
