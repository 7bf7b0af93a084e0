#!/usr/bin/env bash
# bench/compare.sh: qbus side by side with Redis and raw Unix sockets, in one run on one
# machine (issue 6). Prints every figure, the ratios qbus/Redis and qbus/raw, and each target
# next to its bar, and writes the same table to bench/RESULTS.md.
#
#   bench/compare.sh [--runs N] [--no-build] [--no-results]
#
# Everything it measures runs on this machine in this run, so the ratios are fair even on a
# noisy shared box where absolute numbers drift from one minute to the next.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/compare.sh [--runs N] [--no-build] [--no-results]

Builds the Release tree build-bench/ if needed (qbus-bench, relay, redis-streams,
redis-rr, redis-pubsub, nats-pubsub), installs redis-server, redis-tools, libhiredis-dev,
nats-server and libnats-dev from Debian if missing (as root; otherwise prints the apt-get
command and fails), then measures:
  raw socketpair ping-pong RTT, raw one-way batched throughput, the bare-relay ceiling
  (bench/relay.cpp); redis-benchmark LPUSH/RPOP, 64 B, -P 64 and -P 1 -c 1, on a private
  Unix socket; request/reply round trips on Redis lists, LPUSH + BLPOP (redis-rr);
  qbus-bench throughput and latency with 64 B payloads; the same throughput with the
  queue bounded at 1 MiB (--queue-bytes), with the consumer on an at-most-once
  subscription (--push) unbounded and bounded, with 4 producers and 4 consumers on the one
  queue, and with a 1,000-rule access policy and without one, alternating run by run; the
  same latency with qbusd busy polling for 50 µs (--busy-poll-us); acknowledgement
  mode (issue 13): qbus-bench throughput plain, --ack and --subscribe 1024, alternating run
  by run, beside Redis Streams XADD/XREADGROUP/XACK (redis-streams), and the redelivery
  time after a consumer's SIGKILL (qbus-bench redelivery, 200 rounds); qbus-bench bulk
  (4 KiB and 64 MiB), memory (idle, 1,000,000 queued messages) and connections (10,000 idle);
  durable queues (issue 14): confirmed sends of 50 producers to a durable queue (fsync
  always, batch, none) and to a plain one, beside redis-benchmark LPUSH -c 50 on a Redis
  with appendonly yes (appendfsync always, everysec), with 64 and with 1 send in flight per
  producer, alternating run by run, journal and AOF on a real disk (/var/tmp when the
  temporary directory is a tmpfs); and the recovery of 1,000,000 queued messages after
  qbusd's SIGKILL (qbus-bench recovery); publish/subscribe (issue 15, compare_pubsub.sh):
  fan-out of 64 B from 1 publisher to 8 subscribers on qbus (qbus-bench fanout), Redis
  PUBLISH/PSUBSCRIBE (redis-pubsub) and NATS (nats-pubsub against a private nats-server),
  alternated run by run; the publish rate with 10,000 subscriptions that never match
  against none; a 64 MiB region fanned out to 4 against the same region handed to one.
Every figure is the median of --runs runs (default 3). QBUS_BENCH_BUILD_DIR overrides the
build tree. Writes bench/RESULTS.md unless --no-results is given, keeping its section of
bench/bridge.sh's figures as it was. --no-build uses the binaries already in build-bench/ as they are.
EOF
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# QBUS_BENCH_BUILD_DIR: another build tree (e.g. to try a fresh build beside build-bench/).
BUILD="${QBUS_BENCH_BUILD_DIR:-$REPO/build-bench}"
QBUS_BENCH="$BUILD/bench/qbus-bench"
RELAY="$BUILD/bench/relay"
REDIS_STREAMS="$BUILD/bench/redis-streams"
REDIS_RR="$BUILD/bench/redis-rr"
REDIS_PUBSUB="$BUILD/bench/redis-pubsub"
NATS_PUBSUB="$BUILD/bench/nats-pubsub"
RESULTS="$REPO/bench/RESULTS.md"
COMMAND_LINE="bench/compare.sh${*:+ $*}"

RUNS=3
WRITE_RESULTS=1
BUILD_FIRST=1
SIZE=64
REDIS_PIPELINED_N=1000000
REDIS_UNPIPELINED_N=100000
QBUS_THROUGHPUT_MESSAGES=2000000
# The same run with the queue bounded (producers block there), as a real queue's limit does:
# the backlog then stays small enough for the store to reuse its chunks (issue 18).
BOUNDED_QUEUE_BYTES=1048576
# Request/reply round trips per run, for qbus-bench latency and for its Redis peer redis-rr.
QBUS_LATENCY_REQUESTS=100000
# The same round trips again with qbusd polling this many µs before it sleeps
# (limits.busy_poll_us, issue 18).
BUSY_POLL_US=50
RELAY_MESSAGES=10000000
# The policy cost (issue 12): rules in the policy measured against none.
POLICY_RULES=1000
# Acknowledgement mode (issue 13): the subscription's prefetch, and the entries per
# XREADGROUP of the Redis Streams peer, both 1,024 as the issue's comparison asks.
SUBSCRIBE_PREFETCH=1024
STREAMS_COUNT=1024
REDELIVERY_ROUNDS=200
# The drain target's receive window: Redis -P 64 with its default 50 clients has 3,200
# RPOPs in flight; one qbus consumer asking for 1,024 messages per round trip has fewer.
# The default window (256) is measured and shown as well.
DRAIN_WINDOW=1024
BULK_RUNS=5
# qbus-bench regions' rounds per size and case (its medians are over rounds, not runs).
REGION_RUNS=15
MEMORY_MESSAGES=1000000
IDLE_CONNECTIONS=10000
IDLE_SECONDS=10
# Durable queues (issue 14): confirmed sends from DURABLE_CLIENTS producers (qbus) and
# clients (redis-benchmark -c), each with W sends in flight for each W in DURABLE_WINDOWS
# (qbus-bench --confirm W, redis-benchmark -P W: both write W sends and wait for all W
# answers), and the messages of each run per window.
DURABLE_CLIENTS=50
DURABLE_WINDOWS="64 1"
declare -A DURABLE_MESSAGES=([64]=1000000 [1]=100000)
RECOVERY_MESSAGES=1000000

while [ $# -gt 0 ]; do
  case "$1" in
    --runs)
      [ $# -ge 2 ] || { usage >&2; exit 2; }
      RUNS=$2
      shift 2
      ;;
    --no-results) WRITE_RESULTS=0; shift ;;
    --no-build) BUILD_FIRST=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "compare.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case "$RUNS" in '' | *[!0-9]* | 0) echo "compare.sh: --runs needs a positive integer" >&2; exit 2 ;; esac

# ---- cleanup: the private redis-server and the temp dir go away however we exit --------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/qbus-compare.XXXXXX")
# The journal of durable queues and Redis's AOF must be on a real disk, where an fsync
# costs what it costs: the temporary directory unless it is a tmpfs, else /var/tmp.
DISK_BASE="${TMPDIR:-/tmp}"
case "$(stat -f -c %T "$DISK_BASE" 2>/dev/null)" in tmpfs | ramfs) DISK_BASE=/var/tmp ;; esac
DISK=$(mktemp -d "$DISK_BASE/qbus-compare-disk.XXXXXX")
REDIS_PID=""
# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
  stop_nats
  if [ -n "$REDIS_PID" ] && kill -0 "$REDIS_PID" 2>/dev/null; then
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP" "$DISK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { echo "compare.sh: $*" >&2; }

# Every measuring command, as run, for RESULTS.md: anyone can rerun a single figure.
COMMANDS=()
record() { COMMANDS+=("$*"); }
# has_option MODE OPTION: qbus-bench MODE offers OPTION. The help is read whole first: with
# pipefail, `grep -q` ending a pipe early would fail it once qbus-bench writes on (SIGPIPE).
has_option() {
  local help
  help=$("$QBUS_BENCH" "$1" --help 2>&1 || true)
  grep -q -- "$2" <<<"$help"
}

# ---- arithmetic and parsing helpers (awk: bash has no floating point) -------------------

# median of the numbers given as arguments (mean of the middle two for an even count)
median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "nan"; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# calc EXPR: evaluates a floating-point awk expression; "n/a" if any operand is n/a.
calc() {
  case "$1" in *n/a*) echo "n/a"; return ;; esac
  awk "BEGIN { printf \"%.6g\n\", $1 }"
}

# json_num FILE KEY: the first numeric value of "KEY": in a one-line JSON object.
json_num() {
  grep -o "\"$2\":[-0-9.eE+]*" "$1" | head -n 1 | cut -d: -f2
}

# json_sub_num FILE OBJECT KEY: a number inside the flat nested object "OBJECT":{...}.
json_sub_num() {
  grep -o "\"$2\":{[^}]*}" "$1" | head -n 1 | grep -o "\"$3\":[-0-9.eE+]*" | cut -d: -f2
}

# qbus-bench latency, with ARGS after the common options, into $TMP/NAME.json.
qbus_latency() {
  local out="$TMP/$1.json"
  shift
  local cmd=("$QBUS_BENCH" latency --size "$SIZE" --requests "$QBUS_LATENCY_REQUESTS" --runs "$RUNS"
    "$@" --json)
  record "${cmd[@]#"$REPO/"}"
  log "qbus-bench latency $*"
  "${cmd[@]}" >"$out"
}

# Of qbus_latency's NAME: the request/reply p50, p99 and p99.9 and the in-run raw p50, in µs.
latency_figures() {
  local out="$TMP/$1.json"
  echo "$(json_sub_num "$out" qbus_request_reply p50_us) $(json_sub_num "$out" qbus_request_reply p99_us)" \
    "$(json_sub_num "$out" qbus_request_reply p99_9_us) $(json_sub_num "$out" raw_socketpair p50_us)"
}

# Formatting for the table: messages/s with thousands separators, µs with two decimals.
fmt_rate() {
  case "$1" in n/a) echo "n/a" ;; *) LC_ALL=C awk -v x="$1" 'BEGIN {
    s = sprintf("%.0f", x); o = ""
    while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }
    print s o " msg/s" }' ;; esac
}
fmt_count() { fmt_rate "$1" | sed 's/ msg\/s$//'; }
fmt_us() { case "$1" in n/a) echo "n/a" ;; *) awk -v x="$1" 'BEGIN { printf "%.2f µs\n", x }' ;; esac; }
fmt_ratio() { case "$1" in n/a) echo "n/a" ;; *) awk -v x="$1" 'BEGIN { printf "%.2fx\n", x }' ;; esac; }
fmt_ns() { case "$1" in n/a) echo "n/a" ;; *) awk -v x="$1" 'BEGIN { printf "%.0f ns\n", x }' ;; esac; }
fmt_pct() { case "$1" in n/a) echo "n/a" ;; *) awk -v x="$1" 'BEGIN { printf "%.1f%%\n", 100 * x }' ;; esac; }

# verdict VALUE OP BAR: PASS/FAIL of "VALUE OP BAR" (OP is >= or <=), n/a if VALUE is.
verdict() {
  case "$1" in n/a) echo "n/a"; return ;; esac
  if awk -v v="$1" -v b="$3" "BEGIN { exit !(v $2 b) }"; then echo PASS; else echo FAIL; fi
}

# ---- (a) build --------------------------------------------------------------------------

# Reuses scripts/deps.sh: the build's own packages plus Redis, installed by apt-get as root,
# else the exact command is printed and we fail.
install_deps() {
  # shellcheck source-path=SCRIPTDIR/.. source=scripts/deps.sh
  source "$REPO/scripts/deps.sh"
  QBUS_PACKAGES+=(redis-server redis-tools libhiredis-dev)
  QBUS_PACKAGES+=(nats-server libnats-dev)
  qbus_install_deps
}

build() {
  # Configure only when the tree is missing or not Release: reconfiguring is slow and
  # the incremental build below catches every source change anyway.
  # A tree configured before hiredis or libnats was installed lacks the Redis or NATS
  # peers: configure again.
  if ! grep -qs '^CMAKE_BUILD_TYPE:STRING=Release$' "$BUILD/CMakeCache.txt" ||
    ! grep -qs '^HIREDIS_FOUND:INTERNAL=1$' "$BUILD/CMakeCache.txt" ||
    ! grep -qs '^LIBNATS_FOUND:INTERNAL=1$' "$BUILD/CMakeCache.txt"; then
    log "configuring $BUILD (Release)"
    cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >"$TMP/cmake.log" 2>&1 ||
      { cat "$TMP/cmake.log" >&2; exit 1; }
  fi
  log "building qbus-bench, relay, redis-streams, redis-rr, redis-pubsub and nats-pubsub"
  cmake --build "$BUILD" --target qbus-bench relay redis-streams redis-rr redis-pubsub nats-pubsub -j "$(nproc)" >"$TMP/build.log" 2>&1 ||
    { tail -n 50 "$TMP/build.log" >&2; exit 1; }
}

# ---- (b) Redis --------------------------------------------------------------------------

REDIS_SOCK="$TMP/redis.sock"

# A private redis-server on a Unix socket only (--port 0): no TCP, no persistence, so it
# measures the same kind of transport qbus uses and never touches a system instance.
start_redis() {
  redis-server --port 0 --unixsocket "$REDIS_SOCK" --unixsocketperm 700 --save '' \
    --appendonly no --dir "$TMP" --logfile "$TMP/redis.log" --daemonize no &
  REDIS_PID=$!
  await_redis "$REDIS_SOCK" "$TMP/redis.log" "redis-server"
}

# await_redis SOCKET LOG WHAT: waits for the redis-server just started (REDIS_PID) to answer
# on SOCKET; shows its LOG and exits when it does not come up.
await_redis() {
  local sock=$1 logfile=$2 what=$3 i
  for i in $(seq 100); do
    redis-cli -s "$sock" ping >/dev/null 2>&1 && return 0
    kill -0 "$REDIS_PID" 2>/dev/null || break
    sleep 0.05
    : "$i"
  done
  log "$what did not come up:"
  cat "$logfile" >&2 || true
  exit 1
}

# redis_run LABEL ARGS...: RUNS runs of redis-benchmark LPUSH then RPOP; sets
# REDIS_LPUSH_<LABEL> and REDIS_RPOP_<LABEL> to the median requests/s.
redis_run() {
  local label=$1
  shift
  local cmd=(redis-benchmark -s "$REDIS_SOCK" -t "lpush,rpop" -d "$SIZE" "$@" --csv)
  record "${cmd[@]}"
  local lpush=() rpop=() r out
  for r in $(seq "$RUNS"); do
    # An empty list each run: RPOP then pops exactly what this run's LPUSH pushed.
    redis-cli -s "$REDIS_SOCK" flushall >/dev/null
    out="$TMP/redis-$label-$r.csv"
    "${cmd[@]}" >"$out" 2>"$TMP/redis-bench.err" || { cat "$TMP/redis-bench.err" >&2; exit 1; }
    lpush+=("$(awk -F, '$1 == "\"LPUSH\"" { gsub(/"/, "", $2); print $2 }' "$out")")
    rpop+=("$(awk -F, '$1 == "\"RPOP\"" { gsub(/"/, "", $2); print $2 }' "$out")")
    log "redis $label run $r: LPUSH ${lpush[-1]}/s, RPOP ${rpop[-1]}/s"
  done
  printf -v "REDIS_LPUSH_$label" '%s' "$(median "${lpush[@]}")"
  printf -v "REDIS_RPOP_$label" '%s' "$(median "${rpop[@]}")"
}

# Redis Streams doing qbus-bench throughput's acknowledged work (bench/redis_streams.cpp):
# 1 producer XADDs (pipelined 64), 1 consumer XREADGROUPs COUNT STREAMS_COUNT and XACKs
# each batch. Sets STREAMS_RATE to the median messages/s of RUNS runs.
run_redis_streams() {
  local cmd=("$REDIS_STREAMS" --socket "$REDIS_SOCK" --messages "$QBUS_THROUGHPUT_MESSAGES"
    --size "$SIZE" --count "$STREAMS_COUNT" --pipeline 64 --runs "$RUNS" --json)
  record "${cmd[@]#"$REPO/"}"
  log "redis-streams XADD/XREADGROUP/XACK"
  redis-cli -s "$REDIS_SOCK" flushall >/dev/null
  "${cmd[@]}" >"$TMP/redis-streams.json"
  STREAMS_RATE=$(json_num "$TMP/redis-streams.json" messages_per_second)
}

# qbus-bench latency's work on Redis (bench/redis_rr.cpp): 1 requester LPUSHes a request
# and BLPOPs its reply, 1 responder BLPOPs and LPUSHes it back, one request outstanding.
# Sets REDIS_RR_P50, REDIS_RR_P99 and REDIS_RR_P999 (µs, each the median of RUNS runs).
run_redis_rr() {
  local cmd=("$REDIS_RR" --socket "$REDIS_SOCK" --requests "$QBUS_LATENCY_REQUESTS"
    --size "$SIZE" --runs "$RUNS" --json)
  record "${cmd[@]#"$REPO/"}"
  log "redis-rr LPUSH + BLPOP request/reply"
  "${cmd[@]}" >"$TMP/redis-rr.json"
  REDIS_RR_P50=$(json_sub_num "$TMP/redis-rr.json" redis_request_reply p50_us)
  REDIS_RR_P99=$(json_sub_num "$TMP/redis-rr.json" redis_request_reply p99_us)
  REDIS_RR_P999=$(json_sub_num "$TMP/redis-rr.json" redis_request_reply p99_9_us)
}

# ---- (c) raw sockets and the bare relay -------------------------------------------------

run_relay() {
  local cmd=("$RELAY" all --messages "$RELAY_MESSAGES" --size "$SIZE" --runs "$RUNS" --json)
  record "${cmd[@]#"$REPO/"}"
  log "relay ceiling, raw one-way, raw ping-pong"
  "${cmd[@]}" >"$TMP/relay.json"
  RELAY_RATE=$(json_num "$TMP/relay.json" relay_messages_per_second)
  ONEWAY_RATE=$(json_num "$TMP/relay.json" oneway_messages_per_second)
  RAW_P50=$(json_num "$TMP/relay.json" pingpong_p50_us)
  RAW_P99=$(json_num "$TMP/relay.json" pingpong_p99_us)
}

# ---- (d) qbus-bench ---------------------------------------------------------------------

# qbus_throughput NAME N [ARGS...]: qbus-bench throughput of 64 B, N producers and N
# consumers on one queue, into $TMP/NAME.json.
qbus_throughput() {
  local name=$1 n=$2
  shift 2
  local cmd=("$QBUS_BENCH" throughput --producers "$n" --consumers "$n" --size "$SIZE"
    --messages "$QBUS_THROUGHPUT_MESSAGES" --runs "$RUNS" --json "$@")
  record "${cmd[@]#"$REPO/"}"
  log "qbus-bench throughput --producers $n --consumers $n $*"
  "${cmd[@]}" >"$TMP/$name.json"
}

run_qbus() {
  qbus_throughput qbus-throughput 1
  QBUS_RATE=$(json_num "$TMP/qbus-throughput.json" messages_per_second)
  QBUS_CPU_NS=$(json_num "$TMP/qbus-throughput.json" daemon_cpu_ns_per_message)
  qbus_throughput qbus-throughput-bounded 1 --queue-bytes "$BOUNDED_QUEUE_BYTES"
  QBUS_BOUNDED_RATE=$(json_num "$TMP/qbus-throughput-bounded.json" messages_per_second)
  QBUS_BOUNDED_CPU_NS=$(json_num "$TMP/qbus-throughput-bounded.json" daemon_cpu_ns_per_message)
  # The consumer on an at-most-once subscription: the broker writes while it reads, with no
  # RECEIVE round trip per batch to wait for (issue 18).
  qbus_throughput qbus-throughput-push 1 --push
  QBUS_PUSH_RATE=$(json_num "$TMP/qbus-throughput-push.json" messages_per_second)
  QBUS_PUSH_CPU_NS=$(json_num "$TMP/qbus-throughput-push.json" daemon_cpu_ns_per_message)
  qbus_throughput qbus-throughput-push-bounded 1 --push --queue-bytes "$BOUNDED_QUEUE_BYTES"
  QBUS_PUSH_BOUNDED_RATE=$(json_num "$TMP/qbus-throughput-push-bounded.json" messages_per_second)
  QBUS_PUSH_BOUNDED_CPU_NS=$(json_num "$TMP/qbus-throughput-push-bounded.json" daemon_cpu_ns_per_message)
  # 4 producers and 4 consumers on the same one queue (issue 18: at least the 1-to-1 figure).
  qbus_throughput qbus-throughput-4x4 4
  QBUS_4X4_RATE=$(json_num "$TMP/qbus-throughput-4x4.json" messages_per_second)
  QBUS_4X4_CPU_NS=$(json_num "$TMP/qbus-throughput-4x4.json" daemon_cpu_ns_per_message)

  # Enqueue-only and drain-only rates: used when qbus-bench throughput offers them
  # ("--phase enqueue|drain"); otherwise those targets are reported n/a, never guessed.
  QBUS_ENQUEUE=n/a QBUS_DRAIN=n/a QBUS_DRAIN_WIDE=n/a QBUS_PHASES_NOTE="qbus-bench lacks it"
  local help phase
  help=$("$QBUS_BENCH" throughput --help 2>&1 || true)
  if grep -q -- '--phase' <<<"$help" && grep -qi enqueue <<<"$help" && grep -qi drain <<<"$help"; then
    QBUS_PHASES_NOTE=""
    local run window
    for run in enqueue drain drain-wide; do
      phase=${run%-wide}
      window=()
      [ "$run" = drain-wide ] && window=(--batch "$DRAIN_WINDOW")
      cmd=("$QBUS_BENCH" throughput --phase "$phase" "${window[@]}" --producers 1 --consumers 1
        --size "$SIZE" --messages "$QBUS_THROUGHPUT_MESSAGES" --runs "$RUNS" --json)
      record "${cmd[@]#"$REPO/"}"
      log "qbus-bench throughput --phase $phase ${window[*]}"
      "${cmd[@]}" >"$TMP/qbus-$run.json"
      case "$run" in
        enqueue) QBUS_ENQUEUE=$(json_num "$TMP/qbus-$run.json" messages_per_second) ;;
        drain) QBUS_DRAIN=$(json_num "$TMP/qbus-$run.json" messages_per_second) ;;
        drain-wide) QBUS_DRAIN_WIDE=$(json_num "$TMP/qbus-$run.json" messages_per_second) ;;
      esac
    done
  fi

  # Each with qbus-bench's own raw ping-pong, alternated with the qbus runs: noise hits both
  # alike. The second has qbusd polling for BUSY_POLL_US before it sleeps (limits.busy_poll_us).
  qbus_latency qbus-latency
  read -r QBUS_P50 QBUS_P99 QBUS_P999 INRUN_RAW_P50 < <(latency_figures qbus-latency)
  qbus_latency qbus-latency-bp --busy-poll-us "$BUSY_POLL_US"
  read -r QBUS_BP_P50 QBUS_BP_P99 QBUS_BP_P999 INRUN_RAW_BP_P50 < <(latency_figures qbus-latency-bp)
}

# The cost of a large access policy (issue 12): producer -> queue -> consumer with a
# POLICY_RULES-rule policy and with none, one run of each in turn (which goes first
# alternates too), so that drift on a shared machine hits both alike. Each run is its own
# private daemon; the figures are the medians of RUNS runs each.
run_policy() {
  POLICY_NONE_RATE=n/a POLICY_RATE=n/a POLICY_NONE_CPU_NS=n/a POLICY_CPU_NS=n/a
  local base=("$QBUS_BENCH" throughput --producers 1 --consumers 1 --size "$SIZE"
    --messages "$QBUS_THROUGHPUT_MESSAGES" --runs 1 --json)
  if ! has_option throughput '--policy-rules'; then
    log "qbus-bench throughput has no --policy-rules: the policy cost is n/a"
    return 0
  fi
  record "${base[@]#"$REPO/"}"
  record "${base[@]#"$REPO/"}" --policy-rules "$POLICY_RULES"
  local none=() with=() none_cpu=() with_cpu=() r which order out
  for r in $(seq "$RUNS"); do
    order="none with"
    [ $((r % 2)) -eq 0 ] && order="with none"
    for which in $order; do
      out="$TMP/qbus-policy-$which-$r.json"
      if [ "$which" = with ]; then
        "${base[@]}" --policy-rules "$POLICY_RULES" >"$out"
        with+=("$(json_num "$out" messages_per_second)")
        with_cpu+=("$(json_num "$out" daemon_cpu_ns_per_message)")
      else
        "${base[@]}" >"$out"
        none+=("$(json_num "$out" messages_per_second)")
        none_cpu+=("$(json_num "$out" daemon_cpu_ns_per_message)")
      fi
    done
    log "policy run $r: none ${none[-1]}/s, $POLICY_RULES rules ${with[-1]}/s"
  done
  POLICY_NONE_RATE=$(median "${none[@]}")
  POLICY_RATE=$(median "${with[@]}")
  POLICY_NONE_CPU_NS=$(median "${none_cpu[@]}")
  POLICY_CPU_NS=$(median "${with_cpu[@]}")
}

# Acknowledgement mode (issue 13): producer -> queue -> consumer plain, with --ack
# (receive_batch in ack mode, one pipelined ack_up_to per batch) and with --subscribe
# SUBSCRIBE_PREFETCH (ack_up_to every prefetch/4), one run of each in turn, the order
# rotating each round, each on its own private broker. Medians of RUNS runs each.
run_ack() {
  ACK_PLAIN_RATE=n/a ACK_RATE=n/a SUB_RATE=n/a
  ACK_PLAIN_CPU_NS=n/a ACK_CPU_NS=n/a SUB_CPU_NS=n/a
  local base=("$QBUS_BENCH" throughput --producers 1 --consumers 1 --size "$SIZE"
    --messages "$QBUS_THROUGHPUT_MESSAGES" --runs 1 --json)
  if ! has_option throughput '--subscribe'; then
    log "qbus-bench throughput has no --ack/--subscribe: acknowledgement mode is n/a"
    return 0
  fi
  record "${base[@]#"$REPO/"}"
  record "${base[@]#"$REPO/"}" --ack
  record "${base[@]#"$REPO/"}" --subscribe "$SUBSCRIBE_PREFETCH"
  local plain=() ack=() sub=() plain_cpu=() ack_cpu=() sub_cpu=() r which order out extra
  for r in $(seq "$RUNS"); do
    case $((r % 3)) in
      1) order="plain ack sub" ;;
      2) order="ack sub plain" ;;
      *) order="sub plain ack" ;;
    esac
    for which in $order; do
      out="$TMP/qbus-ack-$which-$r.json"
      case "$which" in
        plain) extra=() ;;
        ack) extra=(--ack) ;;
        sub) extra=(--subscribe "$SUBSCRIBE_PREFETCH") ;;
      esac
      "${base[@]}" "${extra[@]}" >"$out"
      case "$which" in
        plain) plain+=("$(json_num "$out" messages_per_second)")
          plain_cpu+=("$(json_num "$out" daemon_cpu_ns_per_message)") ;;
        ack) ack+=("$(json_num "$out" messages_per_second)")
          ack_cpu+=("$(json_num "$out" daemon_cpu_ns_per_message)") ;;
        sub) sub+=("$(json_num "$out" messages_per_second)")
          sub_cpu+=("$(json_num "$out" daemon_cpu_ns_per_message)") ;;
      esac
    done
    log "ack run $r: plain ${plain[-1]}/s, --ack ${ack[-1]}/s, --subscribe ${sub[-1]}/s"
  done
  ACK_PLAIN_RATE=$(median "${plain[@]}")
  ACK_RATE=$(median "${ack[@]}")
  SUB_RATE=$(median "${sub[@]}")
  ACK_PLAIN_CPU_NS=$(median "${plain_cpu[@]}")
  ACK_CPU_NS=$(median "${ack_cpu[@]}")
  SUB_CPU_NS=$(median "${sub_cpu[@]}")

  # Redelivery after a holder's SIGKILL (no Redis counterpart: Streams only redeliver
  # through XCLAIM/XAUTOCLAIM after an idle time). A failure leaves it n/a.
  REDELIVERY_P50=n/a REDELIVERY_P99=n/a
  local cmd=("$QBUS_BENCH" redelivery --rounds "$REDELIVERY_ROUNDS" --json)
  record "${cmd[@]#"$REPO/"}"
  log "qbus-bench redelivery"
  if "${cmd[@]}" >"$TMP/qbus-redelivery.json" 2>"$TMP/qbus-redelivery.err"; then
    REDELIVERY_P50=$(json_num "$TMP/qbus-redelivery.json" p50_us)
    REDELIVERY_P99=$(json_num "$TMP/qbus-redelivery.json" p99_us)
  else
    log "qbus-bench redelivery failed: $(tail -n 3 "$TMP/qbus-redelivery.err")"
  fi
}

# ---- durable queues (issue 14) ----------------------------------------------------------

# spread VALUES...: "min–max" of the numbers, as rates.
spread() {
  local sorted
  sorted=$(printf '%s\n' "$@" | sort -g)
  echo "$(fmt_count "$(head -n 1 <<<"$sorted")")–$(fmt_count "$(tail -n 1 <<<"$sorted")")"
}

# A private redis-server with an append-only file in DIR (on the disk) and appendfsync
# FSYNC, on a Unix socket of its own; sets REDIS_PID and AOF_SOCK.
start_redis_aof() {
  local fsync=$1 dir=$2
  AOF_SOCK="$TMP/redis-aof.sock"
  redis-server --port 0 --unixsocket "$AOF_SOCK" --unixsocketperm 700 --save '' \
    --appendonly yes --appendfsync "$fsync" --dir "$dir" --logfile "$dir/redis.log" \
    --daemonize no &
  REDIS_PID=$!
  await_redis "$AOF_SOCK" "$dir/redis.log" "redis-server (appendfsync $fsync)"
}

stop_redis() {
  kill "$REDIS_PID" 2>/dev/null || true
  wait "$REDIS_PID" 2>/dev/null || true
  REDIS_PID=""
}

# Per variant and window ("always_64", "redis_everysec_1", ...): the runs' rates and daemon
# CPU per message (space-separated), then their medians and spreads.
declare -A DUR_RUNS=() DUR_CPU_RUNS=() DURABLE=() DURABLE_SPREAD=() DURABLE_CPU=()
# Per Redis variant: the runs in which Redis started an AOF rewrite; the durable commands.
declare -A REDIS_REWRITES=()
DURABLE_COMMANDS=()

# durable_one WHICH WINDOW RUN: one run of one variant, added to DUR_RUNS (and, for qbus, the
# daemon's CPU per message to DUR_CPU_RUNS). WHICH: qbus-always, qbus-batch, qbus-none,
# qbus-off (a plain queue, confirmed sends all the same), redis-always, redis-everysec.
durable_one() {
  local which=$1 w=$2 r=$3 n=${DURABLE_MESSAGES[$2]} out rate dir key
  out="$TMP/durable-$which-$w-$r"
  case "$which" in
    qbus-*)
      key="${which#qbus-}_$w"
      "${DURABLE_QBUS[@]}" --messages "$n" --confirm "$w" --durable "${which#qbus-}" \
        --state-dir "$DISK" >"$out.json"
      rate=$(json_num "$out.json" messages_per_second)
      DUR_CPU_RUNS[$key]+=" $(json_num "$out.json" daemon_cpu_ns_per_message)"
      ;;
    redis-*)
      key="redis_${which#redis-}_$w"
      dir="$DISK/redis-$which-$w-$r"
      mkdir -p "$dir"
      start_redis_aof "${which#redis-}" "$dir"
      redis-benchmark -s "$AOF_SOCK" -t lpush -d "$SIZE" -c "$DURABLE_CLIENTS" -P "$w" -n "$n" \
        --csv >"$out.csv" 2>"$out.err" || { cat "$out.err" >&2; exit 1; }
      stop_redis
      rate=$(awk -F, '$1 == "\"LPUSH\"" { gsub(/"/, "", $2); print $2 }' "$out.csv")
      # An AOF rewrite Redis started meanwhile (auto-aof-rewrite at 64 MB, its default).
      if grep -q 'Background append only file rewriting started' "$dir/redis.log"; then
        REDIS_REWRITES[$key]=$((${REDIS_REWRITES[$key]:-0} + 1))
      fi
      rm -rf "$dir"
      ;;
  esac
  DUR_RUNS[$key]+=" $rate"
  log "durable window $w run $r: $which $rate/s"
}

# Confirmed sends to durable queues against Redis with an AOF, for each window in
# DURABLE_WINDOWS: RUNS rounds, each running every variant once on a fresh daemon or
# redis-server (the order reversed every other round), so drift on a shared machine hits
# them all alike. Medians (and spreads) of RUNS runs each.
run_durable() {
  DURABLE_QBUS=("$QBUS_BENCH" throughput --phase enqueue --producers "$DURABLE_CLIENTS"
    --size "$SIZE" --runs 1 --json)
  if ! has_option throughput '--durable'; then
    log "qbus-bench throughput has no --durable: durable queues are n/a"
    DURABLE_WINDOWS=""
  fi
  local variants="qbus-always redis-always qbus-batch redis-everysec qbus-none qbus-off"
  local w r which order n key
  for w in $DURABLE_WINDOWS; do
    n=${DURABLE_MESSAGES[$w]}
    for which in $variants; do
      case "$which" in
        qbus-*) DURABLE_COMMANDS+=("${DURABLE_QBUS[*]#"$REPO/"} --messages $n --confirm $w --durable ${which#qbus-} --state-dir DISK") ;;
        redis-*) DURABLE_COMMANDS+=("redis-benchmark -s SOCKET -t lpush -d $SIZE -c $DURABLE_CLIENTS -P $w -n $n --csv  # appendonly yes, appendfsync ${which#redis-}") ;;
      esac
      record "${DURABLE_COMMANDS[-1]}"
    done
    for r in $(seq "$RUNS"); do
      order=$variants
      [ $((r % 2)) -eq 0 ] && order=$(tr ' ' '\n' <<<"$variants" | tac | tr '\n' ' ')
      for which in $order; do durable_one "$which" "$w" "$r"; done
    done
    for key in "${!DUR_RUNS[@]}"; do
      # shellcheck disable=SC2086  # the runs, one word each
      DURABLE[$key]=$(median ${DUR_RUNS[$key]})
      # shellcheck disable=SC2086
      DURABLE_SPREAD[$key]=$(spread ${DUR_RUNS[$key]})
    done
    for key in "${!DUR_CPU_RUNS[@]}"; do
      # shellcheck disable=SC2086
      DURABLE_CPU[$key]=$(median ${DUR_CPU_RUNS[$key]})
    done
  done

  # Recovery: 1,000,000 messages in a durable queue, qbusd SIGKILLed and started again.
  RECOVERY_READY=n/a RECOVERY_ACCEPT=n/a RECOVERY_REPLAY=n/a RECOVERY_EMPTY=n/a
  RECOVERY_BYTES=n/a RECOVERY_RSS_BEFORE=n/a RECOVERY_RSS=n/a RECOVERY_RUNS=""
  if "$QBUS_BENCH" recovery --help >/dev/null 2>&1; then
    local cmd=("$QBUS_BENCH" recovery --messages "$RECOVERY_MESSAGES" --size "$SIZE"
      --fill-fsync none --runs "$RUNS" --state-dir "$DISK" --json)
    DURABLE_COMMANDS+=("${cmd[*]#"$REPO/"}")
    DURABLE_COMMANDS[-1]=${DURABLE_COMMANDS[-1]//$DISK/DISK}
    record "${DURABLE_COMMANDS[-1]}"
    log "qbus-bench recovery ($RECOVERY_MESSAGES messages)"
    if "${cmd[@]}" >"$TMP/qbus-recovery.json" 2>"$TMP/qbus-recovery.err"; then
      RECOVERY_READY=$(json_num "$TMP/qbus-recovery.json" ready_ms)
      RECOVERY_ACCEPT=$(json_num "$TMP/qbus-recovery.json" accept_ms)
      RECOVERY_REPLAY=$(json_num "$TMP/qbus-recovery.json" replay_ms)
      RECOVERY_EMPTY=$(json_num "$TMP/qbus-recovery.json" empty_ready_ms)
      RECOVERY_BYTES=$(json_num "$TMP/qbus-recovery.json" journal_bytes)
      RECOVERY_RSS_BEFORE=$(json_num "$TMP/qbus-recovery.json" daemon_rss_before_kill_bytes)
      RECOVERY_RSS=$(json_num "$TMP/qbus-recovery.json" daemon_rss_bytes)
      RECOVERY_RUNS=$(grep -o '"run_ready_ms":\[[^]]*\]' "$TMP/qbus-recovery.json" | cut -d'[' -f2 |
        tr -d ']' | sed 's/,/ \/ /g')
    else
      log "qbus-bench recovery failed: $(tail -n 3 "$TMP/qbus-recovery.err")"
    fi
  fi
}

# json_nums FILE KEY: every numeric value of "KEY": in the file, one per line, in order.
json_nums() {
  grep -o "\"$2\":[-0-9.eE+]*" "$1" | cut -d: -f2
}

mib() { calc "$1 / 1048576"; }

# Bulk, memory and connections: one qbus-bench run each (bulk takes the median of its own
# --runs). A failure leaves the figures n/a and says why in the log, never aborts the rest.
run_qbus_resources() {
  BULK_H4K=n/a BULK_H64M=n/a BULK_H_RATIO=n/a BULK_E2E_64M=n/a BULK_INLINE_64M=n/a BULK_E2E_RATIO=n/a
  local sizes=4K,64M
  local cmd=("$QBUS_BENCH" bulk --sizes "$sizes" --runs "$BULK_RUNS" --json)
  record "${cmd[@]#"$REPO/"}"
  log "qbus-bench bulk"
  if "${cmd[@]}" >"$TMP/qbus-bulk.json" 2>"$TMP/qbus-bulk.err"; then
    BULK_H4K=$(json_nums "$TMP/qbus-bulk.json" handoff_us | sed -n 1p)
    BULK_H64M=$(json_nums "$TMP/qbus-bulk.json" handoff_us | sed -n 2p)
    BULK_H_RATIO=$(calc "$BULK_H64M / $BULK_H4K")
    # end_to_end_us: region then inline, per size; the 64 MiB ones are the third and fourth.
    BULK_E2E_64M=$(json_nums "$TMP/qbus-bulk.json" end_to_end_us | sed -n 3p)
    BULK_INLINE_64M=$(json_nums "$TMP/qbus-bulk.json" end_to_end_us | sed -n 4p)
    BULK_E2E_RATIO=$(calc "$BULK_INLINE_64M / $BULK_E2E_64M")
  else
    log "qbus-bench bulk failed: $(tail -n 3 "$TMP/qbus-bulk.err")"
  fi

  REG_COLD_4K=n/a REG_WARM_64M=n/a REG_WARM_RATIO=n/a REG_COLD_ALLOC_64M=n/a REG_PLAIN_64M=n/a
  REG_COLD_RATIO=n/a REG_PACED_HITS=n/a REG_PACED_MISSES=n/a REG_PACED_WAITS=n/a
  REG_PACED_SHORT=n/a REG_SHMEM=n/a
  cmd=("$QBUS_BENCH" regions --sizes "$sizes" --runs "$REGION_RUNS" --paced 50 --interval-ms 10 --json)
  record "${cmd[@]#"$REPO/"}"
  log "qbus-bench regions"
  if "${cmd[@]}" >"$TMP/qbus-regions.json" 2>"$TMP/qbus-regions.err"; then
    REG_COLD_4K=$(json_nums "$TMP/qbus-regions.json" cold_us | sed -n 1p)
    REG_WARM_64M=$(json_nums "$TMP/qbus-regions.json" warm_us | sed -n 2p)
    REG_WARM_RATIO=$(calc "$REG_WARM_64M / $REG_COLD_4K")
    REG_COLD_ALLOC_64M=$(json_nums "$TMP/qbus-regions.json" cold_alloc_us | sed -n 2p)
    REG_PLAIN_64M=$(json_nums "$TMP/qbus-regions.json" plain_fallocate_us | sed -n 2p)
    REG_COLD_RATIO=$(calc "$REG_COLD_ALLOC_64M / $REG_PLAIN_64M")
    REG_PACED_HITS=$(json_num "$TMP/qbus-regions.json" hits)
    REG_PACED_MISSES=$(json_num "$TMP/qbus-regions.json" misses)
    REG_PACED_WAITS=$(json_num "$TMP/qbus-regions.json" waits)
    REG_PACED_SHORT=$(calc "$REG_PACED_MISSES + $REG_PACED_WAITS")
    REG_SHMEM=$(grep -o '"shmem_enabled":"[a-z_]*"' "$TMP/qbus-regions.json" | cut -d'"' -f4)
  else
    log "qbus-bench regions failed: $(tail -n 3 "$TMP/qbus-regions.err")"
  fi

  MEM_IDLE=n/a MEM_ADDED=n/a MEM_PER_MSG=n/a MEM_DRAINED=n/a
  cmd=("$QBUS_BENCH" memory --messages "$MEMORY_MESSAGES" --size "$SIZE" --json)
  record "${cmd[@]#"$REPO/"}"
  log "qbus-bench memory"
  if "${cmd[@]}" >"$TMP/qbus-memory.json" 2>"$TMP/qbus-memory.err"; then
    MEM_IDLE=$(mib "$(json_num "$TMP/qbus-memory.json" daemon_rss_idle_bytes)")
    MEM_ADDED=$(mib "$(json_num "$TMP/qbus-memory.json" queued_added_bytes)")
    MEM_PER_MSG=$(json_num "$TMP/qbus-memory.json" bytes_per_queued_message)
    MEM_DRAINED=$(mib "$(json_num "$TMP/qbus-memory.json" daemon_rss_drained_bytes)")
  else
    log "qbus-bench memory failed: $(tail -n 3 "$TMP/qbus-memory.err")"
  fi

  CONN_ADDED=n/a CONN_IDLE_CPU=n/a
  cmd=("$QBUS_BENCH" connections --connections "$IDLE_CONNECTIONS" --idle-seconds "$IDLE_SECONDS" --json)
  record "${cmd[@]#"$REPO/"}"
  log "qbus-bench connections ($IDLE_CONNECTIONS idle for ${IDLE_SECONDS}s)"
  if "${cmd[@]}" >"$TMP/qbus-connections.json" 2>"$TMP/qbus-connections.err"; then
    CONN_ADDED=$(mib "$(calc "$(json_num "$TMP/qbus-connections.json" daemon_rss_after_bytes) - $(json_num "$TMP/qbus-connections.json" daemon_rss_before_bytes)")")
    CONN_IDLE_CPU=$(json_num "$TMP/qbus-connections.json" daemon_idle_cpu_ms)
  else
    log "qbus-bench connections failed: $(tail -n 3 "$TMP/qbus-connections.err")"
  fi
}

fmt_mib() { case "$1" in n/a) echo "n/a" ;; *) awk -v x="$1" 'BEGIN { printf "%.2f MiB\n", x }' ;; esac; }
fmt_ms() { case "$1" in n/a) echo "n/a" ;; *) awk -v x="$1" 'BEGIN { printf "%.2f ms\n", x }' ;; esac; }
fmt_us_or_ms() {
  case "$1" in n/a) echo "n/a" ;; *) awk -v x="$1" 'BEGIN {
    if (x >= 1000) printf "%.2f ms\n", x / 1000; else printf "%.1f µs\n", x }' ;; esac
}

# ---- publish/subscribe (issue 15): bench/compare_pubsub.sh -----------------------------

# shellcheck source-path=SCRIPTDIR source=nats_server.sh
source "$REPO/bench/nats_server.sh"
# shellcheck source-path=SCRIPTDIR source=compare_pubsub.sh
source "$REPO/bench/compare_pubsub.sh"

# ---- (e) the table ----------------------------------------------------------------------

machine() {
  local cpu
  cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  echo "- CPUs online: $(nproc) ($(grep -c '^processor' /proc/cpuinfo) in /proc/cpuinfo)"
  echo "- CPU model: ${cpu:-unknown}"
  echo "- Kernel: $(uname -srmv)"
  local rev
  rev=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)
  # "-dirty": the working tree, uncommitted changes included, is what was measured.
  case "$rev" in
    *-dirty) echo "- qbus: git $rev (the working tree, uncommitted changes included)" ;;
    *) echo "- qbus: git $rev" ;;
  esac
  echo "- Redis: $(redis-server --version | awk '{ print $3 }' | sed 's/^v=//')"
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
}

# ratio_cell RATIO TEXT: "1.23x TEXT", or plain n/a.
ratio_cell() { case "$1" in n/a) echo "n/a" ;; *) echo "$(fmt_ratio "$1") $2" ;; esac; }

# target_verdict RATIO OP BAR: the verdict, or why there is none.
target_verdict() {
  if [ "$1" = n/a ] && [ -n "$QBUS_PHASES_NOTE" ]; then echo "n/a ($QBUS_PHASES_NOTE)"; else verdict "$@"; fi
}

row() { printf '| %s | %s | %s | %s | %s |\n' "$@"; }

# issue18_rate_rows LABEL RATE: issue 18's two bars for one way of running 1 -> 1.
issue18_rate_rows() {
  local frac
  frac=$(calc "$2 / $RELAY_RATE")
  row "producer -> queue -> consumer, $1 (issue 18)" "≥ 5,000,000 msg/s" "$(fmt_rate "$2")" \
    "$(fmt_ratio "$(calc "$2 / 5000000")")" "$(verdict "$2" '>=' 5000000)"
  row "... as a fraction of the bare relay (issue 18)" "≥ 25% of $(fmt_rate "$RELAY_RATE")" \
    "$(fmt_rate "$2")" "$(fmt_pct "$frac")" "$(verdict "$frac" '>=' 0.25)"
}

table() {
  local enq_ratio drain_ratio e2e_frac rr_ratio rr_ratio_relay rr_bp_ratio policy_ratio
  local policy_cpu_ratio
  enq_ratio=$(calc "$QBUS_ENQUEUE / $REDIS_LPUSH_P64")
  drain_ratio=$(calc "$QBUS_DRAIN_WIDE / $REDIS_RPOP_P64")
  e2e_frac=$(calc "$QBUS_RATE / $RELAY_RATE")
  rr_ratio=$(calc "$QBUS_P50 / $INRUN_RAW_P50")
  rr_ratio_relay=$(calc "$QBUS_P50 / $RAW_P50")
  rr_bp_ratio=$(calc "$QBUS_BP_P50 / $INRUN_RAW_BP_P50")
  policy_ratio=$(calc "$POLICY_RATE / $POLICY_NONE_RATE")
  policy_cpu_ratio=$(calc "$POLICY_CPU_NS / $POLICY_NONE_CPU_NS")

  echo "### Figures (64-byte payloads, median of $RUNS runs)"
  echo
  row "figure" "value" "qbus/Redis" "qbus/raw" "notes"
  row "---" "---:" "---:" "---:" "---"
  row "raw socketpair ping-pong RTT p50 / p99" "$(fmt_us "$RAW_P50") / $(fmt_us "$RAW_P99")" "" "" "relay pingpong"
  row "raw one-way batched throughput" "$(fmt_rate "$ONEWAY_RATE")" "" "" "producer -> consumer, 64 KiB writes"
  row "bare relay ceiling" "$(fmt_rate "$RELAY_RATE")" "" "" "producer -> relay -> consumer"
  row "Redis LPUSH -P 64" "$(fmt_rate "$REDIS_LPUSH_P64")" "" "" "-n $REDIS_PIPELINED_N, 50 clients"
  row "Redis RPOP -P 64" "$(fmt_rate "$REDIS_RPOP_P64")" "" "" "-n $REDIS_PIPELINED_N, 50 clients"
  row "Redis LPUSH -P 1 -c 1" "$(fmt_rate "$REDIS_LPUSH_P1")" "" "" "$(fmt_us "$(calc "1e6 / $REDIS_LPUSH_P1")") per request"
  row "Redis RPOP -P 1 -c 1" "$(fmt_rate "$REDIS_RPOP_P1")" "" "" "$(fmt_us "$(calc "1e6 / $REDIS_RPOP_P1")") per request"
  row "qbus enqueue only (1 producer)" "$(fmt_rate "$QBUS_ENQUEUE")" "$(ratio_cell "$enq_ratio" "of LPUSH -P64")" "" "${QBUS_PHASES_NOTE:-qbus-bench throughput --phase enqueue}"
  row "qbus drain only (1 consumer, window $DRAIN_WINDOW)" "$(fmt_rate "$QBUS_DRAIN_WIDE")" "$(ratio_cell "$drain_ratio" "of RPOP -P64")" "" "${QBUS_PHASES_NOTE:-qbus-bench throughput --phase drain --batch $DRAIN_WINDOW (pre-fill not timed)}"
  row "qbus drain only (1 consumer, window 256)" "$(fmt_rate "$QBUS_DRAIN")" "$(ratio_cell "$(calc "$QBUS_DRAIN / $REDIS_RPOP_P64")" "of RPOP -P64")" "" "${QBUS_PHASES_NOTE:-the default receive window}"
  row "qbus producer -> queue -> consumer" "$(fmt_rate "$QBUS_RATE")" \
    "$(fmt_ratio "$(calc "$QBUS_RATE / $REDIS_LPUSH_P64")") of LPUSH -P64" \
    "$(fmt_pct "$e2e_frac") of relay, $(fmt_pct "$(calc "$QBUS_RATE / $ONEWAY_RATE")") of one-way" \
    "1P/1C, $QBUS_THROUGHPUT_MESSAGES msgs, daemon $(awk -v x="$QBUS_CPU_NS" 'BEGIN { printf "%.0f", x }') ns CPU/msg"
  row "qbus producer -> queue -> consumer, queue bounded" "$(fmt_rate "$QBUS_BOUNDED_RATE")" \
    "$(fmt_ratio "$(calc "$QBUS_BOUNDED_RATE / $REDIS_LPUSH_P64")") of LPUSH -P64" \
    "$(fmt_pct "$(calc "$QBUS_BOUNDED_RATE / $RELAY_RATE")") of relay" \
    "the same with --queue-bytes $BOUNDED_QUEUE_BYTES (producers block there); daemon $(fmt_ns "$QBUS_BOUNDED_CPU_NS") CPU/msg"
  row "qbus producer -> queue -> consumer, push" "$(fmt_rate "$QBUS_PUSH_RATE")" \
    "$(fmt_ratio "$(calc "$QBUS_PUSH_RATE / $REDIS_LPUSH_P64")") of LPUSH -P64" \
    "$(fmt_pct "$(calc "$QBUS_PUSH_RATE / $RELAY_RATE")") of relay" \
    "the consumer on an at-most-once subscription (--push, next_each of 256); daemon $(fmt_ns "$QBUS_PUSH_CPU_NS") CPU/msg"
  row "qbus producer -> queue -> consumer, push, queue bounded" "$(fmt_rate "$QBUS_PUSH_BOUNDED_RATE")" \
    "$(fmt_ratio "$(calc "$QBUS_PUSH_BOUNDED_RATE / $REDIS_LPUSH_P64")") of LPUSH -P64" \
    "$(fmt_pct "$(calc "$QBUS_PUSH_BOUNDED_RATE / $RELAY_RATE")") of relay" \
    "--push --queue-bytes $BOUNDED_QUEUE_BYTES; daemon $(fmt_ns "$QBUS_PUSH_BOUNDED_CPU_NS") CPU/msg"
  row "qbus 4 producers -> one queue -> 4 consumers" "$(fmt_rate "$QBUS_4X4_RATE")" \
    "$(fmt_ratio "$(calc "$QBUS_4X4_RATE / $REDIS_LPUSH_P64")") of LPUSH -P64" \
    "$(fmt_pct "$(calc "$QBUS_4X4_RATE / $RELAY_RATE")") of relay" \
    "4P/4C, $QBUS_THROUGHPUT_MESSAGES msgs in all; daemon $(fmt_ns "$QBUS_4X4_CPU_NS") CPU/msg"
  row "qbus producer -> queue -> consumer, no policy" "$(fmt_rate "$POLICY_NONE_RATE")" "" "" \
    "alternated run by run with the next row; daemon $(fmt_ns "$POLICY_NONE_CPU_NS") CPU/msg"
  row "qbus producer -> queue -> consumer, $(fmt_count "$POLICY_RULES")-rule policy" "$(fmt_rate "$POLICY_RATE")" "" "" \
    "$(fmt_pct "$policy_ratio") of no policy; daemon $(fmt_ns "$POLICY_CPU_NS") CPU/msg ($(fmt_ratio "$policy_cpu_ratio"))"
  row "Redis Streams XADD / XREADGROUP / XACK" "$(fmt_rate "$STREAMS_RATE")" "" "" \
    "1P/1C, $QBUS_THROUGHPUT_MESSAGES msgs, XADD -P 64, COUNT $STREAMS_COUNT, XACK per batch (redis-streams)"
  row "qbus producer -> queue -> consumer, plain (ack runs)" "$(fmt_rate "$ACK_PLAIN_RATE")" "" "" \
    "alternated run by run with the next two rows; daemon $(fmt_ns "$ACK_PLAIN_CPU_NS") CPU/msg"
  row "qbus ... --ack (ack_up_to per batch)" "$(fmt_rate "$ACK_RATE")" \
    "$(ratio_cell "$(calc "$ACK_RATE / $STREAMS_RATE")" "of Streams")" "" \
    "$(fmt_pct "$(calc "$ACK_RATE / $ACK_PLAIN_RATE")") of plain; daemon $(fmt_ns "$ACK_CPU_NS") CPU/msg"
  row "qbus ... --subscribe $SUBSCRIBE_PREFETCH" "$(fmt_rate "$SUB_RATE")" \
    "$(ratio_cell "$(calc "$SUB_RATE / $STREAMS_RATE")" "of Streams")" "" \
    "$(fmt_pct "$(calc "$SUB_RATE / $ACK_PLAIN_RATE")") of plain; ack_up_to every $((SUBSCRIBE_PREFETCH / 4)); daemon $(fmt_ns "$SUB_CPU_NS") CPU/msg"
  row "qbus redelivery after SIGKILL p50 / p99" "$(fmt_us_or_ms "$REDELIVERY_P50") / $(fmt_us_or_ms "$REDELIVERY_P99")" "" "" \
    "kill() of a consumer holding one message (ack mode) until a waiting consumer has it; $REDELIVERY_ROUNDS rounds (qbus-bench redelivery)"
  row "Redis LPUSH + BLPOP request/reply p50 / p99" "$(fmt_us "$REDIS_RR_P50") / $(fmt_us "$REDIS_RR_P99")" "" "" \
    "p99.9 $(fmt_us "$REDIS_RR_P999"); 1 requester, 1 responder, one request outstanding, $(fmt_count "$QBUS_LATENCY_REQUESTS") requests (redis-rr)"
  row "qbus request/reply p50 / p99" "$(fmt_us "$QBUS_P50") / $(fmt_us "$QBUS_P99")" \
    "$(fmt_ratio "$(calc "$QBUS_P50 / $REDIS_RR_P50")") / $(fmt_ratio "$(calc "$QBUS_P99 / $REDIS_RR_P99")") of LPUSH+BLPOP p50 / p99" \
    "$(fmt_ratio "$rr_ratio") of in-run raw, $(fmt_ratio "$rr_ratio_relay") of relay raw" \
    "p99.9 $(fmt_us "$QBUS_P999"); in-run raw p50 $(fmt_us "$INRUN_RAW_P50"); p50 $(fmt_ratio "$(calc "$QBUS_P50 / (1e6 / $REDIS_LPUSH_P1)")") of LPUSH -P1 time (qbus-bench latency)"
  row "qbus request/reply, busy_poll_us $BUSY_POLL_US, p50 / p99" "$(fmt_us "$QBUS_BP_P50") / $(fmt_us "$QBUS_BP_P99")" \
    "$(fmt_ratio "$(calc "$QBUS_BP_P50 / $REDIS_RR_P50")") / $(fmt_ratio "$(calc "$QBUS_BP_P99 / $REDIS_RR_P99")") of LPUSH+BLPOP p50 / p99" \
    "$(fmt_ratio "$rr_bp_ratio") of in-run raw" \
    "p99.9 $(fmt_us "$QBUS_BP_P999"); in-run raw p50 $(fmt_us "$INRUN_RAW_BP_P50"); qbusd polls $BUSY_POLL_US µs before it sleeps (qbus-bench latency --busy-poll-us)"
  row "qbus region hand-over 4 KiB / 64 MiB" "$(fmt_us_or_ms "$BULK_H4K") / $(fmt_us_or_ms "$BULK_H64M")" "" "" \
    "send() until the receiver holds the mapping (qbus-bench bulk)"
  row "qbus 4 KiB cold / 64 MiB warm-pool allocate + hand-over" "$(fmt_us_or_ms "$REG_COLD_4K") / $(fmt_us_or_ms "$REG_WARM_64M")" "" "" \
    "allocate_region() + send() until the receiver holds it, fill not timed; shmem_enabled $REG_SHMEM (qbus-bench regions)"
  row "qbus 64 MiB cold allocate_region / plain memfd+fallocate" "$(fmt_us_or_ms "$REG_COLD_ALLOC_64M") / $(fmt_us_or_ms "$REG_PLAIN_64M")" "" "" \
    "the cold one allocates and zeroes every page; plain leaves zeroing to the first write"
  row "qbus 64 MiB end to end: region / inline" "$(fmt_us_or_ms "$BULK_E2E_64M") / $(fmt_us_or_ms "$BULK_INLINE_64M")" "" "" \
    "until the receiver has read every byte; inline to a TCP receiver"
  row "qbusd RSS idle / +1M queued / drained" "$(fmt_mib "$MEM_IDLE") / +$(fmt_mib "$MEM_ADDED") / $(fmt_mib "$MEM_DRAINED")" "" "" \
    "$MEMORY_MESSAGES x $SIZE B, $(awk -v x="$MEM_PER_MSG" 'BEGIN { printf "%.0f", x }') B per queued message (qbus-bench memory)"
  row "qbusd with $IDLE_CONNECTIONS idle connections" "+$(fmt_mib "$CONN_ADDED"), $(fmt_ms "$CONN_IDLE_CPU") CPU in ${IDLE_SECONDS}s" "" "" "qbus-bench connections"
  echo
  echo "### Targets (issue 6; the policy's, issue 12; the second performance round, issue 18)"
  echo
  row "target" "bar" "measured" "ratio" "result"
  row "---" "---" "---:" "---:" "---"
  row "enqueue, 64 B, 1 producer, pipelined" "≥ 2x Redis LPUSH -P64 ($(fmt_rate "$(calc "2 * $REDIS_LPUSH_P64")"))" \
    "$(fmt_rate "$QBUS_ENQUEUE")" "$(fmt_ratio "$enq_ratio")" "$(target_verdict "$enq_ratio" '>=' 2)"
  row "drain, 64 B, 1 consumer (window $DRAIN_WINDOW)" "≥ 2x Redis RPOP -P64 ($(fmt_rate "$(calc "2 * $REDIS_RPOP_P64")"))" \
    "$(fmt_rate "$QBUS_DRAIN_WIDE")" "$(fmt_ratio "$drain_ratio")" "$(target_verdict "$drain_ratio" '>=' 2)"
  row "producer -> queue -> consumer" "≥ 2,000,000 msg/s" "$(fmt_rate "$QBUS_RATE")" \
    "$(fmt_ratio "$(calc "$QBUS_RATE / 2000000")")" "$(verdict "$QBUS_RATE" '>=' 2000000)"
  row "... as a fraction of the bare relay" "aim ≥ 25% of $(fmt_rate "$RELAY_RATE")" "$(fmt_rate "$QBUS_RATE")" \
    "$(fmt_pct "$e2e_frac")" "$(verdict "$e2e_frac" '>=' 0.25) (aim)"
  issue18_rate_rows "queue bounded" "$QBUS_BOUNDED_RATE"
  issue18_rate_rows "push" "$QBUS_PUSH_RATE"
  issue18_rate_rows "push, queue bounded" "$QBUS_PUSH_BOUNDED_RATE"
  row "4 producers -> one queue -> 4 consumers (issue 18)" "≥ the 1-to-1 figure ($(fmt_rate "$QBUS_RATE"))" \
    "$(fmt_rate "$QBUS_4X4_RATE")" "$(fmt_ratio "$(calc "$QBUS_4X4_RATE / $QBUS_RATE")")" \
    "$(verdict "$(calc "$QBUS_4X4_RATE / $QBUS_RATE")" '>=' 1)"
  row "request/reply p50" "≤ 2.4x raw RTT p50 ($(fmt_us "$INRUN_RAW_P50") in-run)" "$(fmt_us "$QBUS_P50")" \
    "$(fmt_ratio "$rr_ratio")" "$(verdict "$rr_ratio" '<=' 2.4)"
  row "... against compare.sh's own raw RTT" "≤ 2.4x $(fmt_us "$RAW_P50")" "$(fmt_us "$QBUS_P50")" \
    "$(fmt_ratio "$rr_ratio_relay")" "$(verdict "$rr_ratio_relay" '<=' 2.4) (informative)"
  row "request/reply p50 (issue 18)" "≤ 1.5x in-run raw RTT p50" "$(fmt_us "$QBUS_P50")" \
    "$(fmt_ratio "$rr_ratio")" "$(verdict "$rr_ratio" '<=' 1.5)"
  row "... with busy_poll_us $BUSY_POLL_US (issue 18)" "≤ 1.5x in-run raw RTT p50 ($(fmt_us "$INRUN_RAW_BP_P50"))" \
    "$(fmt_us "$QBUS_BP_P50")" "$(fmt_ratio "$rr_bp_ratio")" "$(verdict "$rr_bp_ratio" '<=' 1.5)"
  row "request/reply p99 (issue 18)" "≤ Redis LPUSH+BLPOP p99 ($(fmt_us "$REDIS_RR_P99"))" "$(fmt_us "$QBUS_P99")" \
    "$(fmt_ratio "$(calc "$QBUS_P99 / $REDIS_RR_P99")")" "$(verdict "$(calc "$QBUS_P99 / $REDIS_RR_P99")" '<=' 1)"
  row "bulk: 64 MiB region hand-over" "≤ 2x the 4 KiB one ($(fmt_us_or_ms "$BULK_H4K"))" "$(fmt_us_or_ms "$BULK_H64M")" \
    "$(fmt_ratio "$BULK_H_RATIO")" "$(verdict "$BULK_H_RATIO" '<=' 2)"
  row "bulk: 64 MiB end to end, region vs inline" "≥ 5x faster" "$(fmt_us_or_ms "$BULK_E2E_64M")" \
    "$(fmt_ratio "$BULK_E2E_RATIO")" "$(verdict "$BULK_E2E_RATIO" '>=' 5)"
  row "bulk: 64 MiB allocate + hand-over, pool warm (issue 18)" "≤ 2x 4 KiB cold ($(fmt_us_or_ms "$REG_COLD_4K"))" "$(fmt_us_or_ms "$REG_WARM_64M")" \
    "$(fmt_ratio "$REG_WARM_RATIO")" "$(verdict "$REG_WARM_RATIO" '<=' 2)"
  row "bulk: 64 MiB cold allocation (issue 18)" "≤ plain memfd+fallocate ($(fmt_us_or_ms "$REG_PLAIN_64M"))" "$(fmt_us_or_ms "$REG_COLD_ALLOC_64M")" \
    "$(fmt_ratio "$REG_COLD_RATIO")" "$(verdict "$REG_COLD_RATIO" '<=' 1)"
  row "bulk: pool warm at one 64 MiB region per 10 ms (issue 18)" "every allocation after the first ready in the pool" \
    "$REG_PACED_HITS ready, $REG_PACED_WAITS waited, $REG_PACED_MISSES missed" "" "$(verdict "$REG_PACED_SHORT" '<=' 1)"
  row "$(fmt_count "$POLICY_RULES")-rule policy (issue 12)" "within 5% of no policy (≥ 95%)" "$(fmt_rate "$POLICY_RATE")" \
    "$(fmt_pct "$policy_ratio")" "$(verdict "$policy_ratio" '>=' 0.95)"
  row "memory: idle daemon RSS" "≤ 8 MiB" "$(fmt_mib "$MEM_IDLE")" "" "$(verdict "$MEM_IDLE" '<=' 8)"
  row "memory: 1,000,000 queued 64 B messages" "≤ 128 MiB added" "$(fmt_mib "$MEM_ADDED")" "" \
    "$(verdict "$MEM_ADDED" '<=' 128)"
  row "memory: $IDLE_CONNECTIONS idle connections" "≤ 100 MiB added" "$(fmt_mib "$CONN_ADDED")" "" \
    "$(verdict "$CONN_ADDED" '<=' 100)"
  row "idle CPU (connections open)" "< 10 ms in ${IDLE_SECONDS} s" "$(fmt_ms "$CONN_IDLE_CPU")" "" \
    "$(verdict "$CONN_IDLE_CPU" '<' 10)"
  echo
  echo "### Acknowledgement mode (issue 13: acked at least 3x Redis Streams and at least 70% of plain)"
  echo
  printf '| %s | %s | %s |\n' "ratio" "--ack" "--subscribe $SUBSCRIBE_PREFETCH"
  printf '| %s | %s | %s |\n' "---" "---:" "---:"
  printf '| %s | %s | %s |\n' "qbus acked / Redis Streams XADD+XREADGROUP+XACK" \
    "$(fmt_ratio "$(calc "$ACK_RATE / $STREAMS_RATE")")" "$(fmt_ratio "$(calc "$SUB_RATE / $STREAMS_RATE")")"
  printf '| %s | %s | %s |\n' "qbus acked / qbus plain (alternated runs)" \
    "$(fmt_ratio "$(calc "$ACK_RATE / $ACK_PLAIN_RATE")")" "$(fmt_ratio "$(calc "$SUB_RATE / $ACK_PLAIN_RATE")")"
  echo
  durable_table
  echo
  pubsub_table
}

# dur KEY, dur_spread KEY, dur_cpu KEY: a durable figure ("always_64", ...), or n/a.
dur() { echo "${DURABLE[$1]:-n/a}"; }
dur_spread() { echo "${DURABLE_SPREAD[$1]:-n/a}"; }
dur_cpu() { echo "${DURABLE_CPU[$1]:-n/a}"; }

durable_table() {
  echo "### Durable queues (issue 14: confirmed sends ≥ 2x Redis with an AOF)"
  echo
  echo "Measured $(date -u '+%Y-%m-%d') in this run. Confirmed sends of $SIZE B to one queue from"
  echo "$DURABLE_CLIENTS producers: qbus-bench throughput --phase enqueue --producers $DURABLE_CLIENTS"
  echo "--confirm W (each producer writes W sends, the last one confirmed, and counts them when that"
  echo "OK is back) on a queue declared durable with the fsync policy shown; redis-benchmark LPUSH"
  echo "-c $DURABLE_CLIENTS -P W (each client writes W LPUSHes and waits for their W replies) on a"
  echo "redis-server with appendonly yes. Each run is a fresh daemon or redis-server, every variant"
  echo "once per round; journal and AOF in $DISK_BASE ($(findmnt -n -o FSTYPE -T "$DISK_BASE" 2>/dev/null ||
    stat -f -c %T "$DISK_BASE"))."
  echo "Median of $RUNS runs, with the spread (min–max) of the runs."
  echo
  row "figure" "value" "qbus/Redis" "spread" "notes"
  row "---" "---:" "---:" "---:" "---"
  local w n
  for w in $DURABLE_WINDOWS; do
    n=${DURABLE_MESSAGES[$w]}
    row "Redis appendfsync always, -P $w" "$(fmt_rate "$(dur "redis_always_$w")")" "" \
      "$(dur_spread "redis_always_$w")" "-c $DURABLE_CLIENTS -n $n: the reply after the AOF's fsync; an AOF rewrite in ${REDIS_REWRITES[redis_always_$w]:-0} of $RUNS runs"
    row "qbus durable, fsync always, window $w" "$(fmt_rate "$(dur "always_$w")")" \
      "$(ratio_cell "$(calc "$(dur "always_$w") / $(dur "redis_always_$w")")" "of always")" \
      "$(dur_spread "always_$w")" "OK after fdatasync (group commit); daemon $(fmt_ns "$(dur_cpu "always_$w")") CPU/msg"
    row "Redis appendfsync everysec, -P $w" "$(fmt_rate "$(dur "redis_everysec_$w")")" "" \
      "$(dur_spread "redis_everysec_$w")" "the reply once written to the AOF (page cache); fsync every second; an AOF rewrite in ${REDIS_REWRITES[redis_everysec_$w]:-0} of $RUNS runs"
    row "qbus durable, fsync batch, window $w" "$(fmt_rate "$(dur "batch_$w")")" \
      "$(ratio_cell "$(calc "$(dur "batch_$w") / $(dur "redis_everysec_$w")")" "of everysec")" \
      "$(dur_spread "batch_$w")" "OK after the next periodic fsync (storage.batch_ms 10): at most $((DURABLE_CLIENTS * w)) in flight per 10 ms, $(fmt_rate "$((DURABLE_CLIENTS * w * 100))"); daemon $(fmt_ns "$(dur_cpu "batch_$w")") CPU/msg"
    row "qbus durable, fsync none, window $w" "$(fmt_rate "$(dur "none_$w")")" \
      "$(ratio_cell "$(calc "$(dur "none_$w") / $(dur "redis_everysec_$w")")" "of everysec")" \
      "$(dur_spread "none_$w")" "OK once written to the journal (page cache), as everysec's; daemon $(fmt_ns "$(dur_cpu "none_$w")") CPU/msg"
    row "qbus not durable, confirmed, window $w" "$(fmt_rate "$(dur "off_$w")")" "" \
      "$(dur_spread "off_$w")" "the same sends to a plain queue; durable always / batch: $(fmt_pct "$(calc "$(dur "always_$w") / $(dur "off_$w")")") / $(fmt_pct "$(calc "$(dur "batch_$w") / $(dur "off_$w")")") of it; daemon $(fmt_ns "$(dur_cpu "off_$w")") CPU/msg"
  done
  row "qbus recovery of $(fmt_count "$RECOVERY_MESSAGES") queued $SIZE B messages" \
    "$(fmt_us_or_ms "$(calc "1000 * $RECOVERY_READY")") to READY" "" "${RECOVERY_RUNS:+runs $RECOVERY_RUNS ms}" \
    "qbusd SIGKILLed, started on its state dir: start -> READY=1; first handshake $(fmt_us_or_ms "$(calc "1000 * $RECOVERY_ACCEPT")"); qbusd's replay (recovery.milliseconds) $(fmt_us_or_ms "$(calc "1000 * $RECOVERY_REPLAY")"); an empty start $(fmt_us_or_ms "$(calc "1000 * $RECOVERY_EMPTY")")"
  row "qbus journal of those messages on disk" "$(fmt_mib "$(mib "$RECOVERY_BYTES")")" "" "" \
    "$(awk -v b="$RECOVERY_BYTES" -v n="$RECOVERY_MESSAGES" 'BEGIN { if (b == "n/a") print "n/a"; else printf "%.0f", b / n }') B per message; qbusd RSS $(fmt_mib "$(mib "$RECOVERY_RSS_BEFORE")") before the kill, $(fmt_mib "$(mib "$RECOVERY_RSS")") once recovered"
  echo
  echo "Redis ran with its default auto-aof-rewrite (at 64 MB of AOF), qbus with its default"
  echo "storage settings (segments of 64 MiB, batch_ms 10). Commands (SOCKET: each run's"
  echo "redis-server, DISK: the directory above):"
  echo
  echo '```sh'
  printf '%s\n' "${DURABLE_COMMANDS[@]}"
  echo '```'
  echo
  row "target" "bar" "measured" "ratio" "result"
  row "---" "---" "---:" "---:" "---"
  for w in $DURABLE_WINDOWS; do
    local note=""
    [ "$w" = 1 ] && note=" (informative: one send in flight per producer)"
    row "durable always, window $w$note" "≥ 2x Redis appendfsync always ($(fmt_rate "$(calc "2 * $(dur "redis_always_$w")")"))" \
      "$(fmt_rate "$(dur "always_$w")")" "$(fmt_ratio "$(calc "$(dur "always_$w") / $(dur "redis_always_$w")")")" \
      "$(verdict "$(calc "$(dur "always_$w") / $(dur "redis_always_$w")")" '>=' 2)"
    row "durable batch, window $w$note" "≥ 2x Redis appendfsync everysec ($(fmt_rate "$(calc "2 * $(dur "redis_everysec_$w")")"))" \
      "$(fmt_rate "$(dur "batch_$w")")" "$(fmt_ratio "$(calc "$(dur "batch_$w") / $(dur "redis_everysec_$w")")")" \
      "$(verdict "$(calc "$(dur "batch_$w") / $(dur "redis_everysec_$w")")" '>=' 2)"
  done
}

write_results() {
  [ ! -f "$RESULTS" ] || sed -n '/^## qbus-bridge (bench\/bridge.sh)/,$p' "$RESULTS" >"$TMP/bridge-section.md"
  {
    echo "# qbus benchmark results"
    echo
    echo "Latest run of \`bench/compare.sh\` (issue 6). Every figure was measured in the same run on"
    echo "the same machine; each is the median of $RUNS runs. Regenerate with the command below."
    echo
    echo "Command: \`$COMMAND_LINE\` (runtime ${ELAPSED}s)"
    echo
    echo "## Machine"
    echo
    cat "$TMP/machine.md"
    echo
    echo "## Results"
    echo
    cat "$TMP/table.md"
    echo
    echo "## Commands run"
    echo
    echo "Redis ran as \`redis-server --port 0 --unixsocket SOCKET --save '' --appendonly no\` in a"
    echo "temporary directory; SOCKET below is that socket. The list is flushed before each run."
    echo "For the durable rows each run had a fresh \`redis-server --port 0 --unixsocket SOCKET"
    echo "--save '' --appendonly yes --appendfsync always|everysec --dir DIR\`, DIR on the disk beside"
    echo "qbus's state directories (DISK below)."
    echo
    echo '```sh'
    local c
    for c in "${COMMANDS[@]}"; do
      c=${c//$REDIS_SOCK/SOCKET}
      echo "${c//$DISK/DISK}"
    done
    echo '```'
    # bench/bridge.sh's section is kept as it was: this script does not measure the bridge.
    [ ! -s "$TMP/bridge-section.md" ] || { echo; cat "$TMP/bridge-section.md"; }
  } >"$RESULTS"
}

main() {
  local start=$SECONDS
  install_deps
  if [ "$BUILD_FIRST" = 1 ]; then
    build
  elif [ ! -x "$QBUS_BENCH" ] || [ ! -x "$RELAY" ] || [ ! -x "$REDIS_RR" ] || [ ! -x "$REDIS_PUBSUB" ] ||
    [ ! -x "$NATS_PUBSUB" ]; then
    log "--no-build, but $QBUS_BENCH, $RELAY, $REDIS_RR, $REDIS_PUBSUB or $NATS_PUBSUB is missing"
    exit 1
  fi
  start_redis
  log "redis-benchmark (Unix socket $REDIS_SOCK)"
  redis_run P64 -n "$REDIS_PIPELINED_N" -P 64
  redis_run P1 -n "$REDIS_UNPIPELINED_N" -P 1 -c 1
  run_redis_streams
  run_redis_rr
  # Redis is done: stop it so it cannot steal CPU from the runs that follow.
  kill "$REDIS_PID" 2>/dev/null || true
  wait "$REDIS_PID" 2>/dev/null || true
  REDIS_PID=""
  run_relay
  run_qbus
  run_policy
  run_ack
  run_qbus_resources
  run_durable
  run_pubsub
  ELAPSED=$((SECONDS - start))

  table >"$TMP/table.md"
  # Once, before RESULTS.md is rewritten: git describe would call the tree dirty then.
  machine >"$TMP/machine.md"
  echo
  echo "## Machine"
  cat "$TMP/machine.md"
  echo
  cat "$TMP/table.md"
  echo
  echo "command: $COMMAND_LINE (runtime ${ELAPSED}s)"
  if [ "$WRITE_RESULTS" = 1 ]; then
    write_results
    log "wrote ${RESULTS#"$REPO/"}"
  fi
}

# On one line so that bash, which reads a script as it runs, never reads past it if the
# file is edited during a run.
main; exit
