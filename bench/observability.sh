#!/usr/bin/env bash
# What watching qbus costs the bus (issue 17): `qbus-bench throughput` against one private
# qbusd, run by run in turn under four conditions, each against the baseline of the same
# round:
#   base      nothing watches
#   scrape    GET /metrics every second (curl), as a Prometheus would
#   nomatch   one `qbusctl monitor` attached on a pattern no message matches
#   match     one monitor matching every message, reading all it is sent (to /dev/null)
#   stuck     one monitor matching every message that never reads (its stdout is a pipe
#             nobody reads), so qbusd drops and counts its events
# Prints each condition's median messages/s and its ratio to the base median, and the
# monitors' events shown and lost (qbus_monitor_events_total, over all runs).
#
# Usage: bench/observability.sh [BUILD_DIR (default build)] [ROUNDS (default 5)]
#        [MESSAGES per run (default 4000000)]
set -euo pipefail

build=${1:-build}
rounds=${2:-5}
messages=${3:-4000000}
qbusd="$build/daemon/qbusd"
qbusctl="$build/cli/qbusctl"
bench="$build/bench/qbus-bench"
for tool in "$qbusd" "$qbusctl" "$bench"; do
  [ -x "$tool" ] || { echo "observability.sh: $tool is missing; build first" >&2; exit 1; }
done
command -v curl >/dev/null || { echo "observability.sh: curl is missing" >&2; exit 1; }

dir=$(mktemp -d)
daemon=""
helpers=()
cleanup() {
  for p in "${helpers[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

# The uid quotas of qbus-bench's own private daemon, so that producers that get ahead are
# paused by the queue's bound, never refused.
cat >"$dir/qbusd.json" <<'EOF'
{"metrics": {"listen": "tcp:127.0.0.1:0"},
 "limits": {"uid_max_queued_bytes": 1099511627776, "uid_max_queued_messages": 1000000000000}}
EOF
"$qbusd" --config "$dir/qbusd.json" --bus user --socket "$dir/qbus.sock" \
  --admin-socket "$dir/admin.sock" --state-dir "$dir/state" --log-level info 2>"$dir/qbusd.log" &
daemon=$!
for _ in $(seq 300); do
  grep -q "metrics tcp:" "$dir/qbusd.log" && break
  sleep 0.1
done
port=$(grep -o "metrics tcp:127.0.0.1:[0-9]*" "$dir/qbusd.log" | head -1 | sed 's/.*://')
[ -n "$port" ] || { echo "observability.sh: qbusd did not start:" >&2; cat "$dir/qbusd.log" >&2; exit 1; }
metrics="http://127.0.0.1:$port/metrics"
address="unix:$dir/qbus.sock"
admin="unix:$dir/admin.sock"

# A fixed count, not a duration: producers that outrun their consumers for a while would
# leave messages behind for the next run. Whatever is left is purged anyway.
run_once() {
  "$bench" throughput --address "$address" --messages "$messages" --runs 1 --json |
    sed -n 's/.*"messages_per_second":\([0-9]*\).*/\1/p'
  "$qbusctl" --admin-address "$admin" purge bench >/dev/null 2>&1 || true
}

# Starts the helpers of condition $1 (their pids in `helpers`); waits until a monitor is
# attached, as qbusd's log says.
start_condition() {
  local attached
  attached=$(grep -c "monitor attached" "$dir/qbusd.log" || true)
  case $1 in
    scrape)
      (while :; do curl -s -o /dev/null "$metrics"; sleep 1; done) &
      helpers+=($!)
      ;;
    nomatch)
      "$qbusctl" --admin-address "$admin" monitor 'nomatch.*' >/dev/null &
      helpers+=($!)
      ;;
    match)
      "$qbusctl" --admin-address "$admin" --json monitor >/dev/null &
      helpers+=($!)
      ;;
    stuck)
      # sleep holds the pipe's read end and never reads: once the pipe is full, qbusctl
      # blocks in its write and reads no more from qbusd.
      rm -f "$dir/stuck" && mkfifo "$dir/stuck"
      # shellcheck disable=SC2217 # not reading is the point
      sleep 100000 <"$dir/stuck" >/dev/null 2>&1 &
      helpers+=($!)
      "$qbusctl" --admin-address "$admin" --json monitor >"$dir/stuck" &
      helpers+=($!)
      ;;
  esac
  if [ "$1" != base ] && [ "$1" != scrape ]; then
    for _ in $(seq 300); do
      [ "$(grep -c "monitor attached" "$dir/qbusd.log" || true)" -gt "$attached" ] && break
      sleep 0.1
    done
  fi
}

stop_condition() {
  for p in "${helpers[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  helpers=()
}

conditions=(base scrape nomatch match stuck)
declare -A results
for round in $(seq "$rounds"); do
  for c in "${conditions[@]}"; do
    start_condition "$c"
    results[$c]+="$(run_once) "
    stop_condition
  done
  echo "round $round of $rounds done" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
base=$(echo "${results[base]}" | median)
printf '%-8s %14s %8s   %s\n' condition "median msg/s" ratio "runs (msg/s)"
for c in "${conditions[@]}"; do
  m=$(echo "${results[$c]}" | median)
  printf '%-8s %14.0f %8.3f   %s\n' "$c" "$m" "$(awk -v m="$m" -v b="$base" 'BEGIN {print m / b}')" \
    "${results[$c]}"
done
curl -s "$metrics" | grep '^qbus_monitor_events_total'
