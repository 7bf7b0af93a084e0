#!/usr/bin/env bash
# bench/syscalls.sh: the system calls qbusd makes per request/reply round trip and per
# queued message, counted with strace -c, for one qbusd or for two side by side (issue 18).
#
#   bench/syscalls.sh [--qbusd PATH] [--before PATH] [--requests N] [--messages N]
#
# Counts, not times: strace slows every call, so only the number of calls means anything.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/syscalls.sh [--qbusd PATH] [--before PATH] [--requests N] [--messages N]

Starts the qbusd at PATH (default: the build tree's daemon/qbusd) on a private socket with
strace -c -f attached, runs qbus-bench latency (N round trips after 1,000 unmeasured, one
outstanding; default 20,000) and qbus-bench throughput (1 producer, 1 queue, 1 consumer,
64 B, N messages, at least 1,000; default 300,000) against it, and prints each system call's count per
round trip and per message. The throughput run's clients are traced too (strace -f on
qbus-bench, which forks them). With --before, the same runs against that qbusd are shown
beside, so a change's effect is one table. QBUS_BENCH_BUILD_DIR picks the build tree
(default build-bench/, else build/). Installs strace from Debian if missing (as root;
otherwise prints the apt-get command and fails).
EOF
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/private_qbusd.sh
. "$REPO/bench/private_qbusd.sh"
BUILD=$(bench_build_dir "$REPO")
QBUS_BENCH="$BUILD/bench/qbus-bench"
AFTER="$BUILD/daemon/qbusd"
BEFORE=""
REQUESTS=20000
WARMUP=1000
MESSAGES=300000

while [ $# -gt 0 ]; do
  case "$1" in
    --qbusd | --before | --requests | --messages)
      [ $# -ge 2 ] || { usage >&2; exit 2; }
      case "$1" in
        --qbusd) AFTER=$2 ;;
        --before) BEFORE=$2 ;;
        --requests) REQUESTS=$2 ;;
        --messages) MESSAGES=$2 ;;
      esac
      shift 2
      ;;
    -h | --help) usage; exit 0 ;;
    *) echo "syscalls.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case "$REQUESTS" in '' | *[!0-9]* | 0) echo "syscalls.sh: --requests needs a positive integer" >&2; exit 2 ;; esac
case "$MESSAGES" in '' | *[!0-9]* | ? | ?? | ???) echo "syscalls.sh: --messages needs an integer of at least 1000" >&2; exit 2 ;; esac
for bin in "$QBUS_BENCH" "$AFTER" ${BEFORE:+"$BEFORE"}; do
  [ -x "$bin" ] || { echo "syscalls.sh: $bin is not an executable (build first)" >&2; exit 2; }
done
need_tool strace strace

TMP=$(mktemp -d "${TMPDIR:-/tmp}/qbus-syscalls.XXXXXX")
# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
  stop_private_qbusd
  rm -rf "$TMP"
}
trap cleanup EXIT

# strace -c's table as "name calls" lines.
calls_of() { awk '$1 ~ /^[0-9.]+$/ && $NF != "total" { print $NF, $4 }' "$1"; }

# measure LABEL QBUSD: the latency and throughput runs, each with qbusd traced.
measure() {
  local qbusd=$2 dir="$TMP/$1" run
  for run in latency throughput; do
    start_private_qbusd "$qbusd" "$dir/$run"
    strace -c -f -p "$DAEMON_PID" -o "$dir/$run/daemon.strace" 2>/dev/null &
    local tracer=$!
    # strace says nothing once attached: wait until the kernel shows qbusd traced.
    for _ in $(seq 200); do
      grep -q "TracerPid:[[:space:]]*[1-9]" "/proc/$DAEMON_PID/status" && break
      sleep 0.05
    done
    if [ "$run" = latency ]; then
      "$QBUS_BENCH" latency --address "unix:$dir/$run/sock" --requests "$REQUESTS" \
        --warmup "$WARMUP" --runs 1 --json >"$dir/$run/bench.json"
    else
      strace -c -f -o "$dir/$run/clients.strace" "$QBUS_BENCH" throughput \
        --address "unix:$dir/$run/sock" --messages "$MESSAGES" --runs 1 --json \
        >"$dir/$run/bench.json"
    fi
    kill -INT "$tracer"
    wait "$tracer" || true
    stop_private_qbusd
  done
}

measure after "$AFTER"
[ -z "$BEFORE" ] || measure before "$BEFORE"

# table TITLE FILE DIVISOR UNIT: one row per call, before beside after when both ran.
table() {
  local title=$1 file=$2 divisor=$3 unit=$4
  echo
  echo "### $title (per $unit)"
  echo
  if [ -n "$BEFORE" ]; then
    echo "| system call | before | after |"
    echo "| --- | ---: | ---: |"
  else
    echo "| system call | calls |"
    echo "| --- | ---: |"
  fi
  {
    calls_of "$TMP/after/$file" | sed 's/^/after /'
    [ -z "$BEFORE" ] || calls_of "$TMP/before/$file" | sed 's/^/before /'
  } | awk -v d="$divisor" -v both="${BEFORE:+1}" '
    { n[$2] = 1; v[$1, $2] = $3; ta[$1] += $3 }
    END {
      for (c in n) {
        a = v["after", c] / d; b = v["before", c] / d
        if (a < 0.005 && b < 0.005) continue
        if (both) printf "1 | %s | %.2f | %.2f |\n", c, b, a
        else printf "1 | %s | %.2f |\n", c, a
      }
      if (both) printf "2 | **all** | **%.2f** | **%.2f** |\n", ta["before"] / d, ta["after"] / d
      else printf "2 | **all** | **%.2f** |\n", ta["after"] / d
    }' | sort | cut -c3-
}

echo "## System calls, counted with strace -c ($(date -u +%Y-%m-%d))"
echo
echo "qbus-bench latency: $((REQUESTS + WARMUP)) round trips, 64 B, one outstanding."
echo "qbus-bench throughput: $MESSAGES messages, 64 B, 1 producer, 1 queue, 1 consumer."
table "qbusd, request/reply" latency/daemon.strace "$((REQUESTS + WARMUP))" "round trip"
table "qbusd, queued messages" throughput/daemon.strace "$((MESSAGES / 1000))" "1,000 messages"
table "the producer and the consumer together, queued messages" throughput/clients.strace \
  "$((MESSAGES / 1000))" "1,000 messages"
