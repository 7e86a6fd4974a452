"""Internals of the Triton kernels: launch heuristics, every code path, strides, fail-closed probe.

The kernels are launched directly (not through the op layer) so each path can be forced with a
small shape, and so inputs the op layer would reject (bad positions) still reach the kernel.
Every output starts as NaN, so an element a kernel fails to write fails the test. Accuracy
follows the project rule: max-abs error against the float64 reference at most twice the error of
the reference itself run in the kernel's dtype, plus a small atol.

Without a GPU these run under the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1),
where every program is a Python loop iteration: shapes are kept small on purpose.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from typing import Optional

import pytest
import torch

pytest.importorskip("triton")

import triton  # noqa: E402

import sasa_kernels as sk  # noqa: E402
from sasa_kernels import reference  # noqa: E402
from sasa_kernels.backends import triton_backend  # noqa: E402
from sasa_kernels.triton_kernels import (  # noqa: E402
    INTERPRETED,
    ProbeConfig,
    ProjectConfig,
    is_interpreted,
    launch_probe,
    launch_project,
    probe_config,
    project_config,
)
from sasa_kernels.triton_kernels import probe as probe_module  # noqa: E402
from sasa_kernels.triton_kernels import project as project_module  # noqa: E402

if INTERPRETED:
    DEVICE = "cpu"
elif torch.cuda.is_available():
    DEVICE = "cuda"
else:
    pytestmark = pytest.mark.skip(reason="Triton kernels need a GPU or TRITON_INTERPRET=1")
    DEVICE = "cpu"

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ATOL = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 1e-3}
MODES = {"replace": (0.0, 1.0), "residual": (1.0, 0.3), "interpolate": (0.7, 0.3)}


# --- helpers -------------------------------------------------------------------------------------


def _randn(shape, dtype, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=g)).to(dtype).to(DEVICE)


def _norm_weight(d: int, dtype, offset: float, seed: int = 7) -> torch.Tensor:
    # Around 1 overall, whichever convention (w or 1 + w) the offset selects.
    base = torch.ones(d) if offset == 0.0 else torch.zeros(d)
    g = torch.Generator().manual_seed(seed)
    return (base + 0.1 * torch.randn(d, generator=g)).to(dtype).to(DEVICE)


def _nan_like(x: torch.Tensor, dtype=None) -> torch.Tensor:
    return torch.full_like(x, float("nan"), dtype=dtype)


def _max_err(actual: torch.Tensor, truth: torch.Tensor) -> float:
    diff = (actual.detach().cpu().double() - truth.detach().cpu().double()).abs()
    return float(torch.nan_to_num(diff, nan=float("inf")).max())


def _cpu64(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    if x is None:
        return None
    x = x.detach().cpu()
    return x.double() if x.is_floating_point() else x


def _cpu(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if x is None else x.detach().cpu()


def assert_within_rule(actual: torch.Tensor, eager: torch.Tensor, truth: torch.Tensor, dtype) -> None:
    """Kernel error <= 2 * (reference in ``dtype``) error + atol, both against float64 ``truth``."""
    assert actual.shape == truth.shape
    err, eager_err = _max_err(actual, truth), _max_err(eager, truth)
    atol = ATOL[dtype]
    assert err <= 2 * eager_err + atol, f"max error {err:.3e} > 2 * eager error {eager_err:.3e} + {atol:g}"


def _check_project(hs, hf, out, a, b, eps, norm_weight=None, out_normed=None, norm_eps=1e-6, offset=0.0):
    dtype = hs.dtype
    h_truth = reference.project_weighted(_cpu64(hs), _cpu64(hf), a, b, eps)
    h_eager = reference.project_weighted(_cpu(hs), _cpu(hf), a, b, eps)
    assert_within_rule(out, h_eager, h_truth, dtype)
    if norm_weight is not None:
        n_truth = reference.rmsnorm(h_truth, _cpu64(norm_weight), eps=norm_eps, weight_offset=offset)
        n_eager = reference.rmsnorm(h_eager, _cpu(norm_weight), eps=norm_eps, weight_offset=offset)
        assert_within_rule(out_normed, n_eager, n_truth, dtype)


def _probe_reference(hidden, positions, weight, bias, norm_weight, norm_eps, offset, sigmoid, to):
    rows = hidden[:, 0] if positions is None else hidden
    return reference.probe(
        to(rows), to(weight), to(bias), positions=_cpu(positions), norm_weight=to(norm_weight),
        norm_eps=norm_eps, weight_offset=offset, activation="sigmoid" if sigmoid else "none",
    )


def _check_probe(hidden, positions, weight, bias, norm_weight, out, norm_eps, offset, sigmoid):
    args = (hidden, positions, weight, bias, norm_weight, norm_eps, offset, sigmoid)
    truth = _probe_reference(*args, to=_cpu64)
    eager = _probe_reference(*args, to=_cpu)
    assert out.dtype == torch.float32
    assert_within_rule(out, eager, truth, hidden.dtype)


# --- launch heuristics ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_rows,d,expected",
    [
        (1, 1, ProjectConfig(1, 1, True, 1)),
        (4, 100, ProjectConfig(1, 128, True, 1)),
        # short rows share a program once there are enough rows to keep the GPU busy
        (65536, 128, ProjectConfig(32, 128, True, 8)),
        (1024, 128, ProjectConfig(4, 128, True, 1)),
        (1 << 20, 8, ProjectConfig(64, 8, True, 1)),
        (8192, 4096, ProjectConfig(1, 4096, True, 8)),
        (8192, 5120, ProjectConfig(1, 8192, True, 16)),
        (8192, 8192, ProjectConfig(1, 8192, True, 16)),
        # past MAX_FUSED_D the row is walked in chunks
        (8192, 8193, ProjectConfig(1, 4096, False, 8)),
        (3, 65536, ProjectConfig(1, 4096, False, 8)),
    ],
)
def test_project_config_picks_expected_blocks(n_rows, d, expected):
    assert project_config(n_rows, d) == expected


@pytest.mark.parametrize("n_rows", [1, 3, 300, 4096, 1 << 20])
@pytest.mark.parametrize("d", [1, 7, 16, 100, 128, 1000, 4095, 8192, 8193, 20000])
def test_project_config_invariants(n_rows, d):
    cfg = project_config(n_rows, d)
    for block in (cfg.block_m, cfg.block_d):
        assert block == triton.next_power_of_2(block)
    assert cfg.single_block == (d <= project_module.MAX_FUSED_D)
    if cfg.single_block:
        assert d <= cfg.block_d < 2 * d  # whole row, padded to the next power of two only
    assert cfg.block_m <= project_module.MAX_BLOCK_M
    assert cfg.block_m * cfg.block_d <= max(project_module.TARGET_TILE, cfg.block_d)
    assert cfg.block_m <= triton.next_power_of_2(n_rows)
    assert cfg.num_warps in (1, 2, 4, 8, 16)


@pytest.mark.parametrize(
    "batch,num_probes,d,expected",
    [
        (1, 1, 1, ProbeConfig(1, 1, 1, 1, 4)),
        # one row, one probe: long chunks so the loop over d stays short
        (1, 1, 4096, ProbeConfig(1, 1, 512, 2048, 4)),
        (8, 3, 100, ProbeConfig(8, 4, 128, 128, 4)),
        (8, 3, 4096, ProbeConfig(8, 4, 128, 256, 4)),
        (64, 8, 4096, ProbeConfig(16, 8, 32, 128, 4)),
        # the B=4096, C=64 corner: 16x16 tiles, four programs along C
        (4096, 64, 4096, ProbeConfig(16, 16, 16, 128, 4)),
        (65536, 200, 8192, ProbeConfig(16, 16, 16, 128, 4)),
    ],
)
def test_probe_config_picks_expected_blocks(batch, num_probes, d, expected):
    assert probe_config(batch, num_probes, d) == expected


@pytest.mark.parametrize("batch", [1, 3, 17, 4096, 100000])
@pytest.mark.parametrize("num_probes", [1, 5, 16, 64, 65, 1000])
@pytest.mark.parametrize("d", [1, 24, 100, 4096, 10000])
def test_probe_config_invariants(batch, num_probes, d):
    cfg = probe_config(batch, num_probes, d)
    for block in (cfg.block_b, cfg.block_c, cfg.block_k, cfg.block_n):
        assert block == triton.next_power_of_2(block)
    assert cfg.block_b <= min(triton.next_power_of_2(batch), probe_module.MAX_BLOCK_B)
    assert cfg.block_c <= min(triton.next_power_of_2(num_probes), probe_module.MAX_BLOCK_C)
    assert cfg.block_k <= triton.next_power_of_2(d) and cfg.block_n <= triton.next_power_of_2(d)
    assert cfg.block_b * cfg.block_c * cfg.block_k <= probe_module.MAX_PRODUCT_TILE
    assert cfg.block_b * cfg.block_n <= probe_module.MAX_NORM_TILE
    assert cfg.num_warps == 4


# --- project / project_rmsnorm -------------------------------------------------------------------

# (n_rows, d, forced config or None for the heuristic, mode)
PROJECT_CASES = {
    "d1": (5, 1, None, "residual"),
    "one_row_per_program": (3, 100, ProjectConfig(1, 128, True, 1), "replace"),
    "rows_per_program": (37, 24, ProjectConfig(8, 32, True, 2), "interpolate"),
    "heuristic_rows_per_program": (37, 16, None, "residual"),
    "whole_row_at_max": (2, 8192, None, "interpolate"),
    "loop_with_remainder": (3, 100, ProjectConfig(1, 32, False, 1), "residual"),
    "loop_several_rows": (5, 70, ProjectConfig(4, 16, False, 1), "interpolate"),
    "loop_heuristic": (2, 8200, None, "replace"),
}


@pytest.mark.parametrize("rmsnorm", [False, True], ids=["project", "project_rmsnorm"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(PROJECT_CASES))
def test_project_paths_match_reference(case, dtype, rmsnorm, monkeypatch):
    # Fewer programs wanted for occupancy lets 37 rows share programs (the interpreter is slow).
    monkeypatch.setattr(project_module, "MIN_PROGRAMS", 4)
    n_rows, d, config, mode = PROJECT_CASES[case]
    a, b = MODES[mode]
    hs, hf = _randn((n_rows, d), dtype, 0), _randn((n_rows, d), dtype, 1)
    out = _nan_like(hs)
    offset = 1.0 if mode == "residual" else 0.0
    kwargs = {}
    if rmsnorm:
        kwargs = dict(
            norm_weight=_norm_weight(d, dtype, offset), out_normed=_nan_like(hs), norm_eps=1e-5, weight_offset=offset,
        )
    used = launch_project(hs, hf, out, a, b, 1e-6, config=config, **kwargs)
    assert used == (config or project_config(n_rows, d))
    if case == "heuristic_rows_per_program":
        assert used.block_m > 1 and used.single_block
    if case == "loop_heuristic":
        assert not used.single_block
    _check_project(hs, hf, out, a, b, 1e-6, kwargs.get("norm_weight"), kwargs.get("out_normed"), 1e-5, offset)


def test_project_heuristic_packs_rows_with_real_constants():
    n_rows, d = 257, 8
    hs, hf = _randn((n_rows, d), torch.bfloat16, 8), _randn((n_rows, d), torch.bfloat16, 9)
    w = _norm_weight(d, torch.bfloat16, 0.0)
    out, out_normed = _nan_like(hs), _nan_like(hs)
    used = launch_project(hs, hf, out, 0.0, 1.0, 1e-6, norm_weight=w, out_normed=out_normed)
    assert used == ProjectConfig(2, 8, True, 1)
    _check_project(hs, hf, out, 0.0, 1.0, 1e-6, w, out_normed)


def test_project_rejects_a_single_block_config_shorter_than_the_row():
    hs = _randn((2, 40), torch.float32, 0)
    with pytest.raises(ValueError, match="block_d"):
        launch_project(hs, hs, _nan_like(hs), 0.0, 1.0, 1e-6, config=ProjectConfig(1, 32, True, 1))


def _assert_llama_rmsnorm_of(rows: torch.Tensor, got: torch.Tensor, w: torch.Tensor, eps: float, offset: float) -> None:
    # Only the fp32 summation order of the variance may differ from the reference, which can flip
    # a rounding on rare elements; anything systematic (a missed rounding) shows up broadly.
    expected = reference.rmsnorm(_cpu(rows), _cpu(w), eps=eps, weight_offset=offset)
    got = _cpu(got).to(expected.dtype)
    exact = (got == expected).float().mean().item()
    assert exact >= 0.99, f"only {exact:.2%} of elements bit-identical"
    ulp = torch.finfo(rows.dtype).eps * expected.abs().float().clamp_min(1.0)
    assert ((got.float() - expected.float()).abs() <= ulp).all()


@pytest.mark.parametrize("offset", [0.0, 1.0])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "config", [ProjectConfig(4, 64, True, 1), ProjectConfig(2, 16, False, 1)], ids=["single", "loop"],
)
def test_project_rmsnorm_normalizes_the_rounded_h_with_llama_numerics(dtype, config, offset):
    hs, hf = _randn((6, 50), dtype, 2), _randn((6, 50), dtype, 3)
    w = _norm_weight(50, dtype, offset)
    out, out_normed = _nan_like(hs), _nan_like(hs)
    launch_project(
        hs, hf, out, 1.0, 0.5, 1e-6, norm_weight=w, out_normed=out_normed, norm_eps=1e-6, weight_offset=offset,
        config=config,
    )
    _assert_llama_rmsnorm_of(out, out_normed, w, 1e-6, offset)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "config", [None, ProjectConfig(2, 64, True, 1), ProjectConfig(2, 16, False, 1)], ids=["heuristic", "tile", "loop"],
)
def test_project_honours_different_row_strides(dtype, config):
    n_rows, d = 5, 40
    sentinel = 1234.0
    hs = _randn((n_rows, 2 * d), dtype, 4)[:, :d]
    hf = _randn((n_rows, d + 3), dtype, 5)[:, 1 : d + 1]
    out_buf = torch.full((n_rows, d + 5), sentinel, dtype=dtype, device=DEVICE)
    normed_buf = torch.full((n_rows, d + 9), sentinel, dtype=dtype, device=DEVICE)
    out, out_normed = out_buf[:, 2 : d + 2], normed_buf[:, 7 : d + 7]
    out.fill_(float("nan"))
    out_normed.fill_(float("nan"))
    assert len({hs.stride(0), hf.stride(0), out.stride(0), out_normed.stride(0)}) == 4
    w = _norm_weight(d, dtype, 0.0)
    launch_project(hs, hf, out, 0.7, 0.3, 1e-6, norm_weight=w, out_normed=out_normed, config=config)
    _check_project(hs, hf, out, 0.7, 0.3, 1e-6, w, out_normed)
    for buf, lo, hi in ((out_buf, 2, d + 2), (normed_buf, 7, d + 7)):
        outside = torch.cat([buf[:, :lo], buf[:, hi:]], dim=1)
        assert (outside == sentinel).all(), "kernel wrote outside its rows"


@pytest.mark.parametrize("config", [None, ProjectConfig(1, 16, False, 1)], ids=["single", "loop"])
def test_project_zero_hf_row_gives_alpha_zero(config):
    hs, hf = _randn((3, 33), torch.float32, 6), _randn((3, 33), torch.float32, 7)
    hf[1] = 0
    out = _nan_like(hs)
    launch_project(hs, hf, out, 0.25, 1.0, 1e-6, config=config)
    torch.testing.assert_close(out[1], 0.25 * hs[1], rtol=0, atol=0)
    _check_project(hs, hf, out, 0.25, 1.0, 1e-6)


# --- probe ---------------------------------------------------------------------------------------

# (batch, seq_len, d, num_probes, positions?, norm?, bias?, sigmoid?, forced config)
PROBE_CASES = {
    "single_row_plain": (1, 1, 24, 1, False, False, False, True, None),
    "gather_norm_bias_sigmoid": (5, 7, 100, 3, True, True, True, True, None),
    "two_probe_blocks": (33, 4, 40, 70, True, False, True, False, None),
    "k_loop_with_remainder": (20, 5, 100, 5, True, True, True, False, ProbeConfig(16, 8, 16, 32, 4)),
    "k_loop_one_row": (1, 2, 100, 3, True, True, False, True, ProbeConfig(1, 4, 16, 16, 4)),
    "no_positions_norm": (18, 1, 20, 8, False, True, False, False, None),
    "heuristic_grid_over_b_and_c": (40, 3, 20, 20, True, True, True, True, None),
    # the heuristic would launch 1024 programs, slow in the interpreter; the same code with
    # wider blocks covers B=4096 and C=64 (row offsets, masks, NaN handling at scale)
    "batch_4096_c64": (4096, 3, 16, 64, True, True, True, True, ProbeConfig(256, 64, 1, 16, 4)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(PROBE_CASES))
def test_probe_paths_match_reference(case, dtype):
    batch, seq_len, d, num_probes, with_pos, with_norm, with_bias, sigmoid, config = PROBE_CASES[case]
    hidden = _randn((batch, seq_len, d), dtype, 10)
    positions = None
    if with_pos:
        g = torch.Generator().manual_seed(11)
        positions = torch.randint(0, seq_len, (batch,), generator=g).to(DEVICE)
    weight = _randn((num_probes, d), torch.float32, 12, scale=d**-0.5)
    bias = _randn((num_probes,), torch.float32, 13) if with_bias else None
    offset = 1.0 if case == "no_positions_norm" else 0.0
    norm_weight = _norm_weight(d, dtype, offset) if with_norm else None
    out = torch.full((batch, num_probes), float("nan"), device=DEVICE)
    used = launch_probe(hidden, positions, weight, bias, norm_weight, out, 1e-5, offset, sigmoid, config=config)
    assert used == (config or probe_config(batch, num_probes, d))
    if case == "heuristic_grid_over_b_and_c":
        assert batch > used.block_b and num_probes > used.block_c
    _check_probe(hidden, positions, weight, bias, norm_weight, out, 1e-5, offset, sigmoid)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_probe_weight_in_activation_dtype(dtype):
    hidden = _randn((9, 2, 48), dtype, 14)
    positions = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1], device=DEVICE)
    weight = _randn((8, 48), dtype, 15, scale=0.2)
    bias = _randn((8,), dtype, 16)
    norm_weight = _norm_weight(48, dtype, 0.0)
    out = torch.full((9, 8), float("nan"), device=DEVICE)
    launch_probe(hidden, positions, weight, bias, norm_weight, out, 1e-6, 0.0, True)
    _check_probe(hidden, positions, weight, bias, norm_weight, out, 1e-6, 0.0, True)


@pytest.mark.parametrize("offset", [0.0, 1.0])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_probe_norm_uses_llama_numerics(dtype, offset):
    # An identity probe (exact in an fp32 dot) exposes the normalized rows themselves.
    batch, seq_len, d = 20, 3, 32
    hidden = _randn((batch, seq_len, d), dtype, 28)
    positions = torch.arange(batch, device=DEVICE) % seq_len
    w = _norm_weight(d, dtype, offset)
    out = torch.full((batch, d), float("nan"), device=DEVICE)
    launch_probe(hidden, positions, torch.eye(d, device=DEVICE), None, w, out, 1e-6, offset, False)
    rows = hidden[torch.arange(batch, device=DEVICE), positions]
    _assert_llama_rmsnorm_of(rows, out, w, 1e-6, offset)


@pytest.mark.parametrize("with_norm", [False, True], ids=["plain", "norm"])
def test_probe_invalid_positions_write_nan_rows(with_norm):
    batch, seq_len, d, num_probes = 21, 4, 24, 3
    # hidden is a view whose out-of-range rows exist in memory and hold finite values, so only a
    # NaN written on purpose (not garbage read past T) can make a bad row NaN.
    hidden = _randn((batch, seq_len + 2, d), torch.float32, 17)[:, :seq_len]
    positions = torch.tensor([0, -1, 3, 4, 1000, 2, -(1 << 40), 1 << 40] + [1] * 13, device=DEVICE)
    bad = (positions < 0) | (positions >= seq_len)
    weight = _randn((num_probes, d), torch.float32, 18, scale=0.2)
    bias = _randn((num_probes,), torch.float32, 19)
    norm_weight = _norm_weight(d, torch.float32, 0.0) if with_norm else None
    out = torch.zeros((batch, num_probes), device=DEVICE)  # not NaN: the kernel must write the NaNs
    launch_probe(hidden, positions, weight, bias, norm_weight, out, 1e-6, 0.0, True)
    assert out[bad].isnan().all()
    good = ~bad
    assert not out[good].isnan().any()
    _check_probe(hidden[good], positions[good], weight, bias, norm_weight, out[good], 1e-6, 0.0, True)


def test_probe_every_row_of_a_program_invalid():
    hidden = _randn((3, 2, 16), torch.bfloat16, 20)
    positions = torch.tensor([2, 5, -3], device=DEVICE)
    out = torch.zeros((3, 2), device=DEVICE)
    launch_probe(hidden, positions, _randn((2, 16), torch.float32, 21), None, None, out, 1e-6, 0.0, False)
    assert out.isnan().all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_probe_honours_strides_of_hidden_positions_and_out(dtype):
    batch, seq_len, d, num_probes = 6, 3, 40, 5
    hidden = _randn((batch, seq_len + 2, d + 8), dtype, 22)[:, 1 : seq_len + 1, 4 : d + 4]
    positions = torch.tensor([0, 9, 2, 9, 1, 9, 2, 9, 0, 9, 1, 9], device=DEVICE)[::2]
    assert positions.stride(0) == 2 and hidden.stride(-1) == 1
    weight = _randn((num_probes, d), torch.float32, 23, scale=0.2)
    norm_weight = _norm_weight(d, dtype, 0.0)
    sentinel = 77.0
    out_buf = torch.full((batch, num_probes + 3), sentinel, device=DEVICE)
    out = out_buf[:, 1 : num_probes + 1]
    out.fill_(float("nan"))
    launch_probe(hidden, positions, weight, None, norm_weight, out, 1e-6, 0.0, False)
    _check_probe(hidden, positions, weight, None, norm_weight, out, 1e-6, 0.0, False)
    assert (out_buf[:, 0] == sentinel).all() and (out_buf[:, num_probes + 1 :] == sentinel).all()


# --- the backend object --------------------------------------------------------------------------


def test_backend_is_registered_and_usable_here():
    backend = sk._dispatch._registry["triton"]
    assert isinstance(backend, triton_backend.TritonBackend)
    assert backend.dtypes == frozenset({torch.float16, torch.bfloat16, torch.float32})
    assert "triton" in sk.backends(DEVICE)


def test_unavailable_reason_is_truthful(monkeypatch):
    backend = triton_backend.TritonBackend()
    assert (backend.unavailable_reason("cuda") is None) == torch.cuda.is_available()
    assert "mps" in backend.unavailable_reason("mps")
    monkeypatch.setattr(triton_backend, "INTERPRETED", True)
    assert backend.unavailable_reason("cpu") is None
    monkeypatch.setattr(triton_backend, "INTERPRETED", False)
    assert "TRITON_INTERPRET=1" in backend.unavailable_reason("cpu")


@pytest.mark.parametrize("value,interpreted", [("1", True), ("0", False)])
def test_triton_reads_interpret_flag_when_a_kernel_is_defined(monkeypatch, value, interpreted):
    # The availability check relies on this: the flag at decoration time decides, not at launch.
    monkeypatch.setenv("TRITON_INTERPRET", value)

    @triton.jit
    def _noop():
        pass

    assert is_interpreted(_noop) == interpreted


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the compiled kernels are usable anyway")
def test_without_interpreter_cpu_is_refused_end_to_end():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = (
        "import sasa_kernels as sk; r = sk._dispatch._registry['triton'].unavailable_reason('cpu'); "
        "assert 'triton' not in sk.backends('cpu'), sk.backends('cpu'); print(r)"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "TRITON_INTERPRET=1" in result.stdout


def test_missing_triton_means_import_error(monkeypatch):
    ours = ("sasa_kernels.triton_kernels", triton_backend.__name__)
    for name in list(sys.modules):
        if name == "triton" or name.startswith(("triton.", *ours)):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "triton", None)  # makes `import triton` raise ImportError
    with pytest.raises(ImportError):
        importlib.import_module(triton_backend.__name__)


def test_public_api_runs_on_triton(monkeypatch):
    from tests.numerics import poison_outputs

    poison_outputs(monkeypatch)
    dtype = torch.bfloat16
    hs, hf = _randn((2, 3, 40), dtype, 24), _randn((2, 3, 40), dtype, 25)
    w = _norm_weight(40, dtype, 0.0)
    weight, bias = _randn((4, 40), torch.float32, 26, scale=0.2), _randn((4,), torch.float32, 27)
    positions = torch.tensor([2, 0], device=DEVICE)
    with sk.use_backend("triton"):
        out = sk.project(hs, hf, mode="interpolate", coef=0.4)
        h, normed = sk.project_rmsnorm(hs, hf, w, mode="residual", coef=0.5, weight_offset=0.0)
        scores = sk.probe(hs, weight, bias, positions=positions, norm_weight=w)
    a, b = reference.mode_coefficients("interpolate", 0.4)
    _check_project(hs.view(-1, 40), hf.view(-1, 40), out.view(-1, 40), a, b, 1e-6)
    a, b = reference.mode_coefficients("residual", 0.5)
    _check_project(hs.view(-1, 40), hf.view(-1, 40), h.view(-1, 40), a, b, 1e-6, w, normed.view(-1, 40))
    _check_probe(hs, positions, weight, bias, w, scores, 1e-6, 0.0, True)
