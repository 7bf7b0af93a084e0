#!/usr/bin/env bash
# Builds qbus (Release) and runs qbusd in the foreground with its built-in defaults:
# a per-user socket ($XDG_RUNTIME_DIR/qbus/qbus.sock, or /tmp/qbus-$UID/ without it; as
# root /run/qbus/qbus.sock). Extra arguments go to qbusd, e.g. --log-level debug.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
qbus_install_deps
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DQBUS_BUILD_TESTS=OFF \
  -DQBUS_BUILD_BENCH=OFF >/dev/null
cmake --build build-release -j "$(nproc)" --target qbusd qbusctl
exec build-release/daemon/qbusd "$@"
