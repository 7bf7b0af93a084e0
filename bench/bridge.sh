#!/usr/bin/env bash
# bench/bridge.sh: qbus-bridge's figures (docs/bridge.md): forwarded messages/s each way
# and the latency it adds, each beside libnats doing the same work alone, on one machine in
# one run. Prints every run's JSON line on stderr and a table of medians on stdout.
#
#   bench/bridge.sh [--runs N] [--messages-64 N] [--messages-4k N] [--samples N]
#                   [--warmup N] [--batch N] [--bridge PATH] [--build]
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/bridge.sh [--runs N] [--messages-64 N] [--messages-4k N] [--samples N]
                       [--warmup N] [--batch N] [--bridge PATH] [--build]

Starts a private nats-server with JetStream (loopback, a random port, its store in a
temporary directory on a real disk), two private qbusd ("host A" and "host B") and, per
measurement, qbus-bridge on each host (A: queue "out" -> JetStream subject bench.x of stream
BENCH; B: stream BENCH, consumer "b" -> queue "in"). With bridge-bench, alternated run by run:

  outbound   N messages pre-filled in "out" on A, then A's bridge started: until BENCH holds N
  publish    baseline: bridge-bench publishes N to BENCH itself (js_PublishMsgAsync, 256 pending)
  fetch      baseline: a pull consumer fetches the N in batches of --batch and acks them
  inbound    B's bridge started on BENCH holding N: until "in" on B has received N
at 64 B (--messages-64, default 100000) and 4 KiB (--messages-4k, default 20000); then, with
both bridges running, one 64 B message at a time qbus A -> NATS -> qbus B (--samples after
--warmup) against one JetStream publish + fetch of batch 1 + ack at a time, with libnats's
default options (as the bridge's) and with SendAsap (no 1 ms wait in its flusher thread).

Every figure is the median of --runs runs (default 5), shown with the runs' min-max.
Each latency run also splits its round at the JetStream timestamp of the message: until it
is stored, and from there to the reader. --batch is the routes' batch (default 64, the
bridge's default). --bridge measures another qbus-bridge (another build, an older commit)
than the build tree's. --build builds bridge-bench, qbusd and qbus-bridge in the build tree
first. The build tree is QBUS_BENCH_BUILD_DIR, else build-bench/ when it has qbus-bench,
else build/.
EOF
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=private_qbusd.sh disable=SC1091  # followed with -x
. "$REPO/bench/private_qbusd.sh"
# shellcheck source-path=SCRIPTDIR source=nats_server.sh
. "$REPO/bench/nats_server.sh"

RUNS=5
MESSAGES_64=100000
MESSAGES_4K=20000
SAMPLES=2000
WARMUP=200
BATCH=64
BUILD_FIRST=0
QBUS_BRIDGE=""
# A latency run stops sampling after this long, whatever --samples says.
LATENCY_MAX_SECONDS=120

need_count() {
  case "$2" in '' | *[!0-9]* | 0) echo "bridge.sh: $1 needs a positive integer" >&2; exit 2 ;; esac
}

while [ $# -gt 0 ]; do
  case "$1" in
    --runs | --messages-64 | --messages-4k | --samples | --warmup | --batch)
      [ $# -ge 2 ] || { usage >&2; exit 2; }
      if [ "$1" != --warmup ] || [ "$2" != 0 ]; then need_count "$1" "$2"; fi
      case "$1" in
        --runs) RUNS=$2 ;;
        --messages-64) MESSAGES_64=$2 ;;
        --messages-4k) MESSAGES_4K=$2 ;;
        --samples) SAMPLES=$2 ;;
        --warmup) WARMUP=$2 ;;
        --batch) BATCH=$2 ;;
      esac
      shift 2
      ;;
    --bridge)
      [ $# -ge 2 ] || { usage >&2; exit 2; }
      QBUS_BRIDGE=$2
      shift 2
      ;;
    --build) BUILD_FIRST=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bridge.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

BUILD=$(bench_build_dir "$REPO")
BRIDGE_BENCH="$BUILD/bench/bridge-bench"
QBUSD="$BUILD/daemon/qbusd"
QBUS_BRIDGE="${QBUS_BRIDGE:-$BUILD/bridge/qbus-bridge}"

log() { echo "bridge.sh: $*" >&2; }

need_tool nats-server nats-server
need_tool jq jq
if [ "$BUILD_FIRST" = 1 ]; then
  cmake --build "$BUILD" -j"$(nproc)" --target bridge-bench qbusd qbus-bridge >&2
fi
for bin in "$BRIDGE_BENCH" "$QBUSD" "$QBUS_BRIDGE"; do
  if [ ! -x "$bin" ]; then
    log "$bin is missing; build it: cmake --build $BUILD --target bridge-bench qbusd qbus-bridge"
    exit 1
  fi
done

# ---- the private servers, removed however we exit ---------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/qbus-bridge-bench.XXXXXX")
# JetStream's file store must be on a real disk, as the bridge's streams are: the temporary
# directory unless it is a tmpfs, else /var/tmp.
DISK_BASE="${TMPDIR:-/tmp}"
case "$(stat -f -c %T "$DISK_BASE" 2>/dev/null)" in tmpfs | ramfs) DISK_BASE=/var/tmp ;; esac
DISK=$(mktemp -d "$DISK_BASE/qbus-bridge-js.XXXXXX")
NATS_PID=""
NATS_URL=""
QBUSD_A_PID=""
QBUSD_B_PID=""
BRIDGE_A_PID=""
BRIDGE_B_PID=""
RESULTS="$TMP/results.jsonl"

stop_pid() {
  [ -n "$1" ] || return 0
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
  stop_pid "$BRIDGE_A_PID"
  stop_pid "$BRIDGE_B_PID"
  stop_pid "$QBUSD_A_PID"
  stop_pid "$QBUSD_B_PID"
  stop_pid "$NATS_PID"
  rm -rf "$TMP" "$DISK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A private nats-server with JetStream (bench/nats_server.sh).
start_nats_js() {
  cat >"$TMP/nats.conf" <<EOF
listen: "127.0.0.1:-1"
jetstream {
  store_dir: "$DISK/jetstream"
}
EOF
  launch_nats_server "$TMP/nats.conf" "$TMP" -js
}

# start_host DIR: a private qbusd as start_private_qbusd's, whose queue defaults also hold
# the whole pre-filled backlog (20,000 x 4 KiB is over the default bound of 64 MiB): the
# bridge declares its queue with the defaults, so the defaults are what must be raised.
# Sets DAEMON_PID.
start_host() {
  local dir=$1 _
  mkdir -p "$dir"
  cat >"$dir/qbusd.json" <<'JSON'
{"limits": {"uid_max_queued_bytes": 1099511627776, "uid_max_queued_messages": 1000000000000},
 "queue_defaults": {"max_messages": 100000000, "max_bytes": 68719476736}}
JSON
  "$QBUSD" --config "$dir/qbusd.json" --bus user --socket "$dir/sock" \
    --admin-socket "$dir/admin" --state-dir "$dir/state" --log-level warn \
    2>"$dir/qbusd.log" &
  DAEMON_PID=$!
  for _ in $(seq 200); do [ -S "$dir/sock" ] && return 0; sleep 0.05; done
  log "$QBUSD did not start:"
  cat "$dir/qbusd.log" >&2
  exit 1
}

# write_bridge_config HOST ROUTE_JSON: $TMP/HOST/bridge.json for the bridge of that host.
write_bridge_config() {
  local host=$1 route=$2
  cat >"$TMP/$host/bridge.json" <<EOF
{
  "qbus": {"address": "unix:$TMP/$host/sock", "name": "qbus-bridge-$host"},
  "host": "bench-$host",
  "status_file": "$TMP/$host/bridge-status.json",
  "nats": {"url": "$NATS_URL", "reconnect_wait_ms": 100},
  "routes": [$route]
}
EOF
  "$QBUS_BRIDGE" --config "$TMP/$host/bridge.json" --check-config >/dev/null
}

start_nats_js
start_host "$TMP/a"
QBUSD_A_PID=$DAEMON_PID
start_host "$TMP/b"
QBUSD_B_PID=$DAEMON_PID
DAEMON_PID=""
write_bridge_config a '{"name": "out", "direction": "outbound", "queue": "out",
  "subject": "bench.x", "stream": "BENCH", "batch": '"$BATCH"'}'
write_bridge_config b '{"name": "in", "direction": "inbound", "queue": "in",
  "subject": "bench.x", "stream": "BENCH", "consumer": "b", "batch": '"$BATCH"'}'
QBUS_A="unix:$TMP/a/sock"
QBUS_B="unix:$TMP/b/sock"

# bench MODE ARGS...: one bridge-bench run; its JSON line goes to the results and stderr.
bench() {
  local line
  line=$("$BRIDGE_BENCH" "$@" --url "$NATS_URL")
  echo "$line" >>"$RESULTS"
  echo "$line" >&2
}

# ---- throughput, each way ---------------------------------------------------------------

throughput_runs() {
  local size=$1 n=$2 run
  local common=(--size "$size" --messages "$n")
  for run in $(seq "$RUNS"); do
    log "throughput, $size B x $n, run $run of $RUNS"
    bench outbound "${common[@]}" --qbus "$QBUS_A" --bridge "$QBUS_BRIDGE" \
      --bridge-config "$TMP/a/bridge.json" --bridge-log "$TMP/a/bridge.log"
    bench publish "${common[@]}" --host bench-a
    bench fetch "${common[@]}" --batch "$BATCH"
    bench inbound "${common[@]}" --qbus "$QBUS_B" --bridge "$QBUS_BRIDGE" \
      --bridge-config "$TMP/b/bridge.json" --bridge-log "$TMP/b/bridge.log"
  done
}

# ---- latency: both bridges running --------------------------------------------------------

start_bridge() {
  local host=$1
  "$QBUS_BRIDGE" --config "$TMP/$host/bridge.json" 2>>"$TMP/$host/bridge.log" &
}

latency_runs() {
  local run
  "$BRIDGE_BENCH" reset --url "$NATS_URL"  # an empty BENCH: the consumer starts at its end
  start_bridge a
  BRIDGE_A_PID=$!
  start_bridge b
  BRIDGE_B_PID=$!
  local common=(--samples "$SAMPLES" --warmup "$WARMUP" --max-seconds "$LATENCY_MAX_SECONDS")
  for run in $(seq "$RUNS"); do
    log "latency, run $run of $RUNS"
    bench latency "${common[@]}" --qbus "$QBUS_A" --qbus-b "$QBUS_B"
    bench latency-nats "${common[@]}" --host bench-a
    bench latency-nats "${common[@]}" --host bench-a --send-asap
  done
  stop_pid "$BRIDGE_A_PID"
  stop_pid "$BRIDGE_B_PID"
  BRIDGE_A_PID=""
  BRIDGE_B_PID=""
}

# ---- the table ------------------------------------------------------------------------------

# values MODE SIZE FIELD [SEND_ASAP]: that field of every run (of bridge-bench's NATS
# connections writing at once when SEND_ASAP is true; default false), sorted.
values() {
  jq -r --arg m "$1" --argjson s "$2" --arg f "$3" --argjson a "${4:-false}" \
    'select(.mode == $m and .size == $s and (.send_asap // false) == $a) | .[$f]' "$RESULTS" |
    sort -g
}

# summary MODE SIZE FIELD [SEND_ASAP]: "median min max" of the runs.
summary() {
  values "$@" | awk '{ v[NR] = $1 }
    END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR] }'
}

rate_row() {
  local label=$1 mode=$2 base=$3 size=$4 b bmin bmax n nmin nmax
  read -r b bmin bmax <<<"$(summary "$mode" "$size" per_second)"
  read -r n nmin nmax <<<"$(summary "$base" "$size" per_second)"
  awk -v l="$label" -v s="$size" -v b="$b" -v bl="$bmin" -v bh="$bmax" -v n="$n" -v nl="$nmin" \
    -v nh="$nmax" 'BEGIN { printf "| %s | %d B | %.0f msg/s (%.0f–%.0f) | %.0f msg/s (%.0f–%.0f) | %.3f |\n",
      l, s, b, bl, bh, n, nl, nh, b / n }'
}

latency_row() {
  local label=$1 field=$2 b bmin bmax n nmin nmax a amin amax
  read -r b bmin bmax <<<"$(summary latency 64 "$field")"
  read -r n nmin nmax <<<"$(summary latency-nats 64 "$field")"
  read -r a amin amax <<<"$(summary latency-nats 64 "$field" true)"
  awk -v l="$label" -v b="$b" -v bl="$bmin" -v bh="$bmax" -v n="$n" -v nl="$nmin" -v nh="$nmax" \
    -v a="$a" -v al="$amin" -v ah="$amax" 'BEGIN {
      printf "| %s | %.1f µs (%.1f–%.1f) | %.1f µs (%.1f–%.1f) | %+.1f µs | %.2fx | %.1f µs (%.1f–%.1f) | %.2fx |\n",
        l, b, bl, bh, n, nl, nh, b - n, b / n, a, al, ah, b / a }'
}

table() {
  echo "### qbus-bridge (median of $RUNS runs, min–max in brackets)"
  echo
  echo "| figure | payload | through qbus-bridge | libnats alone | bridge/alone |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  rate_row "outbound: qbus queue -> JetStream" outbound publish 64
  rate_row "outbound: qbus queue -> JetStream" outbound publish 4096
  rate_row "inbound: JetStream -> qbus queue" inbound fetch 64
  rate_row "inbound: JetStream -> qbus queue" inbound fetch 4096
  echo
  echo "| one 64 B message at a time | qbus A -> bridge -> JetStream -> bridge -> qbus B | libnats alone: JetStream publish + fetch(1) + ack | added | bridge/alone | libnats alone, SendAsap | bridge/SendAsap |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  latency_row p50 p50_us
  latency_row p90 p90_us
  latency_row p99 p99_us
  latency_row "p50 until stored in JetStream" to_stream_p50_us
  latency_row "p50 from stored to the reader" from_stream_p50_us
}

STARTED=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "nats-server $(nats-server --version | awk '{ print $NF }') at $NATS_URL, JetStream in $DISK"
throughput_runs 64 "$MESSAGES_64"
throughput_runs 4096 "$MESSAGES_4K"
latency_runs
echo
table
echo
# Which bridge was measured: the build tree's is the checkout's (as built), else the path.
bridge_source() {
  if [ "$QBUS_BRIDGE" != "$BUILD/bridge/qbus-bridge" ]; then
    echo "$QBUS_BRIDGE (--bridge)"
    return
  fi
  echo "$QBUS_BRIDGE, qbus git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(
    git -C "$REPO" diff --quiet -- bridge 2>/dev/null || echo ' + uncommitted bridge/ changes')"
}
echo "Runtime $(($(date +%s) - STARTED)) s; load average $LOAD_BEFORE before, $(cut -d' ' -f1-3 /proc/loadavg) after; $(bridge_source); nats-server $(nats-server --version | awk '{ print $NF }'), libnats $(pkg-config --modversion libnats 2>/dev/null || echo '?')."
