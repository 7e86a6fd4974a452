#!/usr/bin/env bash
# benchmarks/gpu_check.sh: the one prepared script for a lent GPU machine (no network needed).
#
#     bash benchmarks/gpu_check.sh            # from anywhere; about 6 minutes on an H100
#
# Installs nothing. Steps:
#   1. build the C++/CUDA extension in place (setup.py build_ext --inplace); a failed build is
#      reported and the run goes on with the pure-Python backends;
#   2. the CUDA-marked tests: python -m pytest -q -m cuda tests (TRITON_INTERPRET unset);
#   3. floors: device-to-device copy bandwidth (bytes = 2 x size) and an empty kernel launch;
#   4. benchmarks/bench_ops.py --device cuda --quick: every op and backend against eager and
#      torch.compile; project ops as GB/s and fraction of the copy bandwidth, probe as us per call
#      and multiple of the empty launch;
#   5. time to first token of Llama-7B / LLaVA-1.5-7B-shaped models (ttft_benchmark: bench_ttft.py);
#   6. everything goes to benchmarks/results/<gpu-name>-<date>/, and (at most 8 files) to $OUT
#      when set; a short table (< 40 lines) is printed last.
#
# Knobs (environment): PYTHON (interpreter), GPU_CHECK_TOTAL_S (whole-run target, default 330),
# BUILD_TIMEOUT_S (default 170), TEST_TIMEOUT_S (default 120), SASA_BENCH_ARGS (extra bench_ops args).

set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
REPO=$(pwd)
unset TRITON_INTERPRET SASA_BACKEND
export PYTHONPATH="$REPO:$REPO/python${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
export MAX_JOBS=${MAX_JOBS:-16}
PY=${PYTHON:-$(command -v python || command -v python3)}
T0=$(date +%s)
TOTAL_S=${GPU_CHECK_TOTAL_S:-330}
elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( TOTAL_S - $(elapsed) )); }

GPU=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no-cuda')" 2>/dev/null || echo unknown)
if [ "$GPU" = "no-cuda" ] || [ "$GPU" = "unknown" ]; then
    echo "gpu_check: no CUDA device visible to torch ($PY): nothing to check"
    exit 2
fi
NAME=$(printf '%s' "$GPU" | tr -cs 'A-Za-z0-9._-' '-' | sed 's/^-*//; s/-*$//')
RES="benchmarks/results/${NAME:-unknown}-$(date -u +%Y%m%d)"
[ -e "$RES" ] && RES="$RES-$(date -u +%H%M%S)"
mkdir -p "$RES"
FINAL="$RES/final.txt"
: > "$FINAL"
say() { echo "$*" | tee -a "$FINAL"; }   # lines that go into the final short table

say "== gpu_check: $GPU, $(date -u +%Y-%m-%dT%H:%M:%SZ), $("$PY" -c 'import torch, sys; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}")' 2>/dev/null)"

# --- 1. build the extension in place --------------------------------------------------------------
echo "-- 1. building the extension (log: $RES/build.log)"
timeout "${BUILD_TIMEOUT_S:-170}" "$PY" setup.py build_ext --inplace > "$RES/build.log" 2>&1
rc=$?
BACKENDS=$("$PY" -c "import sasa_kernels as sk; print('cuda', sk.backends('cuda'), '| cpu', sk.backends('cpu'))" 2>&1 | tail -n 1)
HAVE_C=$("$PY" -c "import sasa_kernels._C" >/dev/null 2>&1 && echo yes || echo no)
if [ $rc -eq 124 ]; then
    say "build: TIMED OUT after ${BUILD_TIMEOUT_S:-170} s; going on without it (build.log)"
elif [ $rc -ne 0 ] || grep -q "WARNING: building the compiled extension" "$RES/build.log"; then
    say "build: FAILED (rc=$rc); going on with the pure-Python backends. First error:"
    say "  $(grep -m1 -E 'error|Error' "$RES/build.log" | cut -c1-150)"
elif [ "$HAVE_C" = yes ]; then
    say "build: ok, sasa_kernels._C loads ($(( $(date +%s) - T0 )) s)"
else
    say "build: finished but sasa_kernels._C does not import (no extension in this tree?)"
fi
say "backends: $BACKENDS"

# --- 2. CUDA-marked tests ---------------------------------------------------------------------------
echo "-- 2. CUDA tests (log: $RES/pytest.log)"
timeout "${TEST_TIMEOUT_S:-120}" "$PY" -m pytest -q -m cuda tests -p no:cacheprovider > "$RES/pytest.log" 2>&1
rc=$?
case $rc in
    0) say "tests -m cuda: $(tail -n 1 "$RES/pytest.log")" ;;
    5) say "tests -m cuda: none collected ($(tail -n 1 "$RES/pytest.log"))" ;;
    124) say "tests -m cuda: TIMED OUT after ${TEST_TIMEOUT_S:-120} s (pytest.log)" ;;
    *) say "tests -m cuda: FAILED rc=$rc: $(tail -n 1 "$RES/pytest.log")"
       grep -E '^(FAILED|ERROR)' "$RES/pytest.log" | head -n 5 | cut -c1-150 | while read -r l; do say "  $l"; done ;;
esac

# --- 3 + 4. floors and op benchmarks ----------------------------------------------------------------
TTFT_RESERVE_S=${TTFT_RESERVE_S:-150}  # time left for the TTFT benchmark (step 5; two 7B-shaped models)
BUDGET=$(( $(left) - TTFT_RESERVE_S - 40 ))
[ "$BUDGET" -lt 60 ] && BUDGET=60
echo "-- 3/4. floors + bench_ops (budget ${BUDGET} s; log: $RES/bench.log)"
# shellcheck disable=SC2086
timeout $(( BUDGET * 2 + 60 )) "$PY" benchmarks/bench_ops.py --device cuda --quick --budget-s "$BUDGET" \
    --out "$RES" --print summary ${SASA_BENCH_ARGS:-} > "$RES/bench.log" 2>&1
rc=$?
[ $rc -ne 0 ] && say "bench_ops: rc=$rc (bench.log): $(tail -n 1 "$RES/bench.log" | cut -c1-150)"
grep -m1 "budget of" "$RES/bench.log" >/dev/null && say "bench_ops: $(grep -m1 'budget of' "$RES/bench.log")"

# --- 5. time to first token (Hugging Face shim) --------------------------------------------------
# ===================================================================================================
# PLACE FOR THE HUGGING FACE ENGINEER: time-to-first-token of guard.generate vs model.generate on a
# Llama-7B-shaped and a LLaVA-1.5-7B-shaped model (random bf16 weights, scope all / last), e.g.
#     "$PY" benchmarks/bench_ttft.py --device cuda --budget-s "$1" --out "$2" --print summary
# Reuse benchmarks/_common.py (time_fn, record, write_csv, plot_sweep, pivot_table). Write
# "$2/ttft.csv" (copied to $OUT below: the one free slot), print at most ~8 summary lines, and
# raise TTFT_RESERVE_S above so the op benchmark leaves you the time.
ttft_benchmark() {
    local budget_s=$1 out_dir=$2
    # [HF shim] bench_ttft.py: Llama-7B- and LLaVA-1.5-7B-shaped models, random bf16 weights, 32 blocks.
    timeout $(( budget_s + 120 )) "$PY" benchmarks/bench_ttft.py --device cuda --gpu-shapes --budget-s "$budget_s" --out "$out_dir" --print summary
}
# ===================================================================================================
echo "-- 5. time to first token"
TTFT_OUT=$(ttft_benchmark "$(( $(left) - 10 ))" "$RES" 2>&1 | tail -n 8)

# --- 6. the short table and the files -------------------------------------------------------------
OUT_FILES="summary.txt ops.csv build.log pytest.log project.png probe_norm.png ttft.csv"  # + results.tar.gz: 8 at most
{
    cat "$FINAL"
    echo
    if [ -f "$RES/summary.txt" ]; then cat "$RES/summary.txt"; else echo "no op summary (see bench.log):"; tail -n 5 "$RES/bench.log"; fi
    echo
    echo "$TTFT_OUT"
    echo "results: $RES/ (all files; \$OUT gets final.txt as summary.txt, results.tar.gz and ${OUT_FILES#summary.txt }); $(elapsed) s"
} > "$RES/final.tmp"
mv "$RES/final.tmp" "$FINAL"
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    for f in $OUT_FILES; do
        [ -f "$RES/$f" ] && cp "$RES/$f" "$OUT/$f"
    done
    cp "$FINAL" "$OUT/summary.txt"
    tar -czf "$OUT/results.tar.gz" -C "$(dirname "$RES")" "$(basename "$RES")"
fi
echo
cat "$FINAL"
