"""Triton kernels behind the ``triton`` backend (:mod:`sasa_kernels.backends.triton_backend`).

Importing this package needs ``triton``. Kernels are compiled for the GPU, or built for the Triton
interpreter when ``TRITON_INTERPRET=1`` was set before this package was imported (Triton reads it
when a kernel is decorated); :data:`INTERPRETED` says which.
"""

from __future__ import annotations

from .probe import ProbeConfig, launch_probe, probe_config
from .project import INTERPRETED, ProjectConfig, is_interpreted, launch_project, project_config

__all__ = [
    "INTERPRETED",
    "ProbeConfig",
    "ProjectConfig",
    "is_interpreted",
    "launch_probe",
    "launch_project",
    "probe_config",
    "project_config",
]
