#!/usr/bin/env bash
# The proof on the demo's networks: for the MLP, the CNN and the BN network at W8A8 and W4A8
# (per-channel weights), quantize with `quant ptq`, export with `quant export`, and run the
# integer kernels and the exact simulation on the 10 000 test images (`quant run
# --check-exact`): mismatching activations per layer, logits and predictions (goal: 0), and
# the accuracy of the plain float simulation (`quant ptq`'s evaluation, = `quant eval`) beside.
#
#   scripts/integer_proof.sh BUILD_DIR [CACHE_DIR] [WORK_DIR]
# CACHE_DIR is the demo's --cache-dir (it holds <model>/bundle and fmnist-*.npy after a run
# of fashion_mnist_demo --models mlp cnn bnnet; default BUILD_DIR/examples/cache).
set -euo pipefail
build="${1:?usage: integer_proof.sh BUILD_DIR [CACHE_DIR] [WORK_DIR]}"
cache="${2:-$build/examples/cache}"
work="${3:-$build/examples/integer_proof}"
quant="$build/examples/quant"
mkdir -p "$work"
calib=$(ls "$cache"/fmnist-calib1024-s*-x.npy | head -1)
test_x="$cache/fmnist-test-x.npy"
test_y="$cache/fmnist-test-y.npy"
for model in mlp cnn bnnet; do
  bundle=$(ls -d "$cache"/fmnist-"$model"-*/bundle | head -1)
  for wb in 8 4; do
    tag="$model-W${wb}A8"
    fmt=int8; [ "$wb" = 4 ] && fmt=int4
    echo "== $tag"
    "$quant" ptq --model "$bundle" --calib "$calib" --eval "$test_x" --labels "$test_y" -o "$work/$tag-q" \
      --weight-bits "$wb" --act-bits 8 --weight-granularity per-channel -q | sed 's/^/ptq: /'
    "$quant" export --model "$work/$tag-q" -o "$work/$tag-engine" --weight-format "$fmt"
    "$quant" run --model "$work/$tag-engine" --input "$test_x" --labels "$test_y" --check-exact
  done
done
