#!/usr/bin/env bash
# Builds qbus with warnings as errors and runs the whole suite through ctest (unit tests,
# integration tests against the real qbusd/qbusctl, the fuzz corpus replay), then builds
# it again with AddressSanitizer + UndefinedBehaviorSanitizer and runs the suite again.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
qbus_install_deps
jobs=$(nproc)

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQBUS_WERROR=ON >/dev/null
cmake --build build -j "$jobs"
(cd build && ctest --output-on-failure -j "$jobs" --timeout 900)

echo "== the same suite under ASan + UBSan =="
cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=Debug -DQBUS_WERROR=ON -DQBUS_SANITIZE=ON \
  -DQBUS_BUILD_BENCH=OFF >/dev/null
cmake --build build-sanitize -j "$jobs"
cd build-sanitize
# Sanitizer reports abort the process, so a finding in qbusd, qbusctl or a test fails it.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
exec ctest --output-on-failure -j "$jobs" --timeout 900
