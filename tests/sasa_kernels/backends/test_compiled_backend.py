"""Backend-specific tests of the compiled backends (``cpp`` on CPU, ``cuda`` on a GPU).

The generic op grid (tests/sasa_kernels/test_ops_grid.py) runs every backend through the public
API. These tests call the compiled ops ``torch.ops.sasa._compiled_*`` directly (their own
argument checks, strided rows, out-of-range positions the public API would reject), run
``torch.library.opcheck`` on them, and check the build information, dispatch and the torch/ABI
mismatch handling. CUDA variants are marked ``cuda`` (benchmarks/gpu_check.sh runs them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

import sasa_kernels as sk
from sasa_kernels import reference
from sasa_kernels.backends import compiled
from tests.numerics import LOW_DTYPES, assert_matches_reference, poisoned_outputs  # noqa: F401 (fixture)

BUILT = compiled.build_info() is not None
pytestmark = pytest.mark.skipif(not BUILT, reason="sasa_kernels._C is not built (compiled backends off)")

DIMS = (1, 7, 127, 4095, 4096, 5120)
_CUDA_OK = BUILT and "cuda" in compiled.build_info()["backends"] and torch.cuda.is_available()
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda", id="cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not _CUDA_OK, reason="cuda backend not built or no GPU")],
    ),
]


def _ops():
    return torch.ops.sasa


def _nan(shape, dtype, device):
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def _rand(shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype).to(device)


def _rows(n, d, dtype, device, seed, layout):
    """``[n, d]`` rows: contiguous, or strided (row stride > d, storage offset, odd alignment)."""
    if layout == "contiguous":
        return _rand((n, d), dtype, device, seed)
    if layout == "padded":  # row stride d + 5, offset 0
        return _rand((n, d + 5), dtype, device, seed)[:, :d]
    if layout == "offset":  # row stride d + 3, storage offset 1 (never 16-byte aligned)
        return _rand((n, d + 3), dtype, device, seed)[:, 1 : d + 1]
    if layout == "every-other":  # row stride 2d
        return _rand((2 * n, d), dtype, device, seed)[::2]
    raise AssertionError(layout)


def _out_like(x, layout):
    n, d = x.shape
    if layout == "contiguous":
        return _nan((n, d), x.dtype, x.device)
    return _nan((n, d + 3), x.dtype, x.device)[:, 1 : d + 1]


def _ref_project_rmsnorm(hs, hf, w, *, a, b, eps, norm_eps, weight_offset):
    h = reference.project_weighted(hs, hf, a, b, eps)
    return h, reference.rmsnorm(h, w, eps=norm_eps, weight_offset=weight_offset)


# --- build information and dispatch ---------------------------------------------------------------


def test_build_info():
    info = compiled.build_info()
    assert "cpp" in info["backends"]
    assert info["torch_version"] == torch.__version__
    assert info["compiler"] and info["build_system"] in ("setup.py", "cmake")
    if "cuda" in info["backends"]:
        assert info["cuda_version"] and info["cuda_archs"]
    from sasa_kernels import _C

    assert _C.build_info() == info
    assert compiled.built_torch_version(compiled.extension_path()) == torch.__version__


def test_cpp_is_preferred_on_cpu():
    assert sk.backends("cpu")[0] == "cpp"
    assert "torch" in sk.backends("cpu")
    assert "cpp" not in sk.backends("cuda")


def test_dispatch_reaches_cpp_and_torch_can_still_be_forced(monkeypatch):
    from sasa_kernels import _dispatch

    backend = _dispatch._registry["cpp"]
    calls = []
    for name in ("project", "project_if_plain"):  # the validated path and the fast CPU entry
        real = getattr(backend, name)
        monkeypatch.setattr(backend, name, lambda *args, _real=real, **kw: (calls.append(1), _real(*args, **kw))[1])
    hs, hf = _rand((2, 16), torch.float32, "cpu", 0), _rand((2, 16), torch.float32, "cpu", 1)
    sk.project(hs, hf)
    assert calls == [1]
    with sk.use_backend("torch"):
        sk.project(hs, hf)
    monkeypatch.setenv("SASA_BACKEND", "torch")
    sk.project(hs, hf)
    assert calls == [1]
    with sk.use_backend("cpp"):
        out = sk.project(hs, hf, mode="residual", coef=0.5)
    assert calls == [1, 1]
    assert_matches_reference(out, reference.project, (hs, hf), dict(mode="residual", coef=0.5))


def test_compiled_ops_have_cpu_and_meta_kernels():
    for name in ("_compiled_project", "_compiled_project_rmsnorm", "_compiled_probe"):
        qualname = f"sasa::{name}"
        assert torch._C._dispatch_has_kernel_for_dispatch_key(qualname, "CPU")
        assert torch._C._dispatch_has_kernel_for_dispatch_key(qualname, "Meta")
        if "cuda" in compiled.build_info()["backends"]:
            assert torch._C._dispatch_has_kernel_for_dispatch_key(qualname, "CUDA")


# --- project / project_rmsnorm, called directly ----------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", LOW_DTYPES, ids=str)
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("layout", ("contiguous", "offset", "every-other"))
def test_project_direct(device, dtype, d, layout):
    n = 5
    hs = _rows(n, d, dtype, device, 0, layout)
    hf = _rows(n, d, dtype, device, 1, "padded" if layout != "contiguous" else layout)
    out = _out_like(hs, layout)
    a, b, eps = 0.25, 0.75, 1e-6
    _ops()._compiled_project(hs, hf, out, a, b, eps)
    assert_matches_reference(out, reference.project_weighted, (hs, hf, a, b, eps), {})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", LOW_DTYPES, ids=str)
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("layout", ("contiguous", "offset"))
@pytest.mark.parametrize("weight_offset", (0.0, 1.0))
def test_project_rmsnorm_direct(device, dtype, d, layout, weight_offset):
    n = 4
    hs = _rows(n, d, dtype, device, 2, layout)
    hf = _rows(n, d, dtype, device, 3, layout)
    w = (1 + 0.1 * _rand((d,), torch.float32, device, 4)).to(dtype)
    if layout != "contiguous":  # a strided norm weight too
        w = torch.stack([w, w], 1)[:, 0]
    out, out_normed = _out_like(hs, layout), _out_like(hs, layout)
    kw = dict(a=1.0, b=0.5, eps=1e-6, norm_eps=1e-5, weight_offset=weight_offset)
    _ops()._compiled_project_rmsnorm(hs, hf, w, out, out_normed, kw["a"], kw["b"], kw["eps"], kw["norm_eps"], weight_offset)
    assert_matches_reference((out, out_normed), _ref_project_rmsnorm, (hs, hf, w), kw)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", LOW_DTYPES, ids=str)
def test_project_many_rows_parallel(device, dtype):
    # Enough rows that at::parallel_for (CPU) / a multi-block grid (CUDA) splits them.
    n, d = 257, 1024
    hs, hf = _rand((n, d), dtype, device, 5), _rand((n, d), dtype, device, 6)
    w = (1 + 0.1 * _rand((d,), torch.float32, device, 7)).to(dtype)
    out, out_normed = _nan((n, d), dtype, device), _nan((n, d), dtype, device)
    _ops()._compiled_project_rmsnorm(hs, hf, w, out, out_normed, 0.0, 1.0, 1e-6, 1e-6, 0.0)
    kw = dict(a=0.0, b=1.0, eps=1e-6, norm_eps=1e-6, weight_offset=0.0)
    assert_matches_reference((out, out_normed), _ref_project_rmsnorm, (hs, hf, w), kw)
    out2 = _nan((n, d), dtype, device)
    _ops()._compiled_project(hs, hf, out2, 0.0, 1.0, 1e-6)
    torch.testing.assert_close(out2, out, rtol=0, atol=0)  # same h from both ops


@pytest.mark.parametrize("device", DEVICES)
def test_project_empty_and_zero_rows(device):
    for shape in ((0, 8), (3, 0)):
        hs = torch.empty(shape, device=device)
        out = torch.empty(shape, device=device)
        _ops()._compiled_project(hs, hs, out, 0.0, 1.0, 1e-6)  # nothing to do, no error
    # A zero hf row: alpha = 0 / eps = 0, so replace mode gives zeros (no NaN).
    hs = _rand((2, 33), torch.float32, device, 8)
    hf = torch.zeros(2, 33, device=device)
    out = _nan((2, 33), torch.float32, device)
    _ops()._compiled_project(hs, hf, out, 0.0, 1.0, 1e-6)
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("dtype", LOW_DTYPES, ids=str)
def test_project_public_api_empty_and_leading_dims(dtype, poisoned_outputs):
    with sk.use_backend("cpp"):
        empty = sk.project(torch.empty(0, 3, 16, dtype=dtype), torch.empty(0, 3, 16, dtype=dtype))
        assert empty.shape == (0, 3, 16)
        hs, hf = _rand((2, 3, 130), dtype, "cpu", 9), _rand((2, 3, 130), dtype, "cpu", 10)
        hs_t = hs.transpose(0, 1)  # non-contiguous leading dims
        out = sk.project(hs_t, hf.transpose(0, 1), mode="interpolate", coef=0.3)
    assert_matches_reference(out, reference.project, (hs_t, hf.transpose(0, 1)), dict(mode="interpolate", coef=0.3))


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("d", (4096, 4099))  # 4099: rows not cache-line aligned, so some are not streamed
def test_large_outputs_streamed_to_memory(dtype, d):
    # Outputs of 16 MiB and more are written with non-temporal stores (csrc/cpu/rows_impl.h), and
    # RMSNorm then reads h back from a per-thread row copy: a path the small shapes never reach.
    rows = (16 << 20) // (d * torch.empty((), dtype=dtype).element_size()) + 1
    hs, hf = _rand((rows, d), dtype, "cpu", 20), _rand((rows, d), dtype, "cpu", 21)
    w = (1 + 0.1 * _rand((d,), torch.float32, "cpu", 22)).to(dtype)
    out, out_normed = _nan((rows, d), dtype, "cpu"), _nan((rows, d), dtype, "cpu")
    _ops()._compiled_project(hs, hf, out, 0.5, 0.75, 1e-6)
    assert_matches_reference(out, reference.project_weighted, (hs, hf, 0.5, 0.75, 1e-6), {})
    out.fill_(float("nan"))
    _ops()._compiled_project_rmsnorm(hs, hf, w, out, out_normed, 0.0, 1.0, 1e-6, 1e-5, 0.0)
    kw = dict(a=0.0, b=1.0, eps=1e-6, norm_eps=1e-5, weight_offset=0.0)
    assert_matches_reference((out, out_normed), _ref_project_rmsnorm, (hs, hf, w), kw)
    with sk.use_backend("cpp"):  # the public function allocates the outputs itself (huge-page advice)
        h, normed = sk.project_rmsnorm(hs, hf, w, eps=1e-6, norm_eps=1e-5)
    torch.testing.assert_close(h, out, rtol=0, atol=0)
    torch.testing.assert_close(normed, out_normed, rtol=0, atol=0)


@pytest.mark.parametrize("capability", ("portable", "avx2", "avx512"))
def test_lower_cpu_capabilities(capability):
    # The row kernels are built for several instruction sets and the best one runs; the others
    # are only reachable with SASA_CPU_CAPABILITY (read when the extension loads), so they run
    # here in a subprocess on the direct-op tests.
    env = dict(os.environ, SASA_CPU_CAPABILITY=capability)
    probe = subprocess.run(
        [sys.executable, "-c", "from sasa_kernels.backends import compiled; print(compiled.build_info()['cpu_capability'])"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert probe.returncode == 0, probe.stderr
    if probe.stdout.strip() != capability:
        pytest.skip(f"this CPU cannot run the {capability} kernels (got {probe.stdout.strip()})")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", os.path.abspath(__file__),
         "-k", "(direct or parallel or zero_rows or streamed or no_positions or out_of_range or super_blocks) and not cuda"],
        capture_output=True, text=True, env=env, cwd=root, timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


# --- probe, called directly ----------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", LOW_DTYPES, ids=str)
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("weight_dtype", ("float32", "same"))
@pytest.mark.parametrize("with_norm", (False, True), ids=("no-norm", "norm"))
def test_probe_direct(device, dtype, d, weight_dtype, with_norm):
    B, T, C = 4, 6, 3
    hidden = _rand((B, T, d + 2), dtype, device, d)[:, :, 1 : d + 1]  # strided, offset rows
    positions = torch.tensor([5, 0, 3, 2], device=device)
    wdtype = torch.float32 if weight_dtype == "float32" else dtype
    weight = (_rand((C, d), torch.float32, device, 11) / d**0.5).to(wdtype)
    bias = _rand((C,), torch.float32, device, 12).to(wdtype)
    norm_weight = (1 + 0.1 * _rand((d,), torch.float32, device, 13)).to(dtype) if with_norm else None
    out = _nan((B, C), torch.float32, device)
    _ops()._compiled_probe(hidden, positions, weight, bias, norm_weight, out, 1e-6, 0.5, True)
    kwargs = dict(positions=positions, norm_weight=norm_weight, norm_eps=1e-6, weight_offset=0.5, activation="sigmoid")
    assert_matches_reference(out, reference.probe, (hidden, weight, bias), kwargs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", LOW_DTYPES, ids=str)
def test_probe_no_positions_no_bias_no_activation(device, dtype):
    B, d, C = 70, 300, 9  # enough rows to run in parallel
    hidden = _rand((B, d), dtype, device, 14)
    weight = (_rand((C, d), torch.float32, device, 15) / d**0.5).to(dtype)
    out = _nan((B, C), torch.float32, device)
    _ops()._compiled_probe(hidden.unsqueeze(1), None, weight, None, None, out, 1e-6, 0.0, False)
    assert_matches_reference(out, reference.probe, (hidden, weight, None), dict(activation="none"))


@pytest.mark.parametrize("device", DEVICES)
def test_probe_out_of_range_position_writes_nan(device):
    B, T, d, C = 5, 4, 64, 2
    hidden = _rand((B, T, d), torch.bfloat16, device, 16)
    weight = _rand((C, d), torch.float32, device, 17)
    positions = torch.tensor([0, 4, -1, 3, 1 << 40], device=device)
    out = torch.zeros(B, C, device=device)
    _ops()._compiled_probe(hidden, positions, weight, None, None, out, 1e-6, 0.0, True)
    bad = torch.tensor([False, True, True, False, True], device=device)
    assert out[bad].isnan().all()
    assert not out[~bad].isnan().any()
    good = positions.clamp(0, T - 1)
    expected = reference.probe(hidden, weight, None, positions=good)
    torch.testing.assert_close(out[~bad], expected[~bad])


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("num_probes", (1, 3, 8, 11))  # every register-block width, and a partial one
@pytest.mark.parametrize("with_norm", (False, True), ids=("no-norm", "norm"))
def test_probe_many_super_blocks_with_bad_positions(dtype, num_probes, with_norm):
    # Enough rows of d = 2048 for several of the kernel's cache blocks (and threads), some rows
    # with a position out of range in the middle of them: those must be NaN and nothing else.
    B, T, d = 301, 3, 2048
    hidden = _rand((B, T, d), dtype, "cpu", 30)
    g = torch.Generator().manual_seed(31)
    positions = torch.randint(0, T, (B,), generator=g)
    bad = torch.zeros(B, dtype=torch.bool)
    bad[[0, 37, 38, 150, 300]] = True
    positions[bad] = torch.tensor([T, -1, 1 << 40, T + 5, -7])
    weight = _rand((num_probes, d), torch.float32, "cpu", 32) / d**0.5
    bias = _rand((num_probes,), torch.float32, "cpu", 33)
    norm_weight = (1 + 0.1 * _rand((d,), torch.float32, "cpu", 34)).to(dtype) if with_norm else None
    out = _nan((B, num_probes), torch.float32, "cpu")
    _ops()._compiled_probe(hidden, positions, weight, bias, norm_weight, out, 1e-6, 0.0, False)
    assert out[bad].isnan().all() and not out[~bad].isnan().any()
    good = ~bad
    kwargs = dict(positions=positions[good], norm_weight=norm_weight, activation="none")
    assert_matches_reference(out[good], reference.probe, (hidden[good], weight, bias), kwargs)


# --- argument checks of the compiled ops ---------------------------------------------------------


def test_compiled_ops_check_arguments():
    ops = _ops()
    x = torch.randn(3, 8)
    with pytest.raises(RuntimeError, match="hf must have shape"):
        ops._compiled_project(x, torch.randn(3, 9), torch.empty(3, 8), 0.0, 1.0, 1e-6)
    with pytest.raises(RuntimeError, match="hs must be float32, float16 or bfloat16"):
        ops._compiled_project(x.double(), x.double(), torch.empty(3, 8).double(), 0.0, 1.0, 1e-6)
    with pytest.raises(RuntimeError, match="out must have dtype"):
        ops._compiled_project(x, x, torch.empty(3, 8, dtype=torch.half), 0.0, 1.0, 1e-6)
    with pytest.raises(RuntimeError, match="unit stride"):
        ops._compiled_project(x, torch.randn(8, 3).t(), torch.empty(3, 8), 0.0, 1.0, 1e-6)
    with pytest.raises(RuntimeError, match="must be 2-D"):
        ops._compiled_project(torch.randn(2, 3, 8), torch.randn(2, 3, 8), torch.empty(2, 3, 8), 0.0, 1.0, 1e-6)
    with pytest.raises(RuntimeError, match="eps must be > 0"):
        ops._compiled_project(x, x, torch.empty(3, 8), 0.0, 1.0, 0.0)
    with pytest.raises(RuntimeError, match="norm_weight must have shape"):
        ops._compiled_project_rmsnorm(x, x, torch.ones(7), torch.empty(3, 8), torch.empty(3, 8), 0.0, 1.0, 1e-6, 1e-6, 0.0)
    with pytest.raises(RuntimeError, match="norm_weight must have dtype"):
        ops._compiled_project_rmsnorm(x, x, torch.ones(8).half(), torch.empty(3, 8), torch.empty(3, 8), 0.0, 1.0, 1e-6, 1e-6, 0.0)
    h = torch.randn(2, 4, 8)
    w = torch.randn(3, 8)
    with pytest.raises(RuntimeError, match="positions must be int64"):
        ops._compiled_probe(h, torch.tensor([1, 2], dtype=torch.int32), w, None, None, torch.empty(2, 3), 1e-6, 0.0, True)
    with pytest.raises(RuntimeError, match="positions must have shape"):
        ops._compiled_probe(h, torch.tensor([1, 2, 3]), w, None, None, torch.empty(2, 3), 1e-6, 0.0, True)
    with pytest.raises(RuntimeError, match="when positions is None"):
        ops._compiled_probe(h, None, w, None, None, torch.empty(2, 3), 1e-6, 0.0, True)
    with pytest.raises(RuntimeError, match="weight must have shape"):
        ops._compiled_probe(h, torch.tensor([1, 2]), torch.randn(3, 9), None, None, torch.empty(2, 3), 1e-6, 0.0, True)
    with pytest.raises(RuntimeError, match="weight must be float32 or"):
        ops._compiled_probe(h.half(), torch.tensor([1, 2]), w.bfloat16(), None, None, torch.empty(2, 3), 1e-6, 0.0, True)
    with pytest.raises(RuntimeError, match="bias must have shape"):
        ops._compiled_probe(h, torch.tensor([1, 2]), w, torch.randn(2), None, torch.empty(2, 3), 1e-6, 0.0, True)
    with pytest.raises(RuntimeError, match="out must have shape"):
        ops._compiled_probe(h, torch.tensor([1, 2]), w, None, None, torch.empty(2, 4), 1e-6, 0.0, True)
    with pytest.raises(RuntimeError, match="out must be float32"):
        ops._compiled_probe(h, torch.tensor([1, 2]), w, None, None, torch.empty(2, 3).double(), 1e-6, 0.0, True)
    if torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="device"):
            ops._compiled_project(x, x.cuda(), torch.empty(3, 8), 0.0, 1.0, 1e-6)


def test_compiled_ops_meta_kernels_check_arguments():
    ops = _ops()
    x = torch.empty(3, 8, device="meta")
    ops._compiled_project(x, x, torch.empty(3, 8, device="meta"), 0.0, 1.0, 1e-6)
    with pytest.raises(RuntimeError, match="hf must have shape"):
        ops._compiled_project(x, torch.empty(3, 9, device="meta"), x, 0.0, 1.0, 1e-6)


# --- opcheck --------------------------------------------------------------------------------------


def _opcheck_cases(device):
    g = torch.Generator().manual_seed(0)

    def r(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=g).to(dtype).to(device)

    cases = []
    for dtype in LOW_DTYPES:
        hs, hf = r(4, 33, dtype=dtype), r(4, 33, dtype=dtype)
        cases.append(("_compiled_project", (hs, hf, torch.empty_like(hs), 0.5, 0.5, 1e-6)))
        w = r(33, dtype=dtype)
        cases.append(
            ("_compiled_project_rmsnorm", (hs, hf, w, torch.empty_like(hs), torch.empty_like(hs), 0.0, 1.0, 1e-6, 1e-5, 1.0))
        )
        hidden = r(3, 5, 33, dtype=dtype)
        pos = torch.tensor([4, 0, 2], device=device)
        cases.append(
            ("_compiled_probe", (hidden, pos, r(2, 33), r(2), w, torch.empty(3, 2, device=device), 1e-6, 0.0, True))
        )
        cases.append(
            ("_compiled_probe", (hidden[:, :1], None, r(2, 33, dtype=dtype), None, None, torch.empty(3, 2, device=device), 1e-6, 0.0, False))
        )
    return cases


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for name, args in _opcheck_cases(device):
        torch.library.opcheck(getattr(_ops(), name).default, args)


# --- a mismatched or broken extension must not crash the import ---------------------------------


def test_version_mismatch_warns_and_registers_nothing(monkeypatch):
    monkeypatch.setattr(compiled, "built_torch_version", lambda path: "1.0.0+fake")
    with pytest.warns(RuntimeWarning, match=r"built against torch 1\.0\.0\+fake.*torch " + torch.__version__.replace("+", r"\+")):
        assert compiled._load() is None


def test_load_failure_warns(monkeypatch):
    def broken(name):
        raise ImportError("_C.so: undefined symbol: _ZN3c1010TensorImpl4fakeEv")

    monkeypatch.setattr(compiled.importlib, "import_module", broken)
    with pytest.warns(RuntimeWarning, match="undefined symbol"):
        assert compiled._load() is None


def _copy_package(tmp_path):
    """A copy of the sasa_kernels package (with its built extension) under tmp_path."""
    import sasa_kernels

    src = os.path.dirname(sasa_kernels.__file__)
    dst = tmp_path / "sasa_kernels"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    so = dst / os.path.basename(compiled.extension_path())
    assert so.exists()
    return so


def _import_in_subprocess(tmp_path):
    code = (
        "import warnings, torch\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    import sasa_kernels as sk\n"
        "print('FILE', sk.__file__)\n"
        "print('BACKENDS', sk.backends('cpu'))\n"
        "for x in w: print('WARNING', x.message)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    env.pop("SASA_BACKEND", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def test_extension_built_for_another_torch_is_skipped(tmp_path):
    so = _copy_package(tmp_path)
    data = so.read_bytes()
    marker = f"SASA_BUILT_WITH_TORCH={torch.__version__}\n".encode()
    assert marker in data
    other = "0" * len(torch.__version__)  # same length: the file stays a valid library
    so.write_bytes(data.replace(marker, f"SASA_BUILT_WITH_TORCH={other}\n".encode()))
    result = _import_in_subprocess(tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"FILE {tmp_path}" in result.stdout
    line = result.stdout.split("BACKENDS")[1].splitlines()[0]
    assert "'cpp'" not in line and "'torch'" in line
    assert f"built against torch {other}" in result.stdout and f"torch {torch.__version__} is installed" in result.stdout


def test_unloadable_extension_is_skipped(tmp_path):
    so = _copy_package(tmp_path)
    # Not an ELF file any more, but still carrying the right marker: loading fails, import goes on.
    so.write_bytes(b"garbage\n" + f"SASA_BUILT_WITH_TORCH={torch.__version__}\n".encode())
    result = _import_in_subprocess(tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"FILE {tmp_path}" in result.stdout
    line = result.stdout.split("BACKENDS")[1].splitlines()[0]
    assert "'cpp'" not in line
    assert "failed to load" in result.stdout and torch.__version__ in result.stdout
