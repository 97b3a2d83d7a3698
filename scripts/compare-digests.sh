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
i=0
for build in "$@"; do
  prog="$build/tests/tools/kernel_digest"
  if [ ! -x "$prog" ]; then
    echo "compare-digests: $prog not found (build the kernel_digest target)" >&2
    exit 2
  fi
  if ! "$prog" > "$tmp/$i.all"; then
    echo "compare-digests: $prog failed (see its messages above)" >&2
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
