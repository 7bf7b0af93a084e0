# shellcheck shell=bash
# bench/private_qbusd.sh, sourced by bench scripts: a qbusd of their own on a private
# socket, with its limits raised so that a benchmark's backlog is never refused.
#
#   start_private_qbusd QBUSD DIR   # sets DAEMON_PID; the socket is DIR/sock
#   stop_private_qbusd
#
# The caller's EXIT trap should call stop_private_qbusd, so a failed run leaves no daemon.

DAEMON_PID=""

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
