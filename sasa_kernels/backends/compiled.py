"""The compiled backends: ``cpp`` (C++ CPU kernels) and ``cuda`` (CUDA kernels).

Both call the out-variant ops that the extension ``sasa_kernels._C`` registers (``csrc/ops.cpp``)::

    torch.ops.sasa._compiled_project(hs, hf, out, a, b, eps)
    torch.ops.sasa._compiled_project_rmsnorm(hs, hf, norm_weight, out, out_normed, a, b, eps,
                                             norm_eps, weight_offset)
    torch.ops.sasa._compiled_probe(hidden, positions, weight, bias, norm_weight, out, norm_eps,
                                   weight_offset, sigmoid)

The dispatcher sends each to the CPU or the CUDA kernel by the tensors' device. They are distinct
from the public ``torch.ops.sasa.project`` etc., which choose a backend at call time.

:func:`register` (called by :func:`sasa_kernels.backends.register_builtin_backends`) registers
whichever backends the extension was built with. It registers nothing when:

- the extension was not built (``SASA_SKIP_BUILD=1``, no compiler, failed build): a debug log;
- it was built against another torch than the one running (read from the file before loading it,
  since loading a mismatched extension can crash) or fails to load (undefined symbol, ...): a
  ``RuntimeWarning`` naming both torch versions.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import mmap
import re
import warnings
from typing import Optional

import torch

from .base import Backend

logger = logging.getLogger("sasa_kernels")

_EXTENSION = "sasa_kernels._C"
_MARKER = re.compile(rb"SASA_BUILT_WITH_TORCH=([^\n\x00]{1,100})\n")
_REBUILD_HINT = "rebuild it against the installed torch: pip install --no-build-isolation -e ."

_build_info: Optional[dict] = None


def build_info() -> Optional[dict]:
    """What the loaded extension was built with (``None`` when it is not loaded).

    Keys: ``backends`` (list of names), ``compiler``, ``cuda_version``, ``cuda_archs``,
    ``torch_version`` (the torch it was compiled against), ``build_system``.
    """
    return None if _build_info is None else dict(_build_info)


def extension_path() -> Optional[str]:
    """The file of ``sasa_kernels._C`` if one is installed (without loading it), else ``None``."""
    try:
        spec = importlib.util.find_spec(_EXTENSION)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.has_location:
        return None
    return spec.origin


def built_torch_version(path: str) -> Optional[str]:
    """The torch version recorded in the extension file at ``path`` (``None`` if not found)."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            m = _MARKER.search(data)
            return None if m is None else bytes(m.group(1)).decode("utf-8", "replace")
    except (OSError, ValueError):
        return None


class _CompiledBackend(Backend):
    dtypes = frozenset({torch.float16, torch.bfloat16, torch.float32})
    device_type = ""

    def __init__(self) -> None:
        ops = torch.ops.sasa
        self._project = ops._compiled_project.default
        self._project_rmsnorm = ops._compiled_project_rmsnorm.default
        self._probe = ops._compiled_probe.default

    def unavailable_reason(self, device_type: str) -> Optional[str]:
        if device_type != self.device_type:
            return f"the {self.name} backend runs on {self.device_type} only"
        return None

    def project(self, hs, hf, out, a, b, eps):
        self._project(hs, hf, out, a, b, eps)

    def project_rmsnorm(self, hs, hf, norm_weight, out, out_normed, a, b, eps, norm_eps, weight_offset):
        self._project_rmsnorm(hs, hf, norm_weight, out, out_normed, a, b, eps, norm_eps, weight_offset)

    def probe(self, hidden, positions, weight, bias, norm_weight, out, norm_eps, weight_offset, sigmoid):
        self._probe(hidden, positions, weight, bias, norm_weight, out, norm_eps, weight_offset, sigmoid)


class CppBackend(_CompiledBackend):
    """C++ CPU kernels (``csrc/cpu``): vectorized, parallel over rows, fp32 accumulation."""

    name = "cpp"
    device_type = "cpu"


class CudaBackend(_CompiledBackend):
    """CUDA kernels (``csrc/cuda``): 16-byte loads, a warp or a block per row, fp32 accumulation."""

    name = "cuda"
    device_type = "cuda"

    def unavailable_reason(self, device_type: str) -> Optional[str]:
        reason = super().unavailable_reason(device_type)
        if reason is None and not torch.cuda.is_available():
            reason = "no CUDA device is available"
        return reason


def _load() -> Optional[dict]:
    """Import the extension if it is present and matches the running torch; its build info."""
    path = extension_path()
    if path is None:
        logger.debug("sasa_kernels: compiled backends not available: %s is not built", _EXTENSION)
        return None
    running = torch.__version__
    built = built_torch_version(path)
    if built is not None and built != running:
        warnings.warn(
            f"sasa_kernels: the compiled extension {path} was built against torch {built}, but torch "
            f"{running} is installed; not loading it (the compiled backends 'cpp'/'cuda' are off, the "
            f"pure-Python backends are used). To fix, {_REBUILD_HINT}",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    try:
        module = importlib.import_module(_EXTENSION)
        info = dict(module.build_info())
    except Exception as exc:  # noqa: BLE001 - undefined symbol, wrong ABI, missing library, ...
        warnings.warn(
            f"sasa_kernels: the compiled extension {path} (built against torch {built or 'unknown'}) "
            f"failed to load with torch {running}: {type(exc).__name__}: {exc}. The compiled backends "
            f"are off; the pure-Python backends are used. To fix, {_REBUILD_HINT}",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    if info.get("torch_version") != running:  # a build without the marker, say
        warnings.warn(
            f"sasa_kernels: the compiled extension {path} was built against torch "
            f"{info.get('torch_version')}, but torch {running} is installed; the compiled backends are "
            f"off. To fix, {_REBUILD_HINT}",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return info


def register() -> None:
    """Register the compiled backends that the extension was built with (none if it is absent)."""
    global _build_info
    from .._dispatch import register_backend

    try:
        info = _load()
    except Exception as exc:  # noqa: BLE001 - importing sasa_kernels must never fail here
        warnings.warn(f"sasa_kernels: the compiled backends are off: {type(exc).__name__}: {exc}", RuntimeWarning)
        return
    if info is None:
        return
    _build_info = info
    built = set(info.get("backends", ()))
    if "cpp" in built:
        register_backend(CppBackend())
    if "cuda" in built:
        register_backend(CudaBackend())
    logger.debug("sasa_kernels: compiled backends registered: %s (%s)", sorted(built), info)
