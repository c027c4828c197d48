#!/bin/sh
# Builds everything and runs every test: the unit tests, the drop-in tests,
# real programs under LD_PRELOAD, the unit tests under valgrind memcheck, and
# a 32-bit build with its unit tests. Exits non-zero on the first failure.
set -eu
cd "$(dirname "$0")/.."

tools/install-deps.sh --bench

step() { printf '\n==== %s ====\n' "$*"; }

step "build (64-bit)"
[ -f build/build.ninja ] || meson setup build
ninja -C build

step "unit, drop-in and real-program tests"
meson test -C build --print-errorlogs --num-processes 2

step "unit tests under valgrind memcheck"
meson test -C build --setup valgrind --suite unit --print-errorlogs

step "32-bit build and its unit, membroker and anr_malloc tests"
[ -f build32/build.ninja ] || meson setup build32 --cross-file tools/i386-cross.ini
ninja -C build32
meson test -C build32 --suite unit --suite membroker --suite anr_malloc --print-errorlogs

step "benchmarks, once each (fails only on a crash or a wrong result)"
bench/run --quick

step "all tests passed"
