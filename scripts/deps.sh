#!/usr/bin/env bash
# Installs the Debian packages qbus builds with, when any is missing. Sourced by the
# other scripts. As root it runs apt-get; otherwise it prints the exact command and fails.
set -euo pipefail

QBUS_PACKAGES=(
  g++ cmake make pkg-config
  libasio-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev libsystemd-dev
  # TLS for TCP (qbusd through asio::ssl, libqbus directly); openssl: the CLI, for making
  # certificates by hand (docs/admin.md).
  libssl-dev openssl
  libgtest-dev libgmock-dev libbenchmark-dev
  # cpack -G DEB (dpkg-shlibdeps computes Depends); python3: the install test's sd_notify
  # receiver.
  dpkg-dev file python3
  # The Python package's tests (python/tests), run by Debian's /usr/bin/python3; gcc's C
  # front end (in g++'s dependencies) compiles the C API's test program.
  python3-pytest
  # The container test (tests/container): a minimal Debian root to boot the .deb in under
  # systemd as PID 1, with systemd-nspawn.
  debootstrap systemd-container
  # useradd, groupadd, userdel, groupdel: the policy table test creates real users and groups.
  passwd
  # The metrics test: promtool checks qbusd's /metrics answer, a real Prometheus scrapes it,
  # and curl asks Prometheus's HTTP API.
  prometheus curl
  # ncurses draws `qbusctl top` on a terminal; tmux gives its test a terminal to drive
  # (send-keys) and read (capture-pane).
  libncurses-dev tmux
  # qbus-bridge talks to NATS JetStream through libnats; its tests start a real nats-server.
  libnats-dev nats-server
)

qbus_missing_packages() {
  local p
  for p in "${QBUS_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

qbus_install_deps() {
  local missing
  missing=$(qbus_missing_packages | tr '\n' ' ')
  [ -z "${missing// /}" ] && return 0
  if [ "$(id -u)" -eq 0 ]; then
    echo "qbus: installing missing packages: $missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "qbus: missing packages: $missing" >&2
    echo "qbus: run: sudo apt-get install -y $missing" >&2
    return 1
  fi
}
