# shellcheck shell=bash
# bench/private_qbusd.sh, sourced by bench scripts: a qbusd of their own on a private
# socket, with its limits raised so that a benchmark's backlog is never refused, and the
# build tree and Debian tools they need.
#
#   start_private_qbusd QBUSD DIR   # sets DAEMON_PID; the socket is DIR/sock
#   stop_private_qbusd
#
# The caller's EXIT trap should call stop_private_qbusd, so a failed run leaves no daemon.

DAEMON_PID=""

# The build tree: QBUS_BENCH_BUILD_DIR, else build-bench/ when it has qbus-bench, else build/.
bench_build_dir() {
  local repo=$1
  if [ -n "${QBUS_BENCH_BUILD_DIR:-}" ]; then
    echo "$QBUS_BENCH_BUILD_DIR"
  elif [ -x "$repo/build-bench/bench/qbus-bench" ]; then
    echo "$repo/build-bench"
  else
    echo "$repo/build"
  fi
}

# need_tool COMMAND PACKAGE: installs PACKAGE from Debian when COMMAND is missing (as root;
# otherwise prints the apt-get command and exits).
need_tool() {
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "$(basename "$0"): $1 is missing; run: sudo apt-get install -y $2" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2
}

start_private_qbusd() {
  local qbusd=$1 dir=$2
  mkdir -p "$dir"
  cat >"$dir/qbusd.json" <<'JSON'
{"limits": {"uid_max_queued_bytes": 1099511627776, "uid_max_queued_messages": 1000000000000}}
JSON
  "$qbusd" --config "$dir/qbusd.json" --bus user --socket "$dir/sock" \
    --admin-socket "$dir/admin" --state-dir "$dir/state" --log-level warn \
    2>"$dir/qbusd.log" &
  DAEMON_PID=$!
  local _
  for _ in $(seq 200); do [ -S "$dir/sock" ] && return 0; sleep 0.05; done
  echo "$(basename "$0"): $qbusd did not start:" >&2
  cat "$dir/qbusd.log" >&2
  exit 1
}

stop_private_qbusd() {
  [ -n "$DAEMON_PID" ] || return 0
  kill "$DAEMON_PID" 2>/dev/null || true
  wait "$DAEMON_PID" 2>/dev/null || true
  DAEMON_PID=""
}
