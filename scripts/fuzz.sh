#!/usr/bin/env bash
# Builds the libFuzzer harnesses of fuzz/ (clang-14, -fsanitize=fuzzer,address,undefined)
# and runs each for SECONDS seconds (default 60) on a copy of its seed corpus, RUN_JOBS
# harnesses at a time (default nproc: each libFuzzer process uses one core). Installs what
# is missing of quant's dependencies and clang's tool set (scripts/install-deps.sh --clang).
# Exit status 1 if any harness found something; the reproducer is left in
# $OUT_DIR/<harness>/ (crash-*, leak-*, oom-*, timeout-*) and its log beside it.
#   scripts/fuzz.sh [SECONDS]
# Environment: BUILD_DIR (default build-fuzzers), OUT_DIR (default $BUILD_DIR/runs),
# FUZZERS (space-separated subset, default all), JOBS (build parallelism, default nproc),
# RUN_JOBS (harnesses run at the same time, default nproc), SEED (libFuzzer's -seed;
# default a fresh random seed per run, printed in each log). CI sets a fixed SEED, so its
# bounded run replays the start of an input sequence that was searched for longer before.
# FUZZ_CMAKE_ARGS: options for fuzz/CMakeLists.txt, e.g. -DQUANT_FUZZ_DEBUG_INFO=OFF (CI).
# FUZZ_STEP: "build" only builds, "run" only runs what an earlier build left; default both
# (CI builds in the background while its other builds run, and runs the harnesses last).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
build="${BUILD_DIR:-build-fuzzers}"
out="${OUT_DIR:-$build/runs}"
all="fuzz_npy fuzz_idx fuzz_idx_gzip fuzz_encodings_json fuzz_model_bundle fuzz_cli_params fuzz_uniform fuzz_lsq fuzz_observers fuzz_observer_load fuzz_kmeans fuzz_requantize fuzz_integer_gemm"
fuzzers="${FUZZERS:-$all}"
# fuzz_requantize and fuzz_integer_gemm use OpenMP (1 vs 2 threads): idle workers sleep
# instead of spinning beside the other harnesses.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"

step="${FUZZ_STEP:-all}"
case "$step" in
  all|build|run) ;;
  *) echo "fuzz.sh: FUZZ_STEP must be build, run or empty, not '$step'" >&2; exit 2 ;;
esac

if [ "$step" != run ]; then
  bash scripts/install-deps.sh --clang
  # shellcheck disable=SC2086
  cmake -S fuzz -B "$build" -DCMAKE_CXX_COMPILER=clang++-14 ${FUZZ_CMAKE_ARGS:-} >/dev/null
  # All harnesses: the default target, so that make compiles JOBS of them at once (CMake's
  # top-level Makefile builds several --target goals one after the other; on 2 cores the
  # whole CI fuzz step took ~11 min that way, 6 min 54 s this way). A subset: just those.
  if [ -z "${FUZZERS:-}" ]; then
    cmake --build "$build" -j "${JOBS:-$(nproc)}"
  else
    # shellcheck disable=SC2086
    cmake --build "$build" -j "${JOBS:-$(nproc)}" --target $fuzzers
  fi
fi
if [ "$step" = build ]; then
  exit 0
fi
for f in $fuzzers; do
  if [ ! -x "$build/$f" ]; then
    echo "fuzz.sh: $build/$f not found (FUZZ_STEP=run needs a build first)" >&2
    exit 2
  fi
done

bin="$(cd "$build" && pwd)"
run_jobs="${RUN_JOBS:-$(nproc)}"
# One harness: fresh copy of its seeds, bounded run, log in $out/<harness>/log.
run_one() {
  local f="$1" work="$out/$1"
  rm -rf "$work"
  mkdir -p "$work/corpus"
  cp fuzz/corpus/"$f"/* "$work/corpus/" 2>/dev/null || true
  # -rss_limit_mb / -malloc_limit_mb: a reader that allocates what a header claims is a finding.
  (cd "$work" && "$bin/$f" ${SEED:+-seed="$SEED"} -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=20 \
     -print_final_stats=1 corpus >log 2>&1)
}
declare -A pid_of
running=0
for f in $fuzzers; do
  if [ "$running" -ge "$run_jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_one "$f" &
  pid_of[$f]=$!
  running=$((running + 1))
done

status=0
printf '%-22s %12s %10s  %s\n' harness executions exec/s result
for f in $fuzzers; do
  work="$out/$f"
  if wait "${pid_of[$f]}"; then
    result=ok
  else
    result="FOUND (see $work/log)"
    status=1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/log" | tail -1)
  printf '%-22s %12s %10s  %s\n' "$f" "${execs:-?}" "${rate:-?}" "$result"
done
exit $status
