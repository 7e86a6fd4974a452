"""The compiled backends: ``cpp`` (C++ CPU kernels) and ``cuda`` (CUDA kernels).

Both run the out-variant ops that the extension ``sasa_kernels._C`` registers (``csrc/ops.cpp``)::

    torch.ops.sasa._compiled_project(hs, hf, out, a, b, eps)
    torch.ops.sasa._compiled_project_rmsnorm(hs, hf, norm_weight, out, out_normed, a, b, eps,
                                             norm_eps, weight_offset)
    torch.ops.sasa._compiled_probe(hidden, positions, weight, bias, norm_weight, out, norm_eps,
                                   weight_offset, sigmoid)

through the extension's direct entry points ``_C.project`` / ``_C.project_rmsnorm`` / ``_C.probe``
(``csrc/entry.h``: they make the ``[N, d]`` views in C++ and call the same ops through the C++
dispatcher, which sends each to the CPU or the CUDA kernel by the tensors' device; a plain CPU
call goes to the CPU kernel directly). ``cpp`` also has the fast entries ``project_if_plain`` /
``project_rmsnorm_if_plain`` (see :class:`.base.Backend`). They are
distinct from the public ``torch.ops.sasa.project`` etc., which choose a backend at call time.

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
    ``torch_version`` (the torch it was compiled against), ``build_system``, ``cpu_capability``
    (the instruction set the CPU kernels run with: ``avx512_bf16``, ``avx512``, ``avx2`` or
    ``portable``; set a lower one with ``SASA_CPU_CAPABILITY`` before the extension loads).
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

    def __init__(self, extension) -> None:
        # The extension's entry points implement the backend contract themselves (csrc/entry.h):
        # binding them as the methods saves a Python call per op.
        self.project = extension.project
        self.project_rmsnorm = extension.project_rmsnorm
        self.probe = extension.probe

    def unavailable_reason(self, device_type: str) -> Optional[str]:
        if device_type != self.device_type:
            return f"the {self.name} backend runs on {self.device_type} only"
        return None


class CppBackend(_CompiledBackend):
    """C++ CPU kernels (``csrc/cpu``): AVX-512 / AVX2 / portable, parallel over rows."""

    name = "cpp"
    device_type = "cpu"

    def __init__(self, extension) -> None:
        super().__init__(extension)
        self.project_if_plain = extension.project_if_plain
        self.project_rmsnorm_if_plain = extension.project_rmsnorm_if_plain


class CudaBackend(_CompiledBackend):
    """CUDA kernels (``csrc/cuda``): 16-byte loads, a warp or a block per row."""

    name = "cuda"
    device_type = "cuda"

    def unavailable_reason(self, device_type: str) -> Optional[str]:
        reason = super().unavailable_reason(device_type)
        if reason is None and not torch.cuda.is_available():
            reason = "no CUDA device is available"
        return reason


def _load() -> Optional[tuple[object, dict]]:
    """Import the extension if it is present and matches the running torch: (module, build info)."""
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
    return module, info


def register() -> None:
    """Register the compiled backends that the extension was built with (none if it is absent)."""
    global _build_info
    from .._dispatch import register_backend

    try:
        loaded = _load()
    except Exception as exc:  # noqa: BLE001 - importing sasa_kernels must never fail here
        warnings.warn(f"sasa_kernels: the compiled backends are off: {type(exc).__name__}: {exc}", RuntimeWarning)
        return
    if loaded is None:
        return
    module, info = loaded
    _build_info = info
    built = set(info.get("backends", ()))
    if "cpp" in built:
        register_backend(CppBackend(module))
    if "cuda" in built:
        register_backend(CudaBackend(module))
    logger.debug("sasa_kernels: compiled backends registered: %s (%s)", sorted(built), info)
