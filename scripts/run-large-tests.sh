#!/usr/bin/env bash
# Builds and runs the tests labelled "large" (tensors past 2^31 elements: about 12 GiB of
# memory at peak and a few minutes on 2 cores). SIMD build by default; extra CMake options
# pass through (e.g. -DQUANT_SIMD=OFF). BUILD_DIR selects the build directory (default
# build-large). Reports wall time and peak memory when /usr/bin/time is available.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build-large}"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DQUANT_BUILD_TESTS=ON -DQUANT_BUILD_EXAMPLES=OFF \
      -DQUANT_BUILD_BENCHMARKS=OFF -DQUANT_LARGE_TESTS=ON "$@"
cmake --build "$build" --target test_large_tensors -j "${JOBS:-$(nproc)}"
cd "$build"
if [ -x /usr/bin/time ]; then
  /usr/bin/time -f "large tests: %e s wall, %M KiB peak resident" ctest --output-on-failure -L large
else
  ctest --output-on-failure -L large
fi
