#!/usr/bin/env bash
# Set-up for a fresh machine (and what .ci/run does first). It installs what the README's two
# commands need, into the interpreter named by $PYTHON (default: python3), and says which one:
#
#   sasa demo                    this package (editable) + the `hf` extra (transformers,
#                                safetensors, tqdm, pillow)
#   python3 -m pytest -q tests   + the `dev` extra (pytest, hypothesis, pytest-benchmark,
#                                matplotlib) + the `triton` extra: the Triton kernels are tested on
#                                CPU under the Triton interpreter (TRITON_INTERPRET=1, which
#                                tests/conftest.py sets); on a CUDA machine Triton is also the
#                                first-choice backend. `sasa demo` itself does not need Triton.
#                                + the `dist` extra (accelerate): the device_map placement tests.
#                                + the `serve` extra (fastapi, uvicorn, starlette, openai, pydantic,
#                                rich: transformers serve's server): the `sasa serve` tests.
#
#  1. torch: installed only where none is importable. torch==2.13.0 is the CPU build this
#     project's machines carry on local disk; any other requirement would pull a multi-GB CUDA
#     build. An existing torch (a GPU machine's own) is left alone.
#  2. the package, editable, built against that torch (--no-build-isolation: a build environment
#     would fetch its own torch). The C++ compile takes about a minute on 2 cores; its steps are
#     shown as they run. On failure the last lines of the full pip log are printed.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

"$PYTHON" -c 'import sys; print(f"setup: installing into {sys.executable} (Python {sys.version.split()[0]}, prefix {sys.prefix})")'

if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    echo "setup: no torch found; installing torch==2.13.0 (CPU build)"
    "$PYTHON" -m pip install --quiet torch==2.13.0
else
    "$PYTHON" -c 'import torch; print(f"setup: using the installed torch {torch.__version__} (left as it is)")'
fi
"$PYTHON" -m pip install --quiet "setuptools>=64" wheel

# pip -v streams the build's output; keep the compile steps (ninja's "[i/n] ...") and setup.py's
# own notes, each with the seconds since the start, and the rest in a log for when it fails.
log=$(mktemp "${TMPDIR:-/tmp}/sasa-setup.XXXXXX")
progress() {
    local line
    while IFS= read -r line; do
        line=${line#"${line%%[![:space:]]*}"}  # pip -v indents the build's output
        case "$line" in
            "sasa-kernels setup: "*)
                printf 'setup: %4ss  %s\n' "$SECONDS" "${line#sasa-kernels setup: }" ;;
            "["[0-9]*"/"[0-9]*"]"*)
                step=${line%%]*}]
                if [[ "$line" =~ [[:space:]]-c[[:space:]]+([^[:space:]]+\.(cpp|cu|cc)) ]]; then
                    what="compiling ${BASH_REMATCH[1]#"$PWD/"}"
                elif [[ "$line" == *" -shared "* || "$line" == *" -o "*".so"* ]]; then
                    what="linking sasa_kernels._C"
                else
                    what=${line#*] }; what=${what:0:100}
                fi
                printf 'setup: %4ss  %s %s\n' "$SECONDS" "$step" "$what" ;;
        esac
    done
}
echo "setup: installing sasa-kernels (editable) with the dev, hf, triton, dist and serve extras; building sasa_kernels._C"
if ! "$PYTHON" -m pip install -v --no-build-isolation -e ".[dev,hf,triton,dist,serve]" 2>&1 | tee "$log" | progress; then
    echo "setup: FAILED; the full pip log is $log. Its last lines:" >&2
    tail -n 60 "$log" >&2
    exit 1
fi
rm -f "$log"
"$PYTHON" - <<'EOF'
import sys, torch, sasa_kernels as sk
from sasa_kernels.backends import compiled
info = compiled.build_info() or {}
print(f"setup: done in {sys.executable}: sasa-kernels {sk.__version__}, torch {torch.__version__}, "
      f"CPU backends {sk.backends('cpu')}, CPU kernels: {info.get('cpu_capability', 'not built')}")
EOF
