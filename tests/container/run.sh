#!/usr/bin/env bash
# Container test: qbusd under a real systemd as PID 1. Builds the .deb of a built tree with
# cpack, boots a minimal Debian 12 root (debootstrap, cached in the build tree) with
# `systemd-nspawn -b`, and lets checks.sh, started there by a oneshot unit that powers the
# container off when done, install the package and check the service. checks.sh writes
# PASS/FAIL lines to /qbus-test/results in the root, which this script reads. Registered
# with ctest by tests/container/CMakeLists.txt.
#
# Usage: run.sh BINARY_DIR CPACK [BOOT_TIMEOUT_S]
# QBUS_CONTAINER_KEEP=1 keeps the run's root (BINARY_DIR/container/run-*) for a look.
# Exit: 0 all checks passed; 1 a check or a step failed (the container's journal follows);
# 77 skipped: not root, or systemd-nspawn cannot boot a container on this machine.
set -euo pipefail
# One stream, so ctest shows the results, the journals and the verdict in order.
exec 2>&1

if [ $# -lt 2 ]; then
  echo "usage: $0 BINARY_DIR CPACK [BOOT_TIMEOUT_S]"
  exit 2
fi
binary_dir=$(cd "$1" && pwd) cpack=$2 boot_timeout=${3:-420}
here=$(cd "$(dirname "$0")" && pwd)
kSkip=77
suite=bookworm
mirror=${QBUS_DEBIAN_MIRROR:-http://deb.debian.org/debian}

skip() {
  echo "container test: SKIP: $*"
  exit $kSkip
}
fail() {
  echo "container test: FAIL: $*"
  exit 1
}
step() { echo "== $* ($(date -u +%T))"; }

[ "$(id -u)" -eq 0 ] || skip "systemd-nspawn needs root"
for tool in debootstrap systemd-nspawn; do
  command -v "$tool" >/dev/null ||
    fail "$tool is not installed (scripts/deps.sh installs debootstrap and systemd-container)"
done

top=$binary_dir/container
mkdir -p "$top"
# One run at a time per build tree: the cache is shared.
exec 9>"$top/lock"
flock 9
# Removes a root, never following a mount left in it (an interrupted debootstrap leaves
# its /proc and /sys mounted there).
remove_root() {
  local dir=$1 mnt
  [ -e "$dir" ] || return 0
  while read -r mnt; do
    umount -l "$mnt" 2>/dev/null || true
  done < <(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r)
  rm -rf --one-file-system "$dir"
}
# A run killed by ctest's timeout could not clean up; with the lock held none is running.
for stale in "$top"/run-*; do
  remove_root "$stale"
done
work=$(mktemp -d "$top/run-XXXXXX")
nspawn_pid=
cleanup() {
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    kill -KILL "$nspawn_pid" 2>/dev/null || true
    wait "$nspawn_pid" 2>/dev/null || true
  fi
  if [ "${QBUS_CONTAINER_KEEP:-}" = 1 ]; then
    echo "kept (QBUS_CONTAINER_KEEP=1): $work"
  else
    remove_root "$work"
  fi
}
trap cleanup EXIT

# --- the package -----------------------------------------------------------------------
step "cpack -G DEB in $binary_dir"
(cd "$binary_dir" && "$cpack" -G DEB -B "$work/pkg") >"$work/cpack.log" 2>&1 || {
  cat "$work/cpack.log"
  fail "cpack -G DEB"
}
deb=$(find "$work/pkg" -maxdepth 1 -name 'qbus_*.deb' -print -quit)
[ -n "$deb" ] || fail "cpack made no qbus_*.deb"

# --- the Debian root, cached -----------------------------------------------------------
# The package's own dependencies go into the root too, so a warm run installs it offline
# (debootstrap --include cannot take them: some are virtual packages, libspdlog1.10-fmt9).
# The cache is keyed on that list: a new dependency makes a new root.
depends=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/(.*)//; s/|.*//; s/ //g' | grep -v '^$' |
  sort | tr '\n' ' ')
# python3 too (the package suggests it): a check imports the Python package the .deb ships;
# nats-server: the bridge's check carries a message through a real one.
depends="${depends}python3 nats-server"
key=$(printf '%s %s' "$suite" "$depends" | sha256sum | cut -c1-12)
cache=$top/root-$suite-$key
if [ ! -f "$cache/.qbus-complete" ]; then
  for old in "$top"/root-*; do
    remove_root "$old"
  done
  step "debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus $suite, then apt-get install $depends (cached as $cache)"
  if ! timeout 900 debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus "$suite" "$cache.tmp" \
    "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 20 "$work/debootstrap.log"
    remove_root "$cache.tmp"
    fail "debootstrap $suite from $mirror"
  fi
  # shellcheck disable=SC2086  # the dependencies are words
  if ! { timeout 300 chroot "$cache.tmp" apt-get update &&
    DEBIAN_FRONTEND=noninteractive timeout 600 chroot "$cache.tmp" apt-get install -y --no-install-recommends $depends &&
    chroot "$cache.tmp" apt-get clean; } >"$work/deps.log" 2>&1; then
    tail -n 20 "$work/deps.log"
    remove_root "$cache.tmp"
    fail "apt-get install $depends in the new root"
  fi
  # Persistent journal: the host reads it from the root when a check fails.
  mkdir -p "$cache.tmp/var/log/journal"
  touch "$cache.tmp/.qbus-complete"
  mv "$cache.tmp" "$cache"
else
  step "cached root $cache"
fi

# --- this run's root -------------------------------------------------------------------
step "copy the root, the package and the checks"
root=$work/root
cp -a --reflink=auto "$cache" "$root"
mkdir -p "$root/qbus-test"
cp "$deb" "$here/checks.sh" "$root/qbus-test/"
cp "$here/qbus-checks.service" "$root/etc/systemd/system/"
ln -s /etc/systemd/system/qbus-checks.service \
  "$root/etc/systemd/system/multi-user.target.wants/qbus-checks.service"

# --- boot ------------------------------------------------------------------------------
nspawn=(systemd-nspawn --quiet -D "$root" -b --console=pipe --machine="qbus-test-$$")
# Without systemd as PID 1 on this host there is no machined to register with and no
# manager to make a scope unit: the container stays in our own cgroup.
[ -d /run/systemd/system ] || nspawn+=(--register=no --keep-unit)
step "${nspawn[*]} (at most $boot_timeout s)"
started=$SECONDS
nspawn_rc=0
timeout --kill-after=15 "$boot_timeout" "${nspawn[@]}" >"$work/console.log" 2>&1 &
nspawn_pid=$!
wait "$nspawn_pid" || nspawn_rc=$?
nspawn_pid=
echo "   the container ran for $((SECONDS - started)) s, systemd-nspawn exit $nspawn_rc"

results=$root/qbus-test/results
show_journal() {
  echo "---- the container's journal ----"
  if [ -d "$root/var/log/journal" ] && command -v journalctl >/dev/null &&
    journalctl --directory="$root/var/log/journal" --no-pager -o short-precise >"$work/journal.txt" 2>&1 &&
    [ -s "$work/journal.txt" ]; then
    cat "$work/journal.txt"
  elif [ -f "$root/qbus-test/journal.txt" ]; then
    cat "$root/qbus-test/journal.txt"
  else
    echo "(none; the console said:)"
    cat "$work/console.log"
  fi
}
if [ ! -f "$results" ]; then
  # The checks never started: systemd did not get as far as multi-user.target.
  if [ "$nspawn_rc" -ne 124 ] && [ "$nspawn_rc" -ne 137 ]; then
    why=$(grep -v '^$' "$work/console.log" | head -n 1)
    skip "systemd-nspawn cannot boot a container on this machine (exit $nspawn_rc): ${why:-no output}"
  fi
  show_journal
  fail "the container booted for $boot_timeout s without starting qbus-checks.service"
fi

cat "$results"
for f in reload watchdog; do
  if [ -s "$root/qbus-test/$f.journal" ]; then
    echo "---- journal of the $f check ----"
    cat "$root/qbus-test/$f.journal"
  fi
done
if grep -q '^FAIL' "$results"; then
  show_journal
  fail "$(grep -c '^FAIL' "$results") check(s) failed: $(sed -n 's/^FAIL \([^:]*\):.*/\1/p' "$results" | tr '\n' ' ')"
fi
if ! grep -qx DONE "$results"; then
  show_journal
  fail "the checks did not finish (systemd-nspawn exit $nspawn_rc after $((SECONDS - started)) s)"
fi
[ "$(grep -c '^PASS' "$results")" -gt 0 ] || fail "no check ran"
step "ok"
