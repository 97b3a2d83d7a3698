#!/usr/bin/env bash
# Usage: scripts/compare-digests.sh BUILD_A BUILD_B [BUILD_C ...]
# Runs the kernel_digest program of each build directory (tests/tools/kernel_digest: one
# line "<kernel> <FNV-1a 64>" per kernel documented as exact, at 1 and 2 threads) and
# compares every build's lines with BUILD_A's. Lines starting with '#' (results exact only
# within one build) are not compared. Prints the kernels whose digests differ or that a
# build lacks. Exit status: 0 all equal; 1 a difference, or a digest program that failed
# (it fails when 1 and 2 threads disagree); 2 usage or a missing program.
set -uo pipefail
if [ "$#" -lt 2 ]; then
  echo "usage: $0 BUILD_A BUILD_B [BUILD_C ...]" >&2
  exit 2
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
# The programs run side by side (the sanitizer build's takes most of the time, partly on
# one thread); their lines are compared once all have finished.
for build in "$@"; do
  if [ ! -x "$build/tests/tools/kernel_digest" ]; then
    echo "compare-digests: $build/tests/tools/kernel_digest not found (build the kernel_digest target)" >&2
    exit 2
  fi
done
pids=()
i=0
for build in "$@"; do
  "$build/tests/tools/kernel_digest" > "$tmp/$i.all" 2> "$tmp/$i.err" &
  pids+=($!)
  i=$((i + 1))
done
i=0
for build in "$@"; do
  ok=1
  wait "${pids[$i]}" || ok=0
  cat "$tmp/$i.err" >&2
  if [ "$ok" -eq 0 ]; then
    echo "compare-digests: $build/tests/tools/kernel_digest failed (see its messages above)" >&2
    status=1
  fi
  grep -v '^#' "$tmp/$i.all" | LC_ALL=C sort > "$tmp/$i"
  echo "$build: $(wc -l < "$tmp/$i") kernels compared, $(grep -c '^#' "$tmp/$i.all") per-build only"
  i=$((i + 1))
done
for ((j = 1; j < i; j++)); do
  build_a="$1"
  build_b="${@:j+1:1}"
  # kernels whose lines differ: present in one file with a digest the other lacks
  diffs=$(LC_ALL=C join -a1 -a2 -e MISSING -o 0,1.2,2.2 "$tmp/0" "$tmp/$j" | awk '$2 != $3')
  if [ -n "$diffs" ]; then
    echo "DIFFERENT: $build_a vs $build_b (kernel, digest in $build_a, digest in $build_b):"
    echo "$diffs" | sed 's/^/  /'
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "compare-digests: all $i builds give identical digests"
exit "$status"
