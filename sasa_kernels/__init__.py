"""sasa-kernels: fused kernels for Self-Aware Safety Augmentation (SASA).

Public API::

    import sasa_kernels as sk
    sk.project(hs, hf, mode="replace", coef=1.0, eps=1e-6)
    sk.project_rmsnorm(hs, hf, norm_weight, ...)
    sk.probe(hidden, weight, bias, positions=..., norm_weight=...)
    sk.reference            # the same math in plain PyTorch (the truth in tests)
    sk.backends("cuda")     # usable backends, in dispatch order
    with sk.use_backend("torch"): ...

The three functions are also the custom ops ``torch.ops.sasa.project``,
``torch.ops.sasa.project_rmsnorm`` and ``torch.ops.sasa.probe``. This package does not depend on
``transformers``.
"""

from __future__ import annotations

from . import _ops  # noqa: F401  (registers torch.ops.sasa.*)
from . import reference
from ._api import probe, project, project_rmsnorm
from ._dispatch import BackendUnavailableError, backends, forced_backend, known_backends, use_backend
from ._version import __version__
from .backends import register_builtin_backends

register_builtin_backends()

__all__ = [
    "project",
    "project_rmsnorm",
    "probe",
    "reference",
    "backends",
    "use_backend",
    "forced_backend",
    "known_backends",
    "BackendUnavailableError",
    "__version__",
]
