"""Backends: the same kernels for different devices. See :mod:`.base` for the contract."""

from __future__ import annotations

import importlib
import logging


logger = logging.getLogger("sasa_kernels")

# Optional backends: module path -> class name. A module that fails to import (triton missing,
# extension not built) simply leaves its backend unregistered.
_OPTIONAL = {
    "triton": ("sasa_kernels.backends.triton_backend", "TritonBackend"),
    "compiled": ("sasa_kernels.backends.compiled", "register"),
}


def register_builtin_backends() -> None:
    # Imported here: _dispatch imports .base from this package, so a top-level import would cycle.
    from .._dispatch import register_backend
    from .torch_backend import TorchBackend

    register_backend(TorchBackend())
    for key, (module_name, attr) in _OPTIONAL.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # optional dependency or module absent
            logger.debug("sasa_kernels: %s backend not loaded: %s", key, exc)
            continue
        obj = getattr(module, attr)
        if isinstance(obj, type):
            register_backend(obj())
        else:
            obj()  # a registration function (may register several backends, or none)
