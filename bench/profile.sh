#!/usr/bin/env bash
# bench/profile.sh: where qbusd spends its CPU under a benchmark's load, as a flame graph and
# a list of the heaviest functions (issue 18: "profile first").
#
#   bench/profile.sh [--qbusd PATH] [--workload throughput|latency] [--messages N]
#                    [--requests N] [--queue-bytes N] [--push] [--out DIR]
#
# Samples, not times: perf record's sampling (999 Hz, DWARF call stacks) of qbusd alone,
# enabled only while the workload runs, so start-up and shutdown are not in the graph.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/profile.sh [--qbusd PATH] [--workload throughput|latency] [--messages N]
                        [--requests N] [--queue-bytes N] [--push] [--out DIR]

Starts the qbusd at PATH (default: the build tree's daemon/qbusd) on a private socket,
records it with perf (999 Hz, DWARF call stacks) while qbus-bench runs against it, and
writes DIR/qbusd.svg (a flame graph, bench/flamegraph.py), DIR/qbusd.folded (the folded
stacks) and DIR/top.txt (the 25 functions with the most samples, also printed). The
workload is throughput (1 producer, 1 queue, 1 consumer, 64 B, N messages; default
2,000,000; --queue-bytes bounds the queue and --push puts the consumer on an at-most-once
subscription, as qbus-bench throughput's options do) or
latency (request/reply round trips, one outstanding; default 50,000). DIR defaults to
profile-WORKLOAD/ in the current directory. QBUS_BENCH_BUILD_DIR picks the build tree
(default build-bench/, else build/). Installs linux-perf from Debian if missing (as root;
otherwise prints the apt-get command and fails).
EOF
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/private_qbusd.sh
. "$REPO/bench/private_qbusd.sh"
BUILD=$(bench_build_dir "$REPO")
QBUS_BENCH="$BUILD/bench/qbus-bench"
QBUSD="$BUILD/daemon/qbusd"
WORKLOAD=throughput
MESSAGES=2000000
REQUESTS=50000
QUEUE_BYTES=0
PUSH=()
OUT=""

while [ $# -gt 0 ]; do
  case "$1" in
    --qbusd | --workload | --messages | --requests | --queue-bytes | --out)
      [ $# -ge 2 ] || { usage >&2; exit 2; }
      case "$1" in
        --qbusd) QBUSD=$2 ;;
        --workload) WORKLOAD=$2 ;;
        --messages) MESSAGES=$2 ;;
        --requests) REQUESTS=$2 ;;
        --queue-bytes) QUEUE_BYTES=$2 ;;
        --out) OUT=$2 ;;
      esac
      shift 2
      ;;
    --push) PUSH=(--push); shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "profile.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case "$WORKLOAD" in throughput | latency) ;; *) echo "profile.sh: --workload is throughput or latency, not '$WORKLOAD'" >&2; exit 2 ;; esac
case "$MESSAGES" in '' | *[!0-9]* | 0) echo "profile.sh: --messages needs a positive integer" >&2; exit 2 ;; esac
case "$REQUESTS" in '' | *[!0-9]* | 0) echo "profile.sh: --requests needs a positive integer" >&2; exit 2 ;; esac
case "$QUEUE_BYTES" in '' | *[!0-9]*) echo "profile.sh: --queue-bytes needs an integer" >&2; exit 2 ;; esac
OUT=${OUT:-profile-$WORKLOAD}
for bin in "$QBUS_BENCH" "$QBUSD"; do
  [ -x "$bin" ] || { echo "profile.sh: $bin is not an executable (build first)" >&2; exit 2; }
done
need_tool perf linux-perf

mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/qbus-profile.XXXXXX")
PERF_PID=""
# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
  if [ -n "$PERF_PID" ]; then kill -INT "$PERF_PID" 2>/dev/null || true; fi
  stop_private_qbusd
  rm -rf "$TMP"
}
trap cleanup EXIT

start_private_qbusd "$QBUSD" "$TMP/daemon"
mkfifo "$TMP/ctl" "$TMP/ack"
# Recording starts disabled (-D -1) and is enabled through the control fifo once perf is
# attached: its acknowledgement is the readiness the workload waits for.
perf record -D -1 --control "fifo:$TMP/ctl,$TMP/ack" -F 999 -g --call-graph dwarf,16384 \
  -p "$DAEMON_PID" -o "$TMP/perf.data" 2>"$TMP/perf.log" &
PERF_PID=$!
exec {CTL}>"$TMP/ctl" {ACK}<"$TMP/ack"
echo enable >&"$CTL"
read -r -t 60 -u "$ACK" _ || { echo "profile.sh: perf did not start:" >&2; cat "$TMP/perf.log" >&2; exit 1; }

if [ "$WORKLOAD" = throughput ]; then
  "$QBUS_BENCH" throughput --address "unix:$TMP/daemon/sock" --messages "$MESSAGES" --runs 1 \
    --queue-bytes "$QUEUE_BYTES" "${PUSH[@]}" >"$OUT/bench.txt"
else
  "$QBUS_BENCH" latency --address "unix:$TMP/daemon/sock" --requests "$REQUESTS" --runs 1 \
    >"$OUT/bench.txt"
fi

echo disable >&"$CTL"
read -r -t 60 -u "$ACK" _ || true
exec {CTL}>&- {ACK}<&-
kill -INT "$PERF_PID"
wait "$PERF_PID" || true
PERF_PID=""
stop_private_qbusd

perf script -i "$TMP/perf.data" 2>/dev/null >"$TMP/perf.script"
BOUND=""
[ "$WORKLOAD" != throughput ] || [ "$QUEUE_BYTES" = 0 ] || BOUND=" --queue-bytes $QUEUE_BYTES"
[ "$WORKLOAD" != throughput ] || [ ${#PUSH[@]} = 0 ] || BOUND+=" --push"
TITLE="qbusd, qbus-bench $WORKLOAD$BOUND ($(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown), $(date -u +%Y-%m-%d))"
python3 "$REPO/bench/flamegraph.py" "$TMP/perf.script" --svg "$OUT/qbusd.svg" --title "$TITLE" \
  --top 25 >"$OUT/top.txt"
python3 "$REPO/bench/flamegraph.py" "$TMP/perf.script" --folded >"$OUT/qbusd.folded"
echo "qbus-bench $WORKLOAD:"
cat "$OUT/bench.txt"
echo
echo "qbusd's heaviest functions (share of its samples):"
cat "$OUT/top.txt"
echo
echo "flame graph: $OUT/qbusd.svg"
