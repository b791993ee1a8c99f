#!/bin/sh
# Builds benchmarks/kernels_cpu_time.c against this tree and against an older
# commit's csrc/, then runs the two alternately (one thread, CPU time; see the .c).
#   benchmarks/kernels_cpu_time.sh <old-commit> [rounds] [reps] [isa|-] [conv|model|all]
set -e
old=${1:?old commit}; rounds=${2:-2}; reps=${3:-5}; isa=${4:--}; what=${5:-all}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
build() { # $1 source root, $2 binary
    cc -O3 -std=c11 -D_GNU_SOURCE -Wno-psabi -I"$1/csrc/include" -I"$1/csrc" $(pkg-config --cflags openblas) \
        "$root/benchmarks/kernels_cpu_time.c" "$1"/csrc/base/*.c "$1"/csrc/nn/*.c \
        $(pkg-config --libs openblas) -lm -pthread -o "$2"
}
mkdir "$tmp/old"
git -C "$root" archive "$old" csrc | tar -x -C "$tmp/old"
build "$tmp/old" "$tmp/kernels_old"
build "$root" "$tmp/kernels_new"
for r in $(seq "$rounds"); do
    echo "== round $r: old ($old)"; "$tmp/kernels_old" "$reps" "$isa" "$what"
    echo "== round $r: new (working tree)"; "$tmp/kernels_new" "$reps" "$isa" "$what"
done
