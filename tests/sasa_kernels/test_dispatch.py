"""Backend listing, preference order, forcing by environment and context manager, fallback log."""

from __future__ import annotations

import logging
import os

import pytest
import torch

import sasa_kernels as sk
from sasa_kernels import _dispatch


def test_torch_backend_is_always_last_resort_on_cpu():
    names = sk.backends("cpu")
    assert names[-1] == "torch"
    assert names == sk.backends(torch.device("cpu"))
    order = _dispatch._PREFERENCE["cpu"]
    assert names == [n for n in order if n in names]  # preference order kept


def test_no_cuda_backend_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert sk.backends("cuda") == []


def test_triton_on_cpu_only_under_the_interpreter():
    if "triton" not in _dispatch._registry:
        pytest.skip("triton is not installed")
    # Triton reads TRITON_INTERPRET when a kernel is defined, so the kernels module records it.
    from sasa_kernels.triton_kernels import INTERPRETED

    assert ("triton" in sk.backends("cpu")) == INTERPRETED
    assert INTERPRETED == (os.environ.get("TRITON_INTERPRET") == "1")  # tests/conftest.py sets it


def test_backends_rejects_bad_device():
    with pytest.raises(TypeError, match="device"):
        sk.backends(3)


def test_use_backend_forces_and_restores(monkeypatch):
    calls = []
    torch_backend = _dispatch._registry["torch"]
    original = torch_backend.project

    def spy(*args):
        calls.append("torch")
        return original(*args)

    monkeypatch.setattr(torch_backend, "project", spy)
    x = torch.randn(2, 4)
    with sk.use_backend("torch"):
        assert sk.forced_backend() == "torch"
        sk.project(x, x)
    assert calls == ["torch"]
    assert sk.forced_backend() == os.environ.get("SASA_BACKEND")


def test_environment_variable_forces(monkeypatch):
    monkeypatch.setenv("SASA_BACKEND", "torch")
    assert sk.forced_backend() == "torch"
    assert _dispatch.select(torch.device("cpu"), torch.float32).name == "torch"
    with sk.use_backend(sk.backends("cpu")[0]):  # the context manager wins over the environment
        assert sk.forced_backend() == sk.backends("cpu")[0]


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="unknown backend 'fast'.*known backends"):
        with sk.use_backend("fast"):
            pass
    with pytest.raises(TypeError, match="name"):
        with sk.use_backend(None):
            pass


def test_unknown_backend_in_environment(monkeypatch):
    monkeypatch.setenv("SASA_BACKEND", "fast")
    with pytest.raises(ValueError, match="SASA_BACKEND: unknown backend 'fast'"):
        sk.project(torch.randn(1, 2), torch.randn(1, 2))


def test_forcing_an_unavailable_backend_lists_the_available_ones():
    x = torch.randn(2, 4)
    with sk.use_backend("cuda"):
        with pytest.raises(sk.BackendUnavailableError) as info:
            sk.project(x, x)
    message = str(info.value)
    assert "'cuda' was forced" in message and f"Available on cpu: {sk.backends('cpu')}" in message


def test_automatic_fallback_is_quiet_and_logs_once(caplog):
    _dispatch._logged.clear()
    x = torch.randn(2, 4, dtype=torch.float64)
    with caplog.at_level(logging.DEBUG, logger="sasa_kernels"):
        sk.project(x, x)
        sk.project(x, x)
    skipped = [r for r in caplog.records if "skipping backend" in r.getMessage()]
    reasons = {r.getMessage() for r in skipped}
    assert len(skipped) == len(reasons)  # one line per (backend, device, reason)
    assert all(r.levelno == logging.DEBUG for r in skipped)
