"""Which backend runs a call: availability per device, preference order, and forcing.

Preference order per device type (first available one that supports the dtype wins):

- ``cuda``: ``triton``, ``cuda``, ``torch``
- ``cpu``:  ``cpp``, ``triton`` (only under ``TRITON_INTERPRET=1``), ``torch``

``SASA_BACKEND=<name>`` in the environment, or the context manager :func:`use_backend`, forces one
backend; forcing one that cannot run the call raises :class:`BackendUnavailableError` listing the
ones that can. Automatic choice falls back quietly, with one debug log line per reason.

:func:`select` runs on every call, so its answer is cached per ``(device, dtype, forced
backend)``: the forcing context and ``SASA_BACKEND`` are read on each call (a change takes effect
at once) and the cache is cleared whenever a backend is registered.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from typing import Iterator, Optional, Union

import torch

from .backends.base import Backend

logger = logging.getLogger("sasa_kernels")

_PREFERENCE = {
    "cuda": ("triton", "cuda", "torch"),
    "cpu": ("cpp", "triton", "torch"),
}
_OTHER_DEVICE_ORDER = ("torch",)

_registry: dict[str, Backend] = {}
_forced: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("sasa_backend", default=None)
_logged: set[tuple[str, str, str]] = set()
_selected: dict[tuple[torch.device, torch.dtype, Optional[str]], Backend] = {}
#: [the backend :func:`fast_cpu_backend` offers, or None] once found; emptied on registration.
_fast_cpu: list[Optional[Backend]] = []
#: The dtypes the fast entries accept (is_kernel_dtype in csrc/sasa_dtypes.h).
_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# os.environ.get encodes the key and decodes the value on every call (0.6 us here, as long as a
# small kernel); os.environ keeps its contents in this dict (CPython, PyPy), which setting or
# deleting os.environ["SASA_BACKEND"] updates, so reading it directly sees every change.
_ENVIRON = getattr(os.environ, "_data", None)
_ENV_KEY = os.environ.encodekey("SASA_BACKEND") if _ENVIRON is not None else None


def _environment_backend() -> Optional[str]:
    if _ENVIRON is None:
        return os.environ.get("SASA_BACKEND") or None
    raw = _ENVIRON.get(_ENV_KEY)
    return (os.environ.decodevalue(raw) or None) if raw is not None else None


class BackendUnavailableError(RuntimeError):
    """A forced backend cannot run on this device or dtype."""


def register_backend(backend: Backend) -> None:
    """Make ``backend`` known to dispatch (a later registration with the same name replaces it)."""
    _registry[backend.name] = backend
    _selected.clear()
    _fast_cpu.clear()


def known_backends() -> tuple[str, ...]:
    """Every backend name dispatch knows, whether or not it is usable here."""
    return tuple(sorted(set(_registry) | {n for order in _PREFERENCE.values() for n in order}))


def _device_type(device: Union[str, torch.device]) -> str:
    if isinstance(device, torch.device):
        return device.type
    if isinstance(device, str):
        return torch.device(device).type
    raise TypeError(f"device: expected a str or torch.device, got {type(device).__name__}")


def _reason(name: str, device_type: str) -> Optional[str]:
    backend = _registry.get(name)
    if backend is None:
        return "not installed in this build"
    return backend.unavailable_reason(device_type)


def backends(device: Union[str, torch.device] = "cpu") -> list[str]:
    """The backends usable on ``device``, in the order automatic dispatch prefers them."""
    device_type = _device_type(device)
    order = _PREFERENCE.get(device_type, _OTHER_DEVICE_ORDER)
    return [name for name in order if _reason(name, device_type) is None]


def forced_backend() -> Optional[str]:
    """The backend forced by :func:`use_backend` or, failing that, ``SASA_BACKEND`` (else ``None``)."""
    name = _forced.get()
    return _environment_backend() if name is None else name


def _check_name(name: str, source: str) -> None:
    if name not in known_backends():
        raise ValueError(f"{source}: unknown backend {name!r}; known backends: {list(known_backends())}")


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force backend ``name`` for calls made inside the ``with`` block (this thread/task only)."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a backend name (str), got {type(name).__name__}")
    _check_name(name, "name")
    token = _forced.set(name)
    try:
        yield
    finally:
        _forced.reset(token)


def select(device: torch.device, dtype: torch.dtype) -> Backend:
    """The backend that runs a call with inputs on ``device`` of ``dtype`` (cached)."""
    name = _forced.get()
    if name is None:
        name = _environment_backend()
    # Keyed on the device object: reading device.type would cost as much as the lookup.
    key = (device, dtype, name)
    backend = _selected.get(key)
    if backend is None:
        backend = _selected[key] = _resolve(device.type, dtype, name)
    return backend


def fast_cpu_backend() -> Optional[Backend]:
    """The backend whose fast CPU entries (``project_if_plain``, ...: :class:`.backends.base.Backend`)
    the public functions may try first: the one :func:`select` picks for every float16, bfloat16
    and float32 CPU call under the current forcing, when it has them; else ``None``.

    The entries decline everything but plain CPU tensors of those dtypes, so a call they run is one
    :func:`select` would have sent to this backend.
    """
    name = _forced.get()
    if name is None:
        name = _environment_backend()
    if not _fast_cpu:
        _fast_cpu.append(_find_fast_cpu())
    backend = _fast_cpu[0]
    if backend is None or (name is not None and name != backend.name):
        return None
    return backend


def _find_fast_cpu() -> Optional[Backend]:
    for backend in _registry.values():
        if backend.project_if_plain is None:
            continue
        try:
            if all(_resolve("cpu", dtype, None) is backend for dtype in _KERNEL_DTYPES):
                return backend
        except BackendUnavailableError:
            pass
    return None


def _resolve(device_type: str, dtype: torch.dtype, name: Optional[str]) -> Backend:
    if name is not None:
        _check_name(name, "SASA_BACKEND" if _forced.get() is None else "use_backend")
        reason = _reason(name, device_type)
        if reason is None and dtype not in _registry[name].dtypes:
            reason = f"it does not support {dtype}"
        if reason is not None:
            raise BackendUnavailableError(
                f"backend {name!r} was forced but cannot run on {device_type} with {dtype}: {reason}. "
                f"Available on {device_type}: {backends(device_type)}"
            )
        return _registry[name]
    order = _PREFERENCE.get(device_type, _OTHER_DEVICE_ORDER)
    for candidate in order:
        reason = _reason(candidate, device_type)
        if reason is None and dtype not in _registry[candidate].dtypes:
            reason = f"does not support {dtype}"
        if reason is None:
            return _registry[candidate]
        key = (candidate, device_type, reason)
        if key not in _logged:
            _logged.add(key)
            logger.debug("sasa_kernels: skipping backend %r on %s: %s", candidate, device_type, reason)
    raise BackendUnavailableError(f"no backend can run on {device_type} with {dtype}")  # torch always can
