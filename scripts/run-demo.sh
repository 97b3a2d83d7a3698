#!/usr/bin/env bash
# Installs what is missing, builds the Fashion-MNIST demo and runs it (arguments are
# passed to the demo, e.g. --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build="${BUILD_DIR:-build}"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DQUANT_BUILD_EXAMPLES=ON
cmake --build "$build" -j "$(nproc)" --target fashion_mnist_demo
"$build/examples/fashion_mnist_demo" "$@"
