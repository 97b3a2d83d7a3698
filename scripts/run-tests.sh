#!/usr/bin/env bash
# Installs what is missing, builds the whole test suite (SIMD build: -march=native,
# XTENSOR_USE_XSIMD, OpenMP, -ffp-contract=off) and runs it with ctest.
# Extra CMake options may be passed through, e.g. -DQUANT_SIMD=OFF (scalar build) or
# -DQUANT_SANITIZE=ON; BUILD_DIR selects the build directory (default build/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build="${BUILD_DIR:-build}"
jobs="${JOBS:-$(nproc)}"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DQUANT_BUILD_TESTS=ON -DQUANT_BUILD_EXAMPLES=ON "$@"
cmake --build "$build" -j "$jobs"
cd "$build"
ctest --output-on-failure -j "$jobs" ${CTEST_ARGS:-}
