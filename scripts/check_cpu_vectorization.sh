#!/usr/bin/env bash
# Compile csrc/cpu/kernels.cpp alone and show, per row function and per instruction set (portable:
# the baseline, SSE2 on x86-64; avx2; avx512), how many instructions use 128/256/512-bit vector
# registers (xmm/ymm/zmm) and how many are scalar float adds (vaddss/vaddsd: a reduction the
# compiler failed to vectorize shows up there), plus GCC's -fopt-info-vec count of vectorized
# loops. Needs g++, torch (for its headers) and objdump.
# Usage: scripts/check_cpu_vectorization.sh [extra g++ flags]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
TI=$("$PY" -c "import torch, os; print(os.path.dirname(torch.__file__))")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${CXX:-g++}" -O3 -ffp-contract=off -std=c++20 -fPIC -c csrc/cpu/kernels.cpp -o "$tmp/k.o" -I"$TI/include" \
  -I"$TI/include/torch/csrc/api/include" -Icsrc -fopenmp -fopt-info-vec-optimized "$@" 2>"$tmp/vec.txt"
echo "loops vectorized (GCC -fopt-info-vec-optimized, all instantiations and instruction sets): $(grep -c 'loop vectorized' "$tmp/vec.txt")"
objdump -d --no-show-raw-insn -C "$tmp/k.o" | "$PY" -c '
import re, sys, collections
names = {"0": "f32", "1": "f16", "2": "bf16"}
stats = collections.OrderedDict()
name = None
for line in sys.stdin:
    m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
    if m:
        fn = re.search(r"sasa::cpu::(portable|avx2|avx512)::(project_rows|probe_rows|gather_row)<(.*?)>\(", m.group(1))
        name = None
        if fn:
            args = re.sub(r"\(sasa::Dtype\)(\d)", lambda a: names[a.group(1)], fn.group(3))
            name = f"{fn.group(2)}<{args}> [{fn.group(1)}]"
            stats[name] = collections.Counter()
        continue
    if name:
        c = stats[name]
        c["insns"] += 1
        c["zmm"] += "%zmm" in line
        c["ymm"] += "%ymm" in line
        c["xmm"] += "%xmm" in line
        c["scalar_add"] += bool(re.search(r"\svadds[sd]\s", line))
print("%-44s %6s %5s %5s %5s %10s" % ("row function [instruction set]", "insns", "xmm", "ymm", "zmm", "scalar add"))
for k, c in sorted(stats.items()):
    print("%-44s %6d %5d %5d %5d %10d" % (k, c["insns"], c["xmm"], c["ymm"], c["zmm"], c["scalar_add"]))
'
