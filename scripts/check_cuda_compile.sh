#!/usr/bin/env bash
# Compile-check the CUDA kernels (csrc/cuda/*.cu) with nvcc for sm_80 and sm_90, without a GPU and
# without a CUDA build of torch: the .cu files are compiled to object files (device code for both
# archs, and the host code with its torch/ATen/c10-cuda headers) against the headers of the
# installed torch, which CPU wheels ship too. Nothing is linked or run.
#
# Usage: scripts/check_cuda_compile.sh            (NVCC, PYTHON, CUDA_ARCHS override the defaults)
# Exit status: 0 when every .cu file compiles for every arch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
NVCC=${NVCC:-$(command -v nvcc || echo "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc")}
ARCHS=${CUDA_ARCHS:-"80 90"}
if [ ! -x "$NVCC" ]; then
  echo "check_cuda_compile: nvcc not found (set NVCC or CUDA_HOME)" >&2
  exit 2
fi
TI=$("$PY" -c "import torch, os; print(os.path.dirname(torch.__file__))")
gencode=()
for a in $ARCHS; do gencode+=("-gencode=arch=compute_${a},code=sm_${a}"); done
# torch's own nvcc flags (torch.utils.cpp_extension.COMMON_NVCC_FLAGS) and C++ standard.
std=$("$PY" -c "import re, inspect, torch.utils.cpp_extension as c; m = re.search(r'-std=c\+\+(\d+)', inspect.getsource(c)); print(m.group(1) if m else 17)")
flags=(-std=c++"$std" -O3 -DSASA_WITH_CUDA -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__
  -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr
  -DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H -Xcompiler -fPIC
  -I"$TI/include" -I"$TI/include/torch/csrc/api/include" -Icsrc)
# A CPU build of torch lacks the generated c10/cuda/impl/cuda_cmake_macros.h; it only sets
# C10_CUDA_BUILD_SHARED_LIBS, which matters on Windows. Skip it when absent.
if [ ! -f "$TI/include/c10/cuda/impl/cuda_cmake_macros.h" ]; then
  flags+=(-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE)
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "check_cuda_compile: $("$NVCC" --version | grep -o 'release [0-9.]*'), torch $("$PY" -c 'import torch; print(torch.__version__)') headers, archs: $ARCHS"
status=0
for cu in csrc/cuda/*.cu; do
  start=$(date +%s)
  if "$NVCC" -c "$cu" -o "$tmp/$(basename "$cu").o" "${gencode[@]}" "${flags[@]}" ${NVCC_EXTRA_FLAGS:-}; then
    echo "check_cuda_compile: OK   $cu ($(( $(date +%s) - start ))s)"
    if command -v cuobjdump >/dev/null 2>&1 || [ -x "$(dirname "$NVCC")/cuobjdump" ]; then
      cuobj=$(command -v cuobjdump || echo "$(dirname "$NVCC")/cuobjdump")
      echo "check_cuda_compile:      cubins: $("$cuobj" --list-elf "$tmp/$(basename "$cu").o" | grep -o 'sm_[0-9]*' | sort -u | tr '\n' ' ')"
    fi
  else
    echo "check_cuda_compile: FAIL $cu" >&2
    status=1
  fi
done
exit $status
