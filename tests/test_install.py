"""Install tests: the package installs with and without the compiled extension.

Each test pip-installs this repository (not editable, so the source tree is left as it is) into a
fresh virtual environment that sees the system site-packages (torch, setuptools, pip), with
``--no-build-isolation --no-deps`` so nothing is downloaded, then imports it from outside the
repository and reads ``sasa_kernels.backends("cpu")``:

- ``SASA_SKIP_BUILD=1``: a pure-Python install, no compiled backends.
- a normal install (a C++ compiler is present here): the ``cpp`` backend is there. The compile
  reuses the repository's ``build/`` objects when they are up to date (ninja), else takes about a
  minute on two cores.
- a build environment without torch (what a plain ``pip install .`` gets: build isolation): the
  install fails and says what to do, instead of silently leaving the compiled kernels out. Torch
  is hidden there by a stub package on ``PYTHONPATH`` whose import fails, so no network is needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not (REPO / "setup.py").exists(), reason="needs the source tree")


def _clean_env() -> dict[str, str]:
    """This process's environment without sasa's switches and PYTHONPATH (which would serve the
    source tree instead of the installed copy)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SASA_", "PYTHONPATH"))}


def _make_venv(path: Path) -> Path:
    # The venv sees the system's packages (torch, pip, setuptools >= 64: what setup.sh installs and
    # the build needs) through a plain path entry, not --system-site-packages: that would also run
    # the system's .pth files, among them the editable-install finder of this very repository,
    # which would serve sasa_kernels._C from the source tree to the venv.
    venv.EnvBuilder(system_site_packages=False, with_pip=False, symlinks=os.name != "nt").create(path)
    python = path / ("Scripts" if os.name == "nt" else "bin") / "python"
    venv_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    system_sites = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    Path(venv_site, "system_site_packages.pth").write_text("\n".join(system_sites) + "\n")
    return python


def _pip_install(tmp_path: Path, env_overrides: dict[str, str], *, verbose: bool = True) -> tuple[Path, subprocess.CompletedProcess]:
    python = _make_venv(tmp_path / "venv")
    env = _clean_env()
    env.update(env_overrides)
    cmd = [str(python), "-m", "pip", "install", *(["-v"] if verbose else []), "--no-build-isolation", "--no-deps",
           "--no-index", str(REPO)]
    return python, subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)


def _install(tmp_path: Path, env_overrides: dict[str, str]) -> tuple[Path, subprocess.CompletedProcess]:
    python, result = _pip_install(tmp_path, env_overrides)
    assert result.returncode == 0, f"pip install failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return python, result


def _report(python: Path, cwd: Path) -> dict:
    code = (
        "import json, sasa_kernels as sk\n"
        "from sasa_kernels.backends import compiled\n"
        "print(json.dumps({'file': sk.__file__, 'cpu': sk.backends('cpu'), 'info': compiled.build_info()}))\n"
    )
    env = _clean_env()
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stderr
    import json

    return json.loads(result.stdout.strip().splitlines()[-1])


def _pip_available() -> bool:
    return subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _pip_available(), reason="pip is not available")
def test_install_skip_build_is_pure_python(tmp_path):
    python, result = _install(tmp_path, {"SASA_SKIP_BUILD": "1"})
    assert "SASA_SKIP_BUILD=1" in result.stdout + result.stderr
    report = _report(python, tmp_path)
    assert str(tmp_path) in report["file"], report  # the installed copy, not the source tree
    assert report["info"] is None
    assert "cpp" not in report["cpu"] and "torch" in report["cpu"]
    site = Path(report["file"]).parent
    assert not list(site.glob("_C*")), "a pure-Python install must not ship the extension"
    # The shipped organism is package data of the installed copy (what `sasa demo` loads).
    shipped = REPO / "python" / "sasa" / "organism"
    for folder in ("model", "probe"):
        files = sorted(p.name for p in (shipped / folder).iterdir() if p.is_file())
        assert files, f"the source tree has no organism {folder}/"
        installed = site.parent / "sasa" / "organism" / folder
        assert sorted(p.name for p in installed.iterdir()) == files, f"organism {folder}/ not installed whole"
    # Every subpackage of the source tree is in the installed copy, with the stand-in's prompts, and
    # its command line (python -m sasa.cli runs the package's __main__) finds every command.
    source = REPO / "python" / "sasa"
    packages = sorted(str(p.parent.relative_to(source)) for p in source.rglob("__init__.py"))
    missing = [p for p in packages if not (site.parent / "sasa" / p / "__init__.py").is_file()]
    assert not missing, f"subpackages not installed: {missing}"
    assert (site.parent / "sasa" / "demo" / "data" / "demo_manifest.jsonl").is_file()
    env = _clean_env()
    where = subprocess.run([str(python), "-c", "import sasa; print(sasa.__file__)"], capture_output=True, text=True,
                           env=env, cwd=tmp_path, timeout=300)
    assert str(tmp_path) in where.stdout, (where.stdout, where.stderr)  # the installed copy, not the source tree
    shown = subprocess.run([str(python), "-m", "sasa.cli", "--help"], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=300)
    assert shown.returncode == 0, shown.stderr
    for command in ("calibrate", "score", "generate", "demo", "bench", "locate", "eval", "organism", "serve"):
        assert f"    {command} " in shown.stdout or f"    {command}\n" in shown.stdout, (command, shown.stdout)


@pytest.mark.skipif(not _pip_available(), reason="pip is not available")
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++ compiler")
def test_install_builds_cpp_backend(tmp_path):
    python, _ = _install(tmp_path, {"SASA_SKIP_CUDA": "1", "MAX_JOBS": os.environ.get("MAX_JOBS", "2")})
    report = _report(python, tmp_path)
    assert str(tmp_path) in report["file"], report
    assert report["cpu"][0] == "cpp", report
    assert report["info"]["backends"] == ["cpp"]
    assert report["info"]["build_system"] == "setup.py"


@pytest.mark.skipif(not _pip_available(), reason="pip is not available")
def test_install_without_torch_in_the_build_environment_fails_and_says_what_to_do(tmp_path):
    stub = tmp_path / "no_torch" / "torch"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError(\"No module named 'torch' (hidden by the test)\")\n")
    # Not -v: what a user sees by default.
    _, result = _pip_install(tmp_path, {"PYTHONPATH": str(stub.parent)}, verbose=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, "the install must not succeed without the compiled kernels, silently"
    assert "torch is not importable in the build environment" in output, output[-3000:]
    assert "pip install --no-build-isolation ." in output and "SASA_SKIP_BUILD=1 pip install ." in output
