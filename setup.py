"""Build script. Package metadata lives in pyproject.toml.

The import packages are ``sasa_kernels`` (repo root) and ``sasa`` (``python/sasa``).

The compiled extension ``sasa_kernels._C`` (C++ CPU kernels, plus CUDA kernels when torch has CUDA
and ``nvcc`` is found) is built with ``torch.utils.cpp_extension`` against the torch already
installed, so install with ``pip install --no-build-isolation ...``.

- ``SASA_SKIP_BUILD=1``: pure-Python install (the ``torch`` / ``triton`` backends only).
- ``SASA_SKIP_CUDA=1``: build the C++ CPU kernels only, even where CUDA is available.
- No torch importable in the build environment (a plain ``pip install .`` builds in an isolated
  environment that has no torch), no C++ compiler, or a failed compile: the build FAILS with a
  message saying what to do (``pip install --no-build-isolation .``, or ``SASA_SKIP_BUILD=1`` for
  pure Python). It used to install pure Python with a warning, but pip shows a successful build's
  output only with ``-v``, so nobody saw the warning and the C++ kernels were silently missing.
  A failure is the one outcome pip always shows. ``sdist`` / metadata steps never build, so they
  work without torch.
- ``MAX_JOBS``: parallel compile jobs (ninja); ``TORCH_CUDA_ARCH_LIST``: CUDA archs (default: the
  visible GPU's, else torch's list).
"""

from __future__ import annotations

import glob
import importlib.machinery
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import warnings
from typing import NoReturn

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

packages = find_packages(include=["sasa_kernels", "sasa_kernels.*"])
packages += ["sasa"] + ["sasa." + p for p in find_packages("python/sasa")]

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("csrc")
CPP_SOURCES = [
    os.path.join(CSRC, "module.cpp"), os.path.join(CSRC, "entry.cpp"), os.path.join(CSRC, "ops.cpp"),
    os.path.join(CSRC, "cpu", "kernels.cpp"),
]
CUDA_SOURCES = [os.path.join(CSRC, "cuda", "kernels.cu")]


_EXT_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def _note(msg: str) -> None:
    # pip shows a build's output only with -v; warnings.warn also reaches logs that keep stderr.
    print(f"sasa-kernels setup: {msg}", file=sys.stderr)


def _warn(msg: str) -> None:
    _note("WARNING: " + msg)
    warnings.warn(f"sasa-kernels: {msg}", stacklevel=2)


_WHAT_TO_DO = """\
To build the compiled kernels against the torch you have, install torch first and build without
isolation (setup.sh in the source tree does exactly this):

    pip install --no-build-isolation .          (or: pip install --no-build-isolation -e .)

To install without them (pure Python: the torch and triton backends only, slower on CPU):

    SASA_SKIP_BUILD=1 pip install ."""


def _fail(problem: str) -> NoReturn:
    """Stop the build with ``problem`` and what to do, framed so it stands out in pip's output."""
    bar = "=" * 78
    print(f"\n{bar}\nsasa-kernels: cannot build the compiled extension sasa_kernels._C:\n{problem}\n\n"
          f"{_WHAT_TO_DO}\n{bar}\n", file=sys.stderr, flush=True)
    raise SystemExit(1)


def _failing_build(problem: str):
    """``(ext_modules, cmdclass)`` whose ``build_ext`` stops with ``problem``.

    The failure is deferred to ``build_ext``, which only wheel and editable builds run: metadata
    and sdist steps (also run in build environments without torch) keep working.
    """

    class FailingBuildExtension(build_ext):
        def run(self):
            _fail(problem)

    return [Extension("sasa_kernels._C", sources=[])], {"build_ext": FailingBuildExtension}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _cxx_compiler() -> str | None:
    cxx = os.environ.get("CXX") or sysconfig.get_config_var("CXX") or "c++"
    exe = cxx.split()[0]
    return shutil.which(exe) or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


def _nvcc_version(nvcc: str) -> str | None:
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else None


def _remove_stale_build_outputs() -> None:
    """Delete libraries an earlier build left in build/lib*, which a wheel would otherwise ship.

    (An editable install imports the package from the source tree, so a ``_C`` library built there
    earlier stays in use; delete ``sasa_kernels/_C*`` by hand for a pure-Python editable install.)
    """
    for path in glob.glob(os.path.join(HERE, "build", "lib*", "sasa_kernels", "_C*")):
        _note(f"removing the stale {path}")
        os.remove(path)


def _has_files(directory: str) -> bool:
    return any(files for _, _, files in os.walk(directory))


def _write_config_header(directory: str, torch_version: str) -> None:
    os.makedirs(directory, exist_ok=True)
    text = (
        "// Generated by setup.py: the facts sasa_kernels._C.build_info() reports.\n"
        "#pragma once\n"
        f"#define SASA_TORCH_VERSION {json.dumps(torch_version)}\n"
        '#define SASA_BUILD_SYSTEM "setup.py"\n'
    )
    path = os.path.join(directory, "sasa_build_config.h")
    old = open(path).read() if os.path.exists(path) else None
    if old != text:  # keep the timestamp when unchanged, so ninja does not rebuild
        with open(path, "w") as f:
            f.write(text)


def _pip_cudart(torch, library_dirs: list[str]) -> str | None:
    """The CUDA runtime a pip-installed CUDA torch ships (``nvidia/cu13/lib/libcudart.so.13``), when
    the linker would find no ``libcudart.so`` to satisfy cpp_extension's ``-lcudart``.

    A CUDA toolkit provides ``lib64/libcudart.so``; an environment with nvcc but only torch's own
    runtime libraries (pip's ``nvidia-*`` packages, which have the versioned file alone) compiles
    every source and then fails to link. Linking that file by path works, and at run time it is
    the library torch has already loaded.
    """
    if sys.platform != "linux" or not torch.version.cuda:
        return None
    search = list(library_dirs) + os.environ.get("LIBRARY_PATH", "").split(os.pathsep)
    search += ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib", "/lib/x86_64-linux-gnu"]
    if any(d and os.path.exists(os.path.join(d, "libcudart.so")) for d in search):
        return None
    try:
        import nvidia  # the namespace package of pip's CUDA libraries
    except ImportError:
        return None
    major = torch.version.cuda.split(".")[0]
    for base in getattr(nvidia, "__path__", []):
        found = sorted(glob.glob(os.path.join(base, "*", "lib", f"libcudart.so.{major}*")))
        if found:
            return found[0]
    return None


def _openmp_flag(torch) -> str | None:
    """The compiler flag for OpenMP when torch parallelizes with OpenMP (``None`` otherwise)."""
    if sys.platform == "win32" or "OpenMP" not in torch.__config__.parallel_info():
        return None
    return "-fopenmp"


def _extension_setup():
    """``(ext_modules, cmdclass)`` for the compiled extension, or ``([], {})`` for pure Python."""
    if _flag("SASA_SKIP_BUILD"):
        _note("SASA_SKIP_BUILD=1: pure-Python install, no compiled backends")
        _remove_stale_build_outputs()
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except Exception as exc:  # noqa: BLE001 - any failure means no extension
        return _failing_build(
            f"torch is not importable in the build environment ({type(exc).__name__}: {exc}).\n"
            "A plain `pip install .` builds in an isolated environment that has no torch (on purpose: "
            "it would download\na multi-GB CUDA build that may not match the torch you run)."
        )
    if _cxx_compiler() is None:
        return _failing_build("no C++ compiler was found (install g++ or clang++, or set CXX).")

    with_cuda = False
    if torch.version.cuda and not _flag("SASA_SKIP_CUDA"):
        cuda_home = cpp_extension.CUDA_HOME
        nvcc = os.path.join(cuda_home, "bin", "nvcc") if cuda_home else None
        if nvcc and os.path.exists(nvcc):
            with_cuda = True
            _note(f"building C++ and CUDA kernels (nvcc {_nvcc_version(nvcc)} at {nvcc}, torch CUDA {torch.version.cuda})")
        else:
            _note("torch has CUDA but nvcc was not found (set CUDA_HOME): building the C++ CPU kernels only")
    else:
        _note("building the C++ CPU kernels" + (" (SASA_SKIP_CUDA=1)" if torch.version.cuda else " (torch has no CUDA)"))

    # String facts go through a generated header: quoted -D values do not survive both the ninja
    # (shell) and the plain (no shell) compile paths of cpp_extension.
    gen_dir = os.path.join(HERE, "build", "sasa_generated")
    _write_config_header(gen_dir, torch.__version__)
    # -g0: Python's CFLAGS carry -g; debug info would triple the library's size and link time.
    # -ffp-contract=off: no FMA contraction where the reference rounds a product before adding.
    cxx_flags = ["/O2"] if sys.platform == "win32" else ["-O3", "-g0", "-ffp-contract=off"]
    # at::parallel_for is inlined from ATen's headers: with torch's OpenMP backend it only runs in
    # parallel when the extension itself is compiled and linked with OpenMP (else it is serial).
    openmp = _openmp_flag(torch)
    if openmp:
        cxx_flags.append(openmp)
    sources = list(CPP_SOURCES)
    kwargs = {"include_dirs": [gen_dir, os.path.join(HERE, CSRC)], "extra_link_args": [openmp] if openmp else []}
    if with_cuda:
        cxx_flags.append("-DSASA_WITH_CUDA")
        sources += CUDA_SOURCES
        kwargs["extra_compile_args"] = {"cxx": cxx_flags, "nvcc": ["-O3", "-DSASA_WITH_CUDA"]}
        ext = cpp_extension.CUDAExtension("sasa_kernels._C", sources, **kwargs)
        cudart = _pip_cudart(torch, ext.library_dirs)
        if cudart is not None:
            _note(f"no libcudart.so for the linker: linking torch's CUDA runtime {cudart}")
            ext.libraries = [lib for lib in ext.libraries if lib != "cudart"]
            ext.extra_link_args += [cudart, f"-Wl,-rpath,{os.path.dirname(cudart)}"]
    else:
        kwargs["extra_compile_args"] = {"cxx": cxx_flags}
        ext = cpp_extension.CppExtension("sasa_kernels._C", sources, **kwargs)

    class SasaBuildExtension(cpp_extension.BuildExtension):
        """BuildExtension that keeps ninja's objects between builds and fails with what to do."""

        def finalize_options(self):
            super().finalize_options()
            # In a virtual environment distutils adds <venv>/include (normally empty): it would
            # make each venv's compile commands differ and defeat ninja's reuse of build/ objects.
            venv_inc = os.path.join(sys.exec_prefix, "include")
            if sys.exec_prefix != sys.base_exec_prefix and not _has_files(venv_inc):
                self.include_dirs = [d for d in self.include_dirs or [] if os.path.abspath(d) != os.path.abspath(venv_inc)]
            if getattr(self, "editable_mode", False):
                # setuptools builds editable installs in a fresh temporary directory; keeping the
                # objects under build/ (where a regular build puts them) lets ninja reuse them.
                tag = f"{sysconfig.get_platform()}-{sys.implementation.cache_tag}"
                self.build_temp = os.path.join(HERE, "build", f"temp.{tag}")

        def run(self):
            try:
                super().run()
            except Exception as exc:  # noqa: BLE001 - compiler errors, missing headers, ninja, ...
                cuda_hint = (
                    "\nIf only the CUDA part fails, SASA_SKIP_CUDA=1 builds the C++ CPU kernels alone."
                    if with_cuda else ""
                )
                _fail(
                    f"the compile failed ({type(exc).__name__}: {exc}); the compiler's output is above "
                    f"(pip shows all of it with -v).{cuda_hint}"
                )

        def copy_file(self, infile, outfile, *args, **kwargs):
            # In-place copies of the built library (editable installs) go through a rename, so a
            # process that has the old file loaded keeps a valid mapping instead of crashing.
            if not (isinstance(outfile, str) and outfile.endswith(_EXT_SUFFIXES)):
                return super().copy_file(infile, outfile, *args, **kwargs)
            tmp = f"{outfile}.tmp-{os.getpid()}"
            result = super().copy_file(infile, tmp, *args, **kwargs)
            if os.path.exists(tmp):
                os.replace(tmp, outfile)
            return outfile, result[1]

    return [ext], {"build_ext": SasaBuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extension_setup()

setup(
    packages=packages,
    package_dir={"sasa": "python/sasa"},
    # The organism's weights, processor files and probe are package data: sasa.organism.load() and
    # `sasa demo` need nothing downloaded.
    package_data={"sasa.demo": ["data/*.jsonl"], "sasa": ["py.typed"], "sasa_kernels": ["py.typed"],
                  "sasa.organism": ["model/*", "probe/*"]},
    # A library an editable build left in the source tree is not package data: only build_ext
    # (when it runs) puts _C into a wheel, so SASA_SKIP_BUILD=1 really is pure Python.
    exclude_package_data={"sasa_kernels": ["_C*"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
