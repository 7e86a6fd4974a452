#!/usr/bin/env bash
# benchmarks/gpu_check.sh: the one prepared script for a lent GPU machine (no network needed).
#
#     bash benchmarks/gpu_check.sh                         # from anywhere; sized for 9 minutes (not yet run on a GPU)
#     GPU_CHECK_DEVICE=cpu bash benchmarks/gpu_check.sh    # dry run of every step on a CPU, tiny sizes
#
# Installs nothing and never changes the card's settings (clocks, power, persistence, MIG, ECC):
# it only reads them (nvidia-smi --query-gpu). Steps, each under its own timeout so the whole run
# stays inside GPU_CHECK_TOTAL_S:
#   1. build the C++/CUDA extension in place (setup.py build_ext --inplace); a failed build is
#      reported and the run goes on with the pure-Python backends (skipped in the CPU dry run);
#   2. the CUDA-marked tests: python -m pytest -q -m cuda tests (TRITON_INTERPRET unset);
#   3. the kernels: bench_ops.py --quick (every op and backend against eager, torch.compile and a
#      copy of the same bytes, interleaved) with the host-overhead rows first;
#   4. end to end: bench_ttft.py --grid gpu: random bf16 models with realistic width (hidden 4096,
#      32 blocks: Llama-7B and LLaVA-1.5-7B shapes; nothing downloaded), unguarded, scope all and
#      last, and the naive two-pass method; time to first token, per-token cost, peak memory;
#   5. everything goes to benchmarks/results/<gpu-name>-<date>/ (GPU_CHECK_RESULTS overrides), and
#      at most 8 files to $OUT when it is set; a short summary is printed last.
#
# Knobs (environment): PYTHON (interpreter), GPU_CHECK_TOTAL_S (whole run, default 540),
# BUILD_TIMEOUT_S (150), TEST_TIMEOUT_S (90), TTFT_BUDGET_S (170: time for step 4),
# SASA_BENCH_ARGS (extra bench_ops.py arguments), GPU_CHECK_DEVICE (cuda; cpu = dry run).

set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
REPO=$(pwd)
unset TRITON_INTERPRET SASA_BACKEND
export PYTHONPATH="$REPO:$REPO/python${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
export MAX_JOBS=${MAX_JOBS:-16}
PY=${PYTHON:-$(command -v python3 || command -v python)}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
T0=$(date +%s)
TOTAL_S=${GPU_CHECK_TOTAL_S:-540}
elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( TOTAL_S - $(elapsed) )); }
at_least() { if [ "$1" -lt "$2" ]; then echo "$2"; else echo "$1"; fi; }

if [ "$DEVICE" = cuda ]; then
    GPU=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no-cuda')" 2>/dev/null || echo unknown)
    if [ "$GPU" = "no-cuda" ] || [ "$GPU" = "unknown" ]; then
        echo "gpu_check: no CUDA device visible to torch ($PY): nothing to check (GPU_CHECK_DEVICE=cpu for a dry run)"
        exit 2
    fi
    OPS_GRID=--quick; TTFT_GRID=gpu
else
    GPU="cpu-dry-run"; OPS_GRID=--tiny; TTFT_GRID=tiny
fi
NAME=$(printf '%s' "$GPU" | tr -cs 'A-Za-z0-9._-' '-' | sed 's/^-*//; s/-*$//')
RES=${GPU_CHECK_RESULTS:-"benchmarks/results/${NAME:-unknown}-$(date -u +%Y%m%d)"}
[ -e "$RES/final.txt" ] && RES="$RES-$(date -u +%H%M%S)"
mkdir -p "$RES" || exit 1
FINAL="$RES/final.txt"
: > "$FINAL"
say() { echo "$*" | tee -a "$FINAL"; }   # lines that go into the final summary

say "== gpu_check: $GPU, $(date -u +%Y-%m-%dT%H:%M:%SZ), $("$PY" -c 'import sys, torch, transformers; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, transformers {transformers.__version__}")' 2>&1 | tail -n 1)"
if [ "$DEVICE" = cuda ] && command -v nvidia-smi >/dev/null 2>&1; then  # read-only queries
    say "card: $(nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,persistence_mode --format=csv,noheader 2>&1 | head -n 1)"
fi

# --- 1. build the extension in place --------------------------------------------------------------
if [ "$DEVICE" = cuda ]; then
    echo "-- 1. building the extension (log: $RES/build.log)"
    timeout "${BUILD_TIMEOUT_S:-150}" "$PY" setup.py build_ext --inplace > "$RES/build.log" 2>&1
    rc=$?
    HAVE_C=$("$PY" -c "import sasa_kernels._C" >/dev/null 2>&1 && echo yes || echo no)
    if [ $rc -eq 124 ]; then
        say "build: TIMED OUT after ${BUILD_TIMEOUT_S:-150} s; going on without it (build.log)"
    elif [ $rc -ne 0 ] || grep -q "WARNING: building the compiled extension" "$RES/build.log"; then
        say "build: FAILED (rc=$rc); going on with the pure-Python backends. First error:"
        say "  $(grep -m1 -E 'error|Error' "$RES/build.log" | cut -c1-150)"
    elif [ "$HAVE_C" = yes ]; then
        say "build: ok, sasa_kernels._C loads ($(elapsed) s)"
    else
        say "build: finished but sasa_kernels._C does not import"
    fi
else
    say "build: skipped (CPU dry run: the tree is not rebuilt)"
fi
say "backends: $("$PY" -c "import sasa_kernels as sk; print('cuda', sk.backends('cuda'), '| cpu', sk.backends('cpu'))" 2>&1 | tail -n 1)"

# --- 2. CUDA-marked tests ---------------------------------------------------------------------------
echo "-- 2. CUDA tests (log: $RES/pytest.log)"
# --continue-on-collection-errors: a test module that imports a package this machine lacks (the
# GPU machine has pytest but not necessarily hypothesis or PIL, which only CPU-side test modules
# use) must not stop every other module's CUDA tests from running.
timeout "${TEST_TIMEOUT_S:-90}" "$PY" -m pytest -q -m cuda tests -p no:cacheprovider --continue-on-collection-errors \
    > "$RES/pytest.log" 2>&1
rc=$?
not_collected=$(grep -E '^ERROR tests/' "$RES/pytest.log" | grep -vc '::')
failed_tests=$(grep -cE '^(FAILED|ERROR) tests/.*::' "$RES/pytest.log")
if [ "$rc" -eq 1 ] && [ "$not_collected" -gt 0 ] && [ "$failed_tests" -eq 0 ]; then
    rc=collect  # no collected test failed; some modules could not be imported
fi
case $rc in
    0) say "tests -m cuda: $(tail -n 1 "$RES/pytest.log")" ;;
    collect) say "tests -m cuda: $(tail -n 1 "$RES/pytest.log"): no collected test failed; $not_collected modules not importable here:"
       grep -E '^ERROR tests/' "$RES/pytest.log" | grep -v '::' | cut -c7- | head -n 8 | while read -r m; do say "  $m"; done
       say "  (missing: $(grep -oE "No module named '[^']+'" "$RES/pytest.log" | sort -u | cut -d"'" -f2 | tr '\n' ' '))" ;;
    5) say "tests -m cuda: none collected ($(tail -n 1 "$RES/pytest.log"))" ;;
    124) say "tests -m cuda: TIMED OUT after ${TEST_TIMEOUT_S:-90} s (pytest.log)" ;;
    *) say "tests -m cuda: FAILED rc=$rc: $(tail -n 1 "$RES/pytest.log")"
       grep -E '^(FAILED|ERROR)' "$RES/pytest.log" | head -n 5 | cut -c1-150 | while read -r l; do say "  $l"; done ;;
esac

# --- 3. kernels ------------------------------------------------------------------------------------
TTFT_BUDGET_S=${TTFT_BUDGET_S:-170}
OPS_BUDGET=$(at_least $(( ( $(left) - TTFT_BUDGET_S - 60 ) * 2 / 3 )) 30)
echo "-- 3. bench_ops $OPS_GRID (budget ${OPS_BUDGET} s; log: $RES/bench_ops.log)"
# shellcheck disable=SC2086
timeout $(( OPS_BUDGET * 3 / 2 + 45 )) "$PY" benchmarks/bench_ops.py --device "$DEVICE" $OPS_GRID \
    --budget-s "$OPS_BUDGET" --out "$RES" --print summary ${SASA_BENCH_ARGS:-} > "$RES/bench_ops.log" 2>&1
rc=$?
[ $rc -ne 0 ] && say "bench_ops: rc=$rc (bench_ops.log): $(tail -n 1 "$RES/bench_ops.log" | cut -c1-150)"
grep -m1 "budget of" "$RES/bench_ops.log" >/dev/null && say "bench_ops: $(grep -m1 'budget of' "$RES/bench_ops.log")"

# --- 4. end to end: time to first token, per-token cost, memory -------------------------------------
TTFT_S=$(at_least $(( $(left) - 40 )) 30)
echo "-- 4. bench_ttft --grid $TTFT_GRID (budget ${TTFT_S} s; log: $RES/bench_ttft.log)"
timeout $(( TTFT_S + 90 )) "$PY" benchmarks/bench_ttft.py --device "$DEVICE" --grid "$TTFT_GRID" \
    --budget-s "$TTFT_S" --out "$RES" --quiet > "$RES/bench_ttft.log" 2>&1
rc=$?
[ $rc -ne 0 ] && say "bench_ttft: rc=$rc (bench_ttft.log): $(tail -n 1 "$RES/bench_ttft.log" | cut -c1-150)"

# --- 5. the summary and the files ------------------------------------------------------------------
{
    cat "$FINAL"
    echo
    if [ -f "$RES/ops_summary.txt" ]; then cat "$RES/ops_summary.txt"; else echo "no kernel summary (bench_ops.log):"; tail -n 5 "$RES/bench_ops.log"; fi
    echo
    if [ -f "$RES/ttft_table.txt" ]; then cat "$RES/ttft_table.txt"; else echo "no TTFT table (bench_ttft.log):"; tail -n 5 "$RES/bench_ttft.log"; fi
    echo "results: $RES/; $(elapsed) s"
} > "$RES/final.tmp"
mv "$RES/final.tmp" "$FINAL"
if [ -n "${OUT:-}" ]; then  # 8 files at most: the summary, both CSVs, the logs, and everything as a tarball
    mkdir -p "$OUT"
    for f in final.txt ops.csv ttft.csv build.log pytest.log bench_ops.log bench_ttft.log; do
        [ -f "$RES/$f" ] && cp "$RES/$f" "$OUT/$f"
    done
    tar -czf "$OUT/results.tar.gz" -C "$(dirname "$RES")" "$(basename "$RES")"
fi
echo
cat "$FINAL"
