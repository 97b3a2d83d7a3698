#!/usr/bin/env bash
# Installs whatever of quant's Debian 12 dependencies is missing (as root, or through sudo).
# Library: libxtensor-dev libxtensor-blas-dev libxsimd-dev libopenblas-dev.
# Tests/benchmarks: catch2 libbenchmark-dev libgemmlowp-dev (test-only reference). Examples and the CLI: nlohmann-json3-dev
# libcli11-dev zlib1g-dev dataset-fashion-mnist. Toolchain: g++ cmake make.
#   scripts/install-deps.sh [--clang]
# --clang adds clang's tool set, for the libFuzzer harnesses (scripts/fuzz.sh) and CI's
# ASan + UBSan build: clang-14, libclang-rt-14-dev (libFuzzer and the sanitizer runtimes)
# and libomp-14-dev (clang's OpenMP runtime; without it clang builds the library serially and
# the 1-vs-2-thread checks would compare one thread with itself).
set -euo pipefail
packages=(g++ make cmake pkg-config libxtensor-dev libxtensor-blas-dev libxsimd-dev libopenblas-dev catch2
          libbenchmark-dev nlohmann-json3-dev libcli11-dev zlib1g-dev dataset-fashion-mnist libgemmlowp-dev)
case "${1:-}" in
  "") ;;
  --clang) packages+=(clang-14 libclang-rt-14-dev libomp-14-dev) ;;
  *) echo "usage: $0 [--clang]" >&2; exit 2 ;;
esac
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
