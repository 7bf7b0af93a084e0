#!/usr/bin/env bash
# Builds qbus with warnings as errors and runs the whole suite through ctest: unit tests,
# integration tests against the real qbusd/qbusctl, and the fuzz corpus replay.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
qbus_install_deps
jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQBUS_WERROR=ON >/dev/null
cmake --build build -j "$jobs"
cd build
exec ctest --output-on-failure -j "$jobs" --timeout 900
