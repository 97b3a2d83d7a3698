#!/usr/bin/env bash
# Installs what is missing, builds the whole test suite (SIMD build: -march=native,
# XTENSOR_USE_XSIMD, OpenMP, -ffp-contract=off) and runs it with ctest.
# Extra CMake options may be passed through, e.g. -DQUANT_SIMD=OFF (scalar build) or
# -DQUANT_SANITIZE=ON; BUILD_DIR selects the build directory (default build/). It builds the
# target quant_test_suite, what ctest runs; BUILD_TARGET=all also builds the benchmarks and
# the large tests' executable (`cmake --build build` does the same later).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build="${BUILD_DIR:-build}"
jobs="${JOBS:-$(nproc)}"
# Wall and CPU seconds (user + sys of the compilers, linkers and tests) of each phase.
times_file="$(mktemp)"
trap 'rm -f "$times_file"' EXIT
cpu_now() {  # sets cpu: CPU seconds of all finished child processes so far
  times >"$times_file"
  cpu=$(awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.0f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' \
    "$times_file")
}
cpu_now; wall0=$SECONDS cpu0=$cpu
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DQUANT_BUILD_TESTS=ON -DQUANT_BUILD_EXAMPLES=ON "$@"
cmake --build "$build" -j "$jobs" --target "${BUILD_TARGET:-quant_test_suite}"
cpu_now; wall1=$SECONDS cpu1=$cpu
echo "run-tests.sh ($build): configure + build $((wall1 - wall0)) s wall, $((cpu1 - cpu0)) s CPU"
cd "$build"
ctest --output-on-failure -j "$jobs" ${CTEST_ARGS:-}
cpu_now
echo "run-tests.sh ($build): tests $((SECONDS - wall1)) s wall, $((cpu - cpu1)) s CPU"
