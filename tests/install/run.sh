#!/usr/bin/env bash
# Install test: stages `cmake --install` of an already built tree into a DESTDIR, checks
# the layout, builds tests/install/consumer against the staged tree three ways
# (find_package + qbus::client, find_package + qbus::client_static, pkg-config) and runs
# each build against the staged qbusd. Registered with ctest by tests/install/CMakeLists.txt.
#
# Usage: run.sh BINARY_DIR CMAKE CXX PKG_CONFIG [SANITIZE]
#   SANITIZE=ON: the tree was built with ASan/UBSan, so the consumers are too.
set -euo pipefail

if [ $# -lt 4 ]; then
  echo "usage: $0 BINARY_DIR CMAKE CXX PKG_CONFIG [SANITIZE]" >&2
  exit 2
fi
binary_dir=$1 cmake=$2 cxx=$3 pkg_config=$4 sanitize=${5:-OFF} cc=${6:-cc}
here=$(cd "$(dirname "$0")" && pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/qbus-install-test-XXXXXX")
stage=$work/stage
usr=$stage/usr
daemon_pid=
cleanup() {
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -KILL "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "install test: FAIL: $*" >&2
  exit 1
}
step() { echo "== $*"; }
# Runs a command quietly; on failure shows its output and fails naming `what`.
quiet() {
  local what=$1
  shift
  "$@" >"$work/cmd.log" 2>&1 || {
    cat "$work/cmd.log" >&2
    fail "$what"
  }
}
cache_value() { sed -n "s/^$1:[A-Z]*=//p" "$binary_dir/CMakeCache.txt"; }
# A cached install directory as a path under $stage (relative ones are below /usr).
staged_dir() {
  local dir
  dir=$(cache_value "$1")
  case "$dir" in
    /*) echo "$stage$dir" ;;
    *) echo "$usr/$dir" ;;
  esac
}

san_flags=()
if [ "$sanitize" = ON ]; then
  san_flags=("-fsanitize=address,undefined" -fno-omit-frame-pointer)
fi

# --- Install ---------------------------------------------------------------------------
step "cmake --install $binary_dir --prefix /usr with DESTDIR=$stage"
quiet "cmake --install" env DESTDIR="$stage" "$cmake" --install "$binary_dir" --prefix /usr

# --- Layout ----------------------------------------------------------------------------
step "layout"
[ -x "$usr/sbin/qbusd" ] || fail "no usr/sbin/qbusd"
[ -x "$usr/bin/qbusctl" ] || fail "no usr/bin/qbusctl"
shared=$(find "$usr" -name libqbus.so.0 -print -quit)
[ -n "$shared" ] || fail "no libqbus.so.0"
libdir=$(dirname "$shared")
[ -L "$libdir/libqbus.so.0" ] || fail "libqbus.so.0 is not the SONAME link"
[ -L "$libdir/libqbus.so" ] || fail "no libqbus.so development link"
[ -f "$libdir/libqbus.a" ] || fail "no libqbus.a next to libqbus.so"
soname=$(readelf -d "$shared" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
[ "$soname" = libqbus.so.0 ] || fail "libqbus SONAME is '$soname'"
if readelf -d "$usr/bin/qbusctl" "$usr/sbin/qbusd" "$shared" | grep -E 'R(UN)?PATH' |
  grep -qF "$binary_dir"; then
  fail "an installed binary keeps a RUNPATH into the build tree"
fi

headers=$(cd "$usr/include" && find . -type f | sort | tr '\n' ' ')
[ "$headers" = "./qbus/async_client.hpp ./qbus/async_engine.hpp ./qbus/client.hpp ./qbus/errc.hpp ./qbus/qbus.h ./qbus/ring.hpp " ] ||
  fail "installed headers are: $headers"

for f in qbusConfig.cmake qbusConfigVersion.cmake qbusTargets.cmake; do
  [ -f "$libdir/cmake/qbus/$f" ] || fail "no $f in ${libdir#"$stage"}/cmake/qbus"
done
pc=$libdir/pkgconfig/qbus.pc
[ -f "$pc" ] || fail "no ${pc#"$stage"}"
grep -qx 'prefix=/usr' "$pc" || fail "qbus.pc does not say prefix=/usr"
if grep -rqF -e "$binary_dir" -e "$here" "$libdir/cmake/qbus" "$pc"; then
  fail "the CMake package or qbus.pc names the build or source tree"
fi
[ -f "$usr/share/doc/qbus/qbusd.example.json" ] || fail "no share/doc/qbus/qbusd.example.json"
outside=$(find "$stage" -mindepth 1 -maxdepth 1 ! -name usr)
[ -z "$outside" ] || fail "installed outside the prefix: $outside"

# The systemd files present in the source tree, in their directories.
source_dir=$(cache_value CMAKE_HOME_DIRECTORY)
unitdir=$(staged_dir QBUS_SYSTEMD_UNITDIR)
for unit in "$source_dir"/systemd/*.service "$source_dir"/systemd/*.socket \
  "$source_dir"/systemd/*.service.in "$source_dir"/systemd/*.socket.in; do
  [ -e "$unit" ] || continue
  name=$(basename "$unit" .in)
  [ -f "$unitdir/$name" ] || fail "unit $name not in ${unitdir#"$stage"}"
done
if compgen -G "$source_dir/systemd/*sysusers*" >/dev/null; then
  [ -f "$(staged_dir QBUS_SYSUSERSDIR)/qbus.conf" ] || fail "no sysusers.d/qbus.conf"
fi
if compgen -G "$source_dir/systemd/*tmpfiles*" >/dev/null; then
  [ -f "$(staged_dir QBUS_TMPFILESDIR)/qbus.conf" ] || fail "no tmpfiles.d/qbus.conf"
fi
(cd "$stage" && find . \( -type f -o -type l \) | sort | sed 's|^\./|  /|')

# --- Consumers -------------------------------------------------------------------------
for kind in shared static; do
  step "consumer with find_package(qbus) and qbus::client$([ $kind = static ] && echo _static)"
  build=$work/consumer-$kind
  quiet "configure the $kind consumer" \
    "$cmake" -S "$here/consumer" -B "$build" -DCMAKE_CXX_COMPILER="$cxx" \
    -DCMAKE_PREFIX_PATH="$usr" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
    -DQBUS_CONSUMER_STATIC="$([ $kind = static ] && echo ON || echo OFF)" \
    -DCMAKE_CXX_FLAGS="${san_flags[*]}" -DCMAKE_EXE_LINKER_FLAGS="${san_flags[*]}"
  found=$(sed -n 's/^qbus_DIR:[A-Z]*=//p' "$build/CMakeCache.txt")
  [ "$found" = "$libdir/cmake/qbus" ] || fail "find_package(qbus) found '$found'"
  quiet "build the $kind consumer" "$cmake" --build "$build"
done
readelf -d "$work/consumer-shared/qbus_consumer" | grep -qF '[libqbus.so.0]' ||
  fail "the shared consumer does not link libqbus.so.0"
if readelf -d "$work/consumer-static/qbus_consumer" | grep -qF libqbus; then
  fail "the static consumer still needs a shared libqbus"
fi

step "consumer with pkg-config --cflags --libs qbus"
# The staged qbus.pc first, then the system's .pc files for what qbus.pc requires privately
# (OpenSSL's libssl and libcrypto); SYSROOT maps qbus.pc's /usr paths into the stage, and the
# ALLOW variables keep pkg-config from dropping -I/usr/include and -L/usr/lib as system paths.
system_pc=$("$pkg_config" --variable pc_path pkg-config)
pc_flags=$(PKG_CONFIG_LIBDIR="$libdir/pkgconfig:$system_pc" PKG_CONFIG_PATH="" PKG_CONFIG_SYSROOT_DIR="$stage" \
  PKG_CONFIG_ALLOW_SYSTEM_CFLAGS=1 PKG_CONFIG_ALLOW_SYSTEM_LIBS=1 \
  "$pkg_config" --cflags --libs qbus) || fail "pkg-config --cflags --libs qbus"
echo "  pkg-config: $pc_flags"
case "$pc_flags" in
  *"-I$usr/include"*"-L$libdir"*"-lqbus"*) ;;
  *) fail "pkg-config flags do not point into the stage: $pc_flags" ;;
esac
# shellcheck disable=SC2086  # the flags are words
quiet "compile with pkg-config flags" \
  "$cxx" -std=c++20 "${san_flags[@]}" "$here/consumer/main.cpp" $pc_flags -o "$work/consumer-pc"
# The C API from a C program: the shared library brings the C++ runtime with it.
# shellcheck disable=SC2086  # the flags are words
quiet "compile C with pkg-config flags" \
  "$cc" -std=c11 -Wall -Wextra -Werror "${san_flags[@]}" "$here/consumer/main.c" $pc_flags \
  -o "$work/consumer-c"

# --- A live daemon ---------------------------------------------------------------------
step "start the staged qbusd, wait for READY=1"
socket=$work/qbus.sock
# The receiver binds its socket before it opens the FIFO, so opening the FIFO for writing
# returns only when the daemon's READY=1 can be received.
mkfifo "$work/notify.ctl"
python3 "$here/notify_ready.py" "$work/notify.sock" "$work/notify.ctl" 30 &
notify_pid=$!
exec 4>"$work/notify.ctl"
args=(--socket "$socket" --log-level info)
if "$usr/sbin/qbusd" --help 2>&1 | grep -q -- --admin-socket; then
  args+=(--admin-socket "$work/admin.sock")
fi
NOTIFY_SOCKET=$work/notify.sock "$usr/sbin/qbusd" "${args[@]}" 2>"$work/qbusd.log" &
daemon_pid=$!
echo "$daemon_pid" >&4
exec 4>&-
notify_rc=0
wait "$notify_pid" || notify_rc=$?
if [ "$notify_rc" -ne 0 ]; then
  cat "$work/qbusd.log" >&2
  fail "qbusd did not become ready (notify receiver exit $notify_rc)"
fi

export QBUS_ADDRESS=unix:$socket
run_consumer() {
  local what=$1
  shift
  "$@" || {
    cat "$work/qbusd.log" >&2
    fail "the $what consumer failed against the live daemon"
  }
}
step "run the consumers"
ldd_line=$(LD_LIBRARY_PATH=$libdir ldd "$work/consumer-shared/qbus_consumer" | grep libqbus)
case "$ldd_line" in
  *"=> $libdir/libqbus.so.0"*) ;;
  *) fail "the shared consumer loads libqbus from elsewhere: $ldd_line" ;;
esac
run_consumer shared env LD_LIBRARY_PATH="$libdir" "$work/consumer-shared/qbus_consumer" install.shared
run_consumer static "$work/consumer-static/qbus_consumer" install.static
run_consumer pkg-config env LD_LIBRARY_PATH="$libdir" "$work/consumer-pc" install.pkgconfig
run_consumer C env LD_LIBRARY_PATH="$libdir" "$work/consumer-c" install.c

if [ "$sanitize" != ON ] && [ -x /usr/bin/python3 ]; then
  # The Python package, as the .deb installs it, over the staged libqbus.so.0.
  step "the staged Python package"
  pkg=$usr/lib/python3/dist-packages
  [ -f "$pkg/qbus/__init__.py" ] || fail "no ${pkg#"$stage"}/qbus"
  got=$(PYTHONPATH=$pkg PYTHONDONTWRITEBYTECODE=1 QBUS_LIBRARY=$libdir/libqbus.so.0 /usr/bin/python3 -c '
import qbus
with qbus.Client() as c:
    c.send("install.python", b"staged python")
    print(c.receive("install.python", timeout=10).text)') || fail "the staged Python package"
  [ "$got" = "staged python" ] || fail "the staged Python package received '$got'"
fi

step "the staged qbusctl"
LD_LIBRARY_PATH=$libdir "$usr/bin/qbusctl" send install.qbusctl "staged qbusctl" ||
  fail "staged qbusctl send"
got=$(LD_LIBRARY_PATH=$libdir "$usr/bin/qbusctl" recv install.qbusctl --timeout 10000) ||
  fail "staged qbusctl recv"
[ "$got" = "staged qbusctl" ] || fail "staged qbusctl recv printed '$got'"

step "stop qbusd with SIGTERM"
kill -TERM "$daemon_pid"
# Bounded wait: whichever ends first, the daemon or a 30 s guard.
sleep 30 >/dev/null 2>&1 &
guard_pid=$!
finished=
daemon_rc=0
wait -n -p finished "$daemon_pid" "$guard_pid" || daemon_rc=$?
if [ "$finished" != "$daemon_pid" ]; then
  cat "$work/qbusd.log" >&2
  fail "qbusd did not exit within 30 s of SIGTERM"
fi
kill "$guard_pid" 2>/dev/null || true
wait "$guard_pid" 2>/dev/null || true
daemon_pid=
if [ "$daemon_rc" -ne 0 ]; then
  cat "$work/qbusd.log" >&2
  fail "qbusd exited with status $daemon_rc after SIGTERM"
fi
step "ok"
