#!/usr/bin/env bash
# Set-up for a fresh machine (and what .ci/run does first).
#  1. torch: installed only where none is present. torch==2.13.0 is the CPU build this project's
#     machines carry on local disk; any other requirement would pull a multi-GB CUDA build. An
#     existing torch (a GPU machine's own) is left alone.
#  2. the package, editable, built against that torch (--no-build-isolation: a build environment
#     would fetch its own torch), with the test, benchmark, Hugging Face and Triton extras.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    echo "setup: no torch found; installing torch==2.13.0 (CPU build)"
    "$PYTHON" -m pip install --quiet torch==2.13.0
fi
"$PYTHON" -m pip install --quiet "setuptools>=64" wheel
"$PYTHON" -m pip install --quiet --no-build-isolation -e ".[dev,hf,bench,triton]"
"$PYTHON" -c "import torch, sasa_kernels as sk; print(f'setup: sasa-kernels {sk.__version__}, torch {torch.__version__}, CPU backends {sk.backends(\"cpu\")}')"
