# shellcheck shell=bash
# bench/compare_pubsub.sh: the publish/subscribe part of bench/compare.sh (issue 15),
# sourced by it after its helpers (log, record, median, calc, json_num, fmt_*, verdict, row,
# start_redis, REDIS_PID, TMP, RUNS, the binaries' paths) are defined. Not run on its own.
#
# - fan-out, 1 publisher -> FANOUT_SUBSCRIBERS subscribers, 64 B: qbus-bench fanout,
#   redis-pubsub (PUBLISH/PSUBSCRIBE) and nats-pubsub (a private nats-server), alternated
#   run by run, all three measured by bench/fanout_harness.hpp;
# - the matching cost: qbus-bench fanout to 1 subscriber with IDLE_SUBSCRIPTIONS
#   subscriptions that never match and with none, alternated run by run;
# - the zero-copy fan-out: qbus-bench fanout --region REGION_SIZE to REGION_SUBSCRIBERS
#   beside the same region handed over to one (the tool alternates the two itself).

FANOUT_SUBSCRIBERS=8
FANOUT_MESSAGES=500000
MATCH_MESSAGES=2000000
IDLE_SUBSCRIPTIONS=10000
REGION_SIZE=64M
REGION_SUBSCRIBERS=4
REGION_RUNS=5
NATS_PID=""
NATS_URL=""

# A private nats-server on a random loopback port (it has no Unix socket). Slow consumers
# are not cut off early (max_pending 1 GiB, write_deadline 60 s), as Redis's pub/sub buffer
# limit is lifted and qbus's subscriptions block: every system must deliver everything.
start_nats() {
  cat >"$TMP/nats.conf" <<'EOF'
listen: "127.0.0.1:-1"
max_pending: 1073741824
write_deadline: "60s"
EOF
  launch_nats_server "$TMP/nats.conf" "$TMP"
}

stop_nats() {
  [ -n "$NATS_PID" ] || return 0
  kill "$NATS_PID" 2>/dev/null || true
  wait "$NATS_PID" 2>/dev/null || true
  NATS_PID=""
}

# fanout_runs: RUNS runs each of qbus (subscribers on next_each, and on next), Redis and
# NATS, alternated; sets FANOUT_QBUS, FANOUT_QBUS_NEXT, FANOUT_REDIS, FANOUT_NATS (median
# deliveries/s) and FANOUT_QBUS_CPU_NS.
fanout_runs() {
  local common=(--subscribers "$FANOUT_SUBSCRIBERS" --messages "$FANOUT_MESSAGES" --size "$SIZE"
    --runs 1 --json)
  local qcmd=("$QBUS_BENCH" fanout "${common[@]}")
  local qnext=("$QBUS_BENCH" fanout "${common[@]}" --receive next)
  local rcmd=("$REDIS_PUBSUB" --socket "$REDIS_SOCK" "${common[@]}")
  local ncmd=("$NATS_PUBSUB" --url "$NATS_URL" "${common[@]}")
  record "${qcmd[@]#"$REPO/"}"
  record "${qnext[@]#"$REPO/"}"
  record "${rcmd[@]#"$REPO/"}"
  record "${ncmd[@]#"$REPO/"}" "# URL: a private nats-server, max_pending 1 GiB"
  local q=() qn=() r=() n=() cpu=() i
  for i in $(seq "$RUNS"); do
    "${qcmd[@]}" >"$TMP/fanout-qbus.json"
    q+=("$(json_num "$TMP/fanout-qbus.json" deliveries_per_second)")
    cpu+=("$(json_num "$TMP/fanout-qbus.json" daemon_cpu_ns_per_delivery)")
    "${qnext[@]}" >"$TMP/fanout-qbus-next.json"
    qn+=("$(json_num "$TMP/fanout-qbus-next.json" deliveries_per_second)")
    "${rcmd[@]}" >"$TMP/fanout-redis.json"
    r+=("$(json_num "$TMP/fanout-redis.json" deliveries_per_second)")
    "${ncmd[@]}" >"$TMP/fanout-nats.json"
    n+=("$(json_num "$TMP/fanout-nats.json" deliveries_per_second)")
    log "fan-out run $i: qbus ${q[-1]} (next: ${qn[-1]}), redis ${r[-1]}, nats ${n[-1]} deliveries/s"
  done
  FANOUT_QBUS=$(median "${q[@]}")
  FANOUT_QBUS_NEXT=$(median "${qn[@]}")
  FANOUT_REDIS=$(median "${r[@]}")
  FANOUT_NATS=$(median "${n[@]}")
  FANOUT_QBUS_CPU_NS=$(median "${cpu[@]}")
}

# match_runs: 1 subscriber, with and without IDLE_SUBSCRIPTIONS that never match; sets
# MATCH_NONE and MATCH_IDLE (median publishes/s).
match_runs() {
  local base=("$QBUS_BENCH" fanout --subscribers 1 --messages "$MATCH_MESSAGES" --size "$SIZE"
    --runs 1 --json)
  record "${base[@]#"$REPO/"}" --idle-subscriptions 0
  record "${base[@]#"$REPO/"}" --idle-subscriptions "$IDLE_SUBSCRIPTIONS"
  local none=() idle=() i
  for i in $(seq "$RUNS"); do
    "${base[@]}" --idle-subscriptions 0 >"$TMP/match-none.json"
    none+=("$(json_num "$TMP/match-none.json" publishes_per_second)")
    "${base[@]}" --idle-subscriptions "$IDLE_SUBSCRIPTIONS" >"$TMP/match-idle.json"
    idle+=("$(json_num "$TMP/match-idle.json" publishes_per_second)")
    log "matching run $i: ${none[-1]} publishes/s with no other subscription, ${idle[-1]} with $IDLE_SUBSCRIPTIONS"
  done
  MATCH_NONE=$(median "${none[@]}")
  MATCH_IDLE=$(median "${idle[@]}")
}

# region_run: sets REGION_* from one qbus-bench fanout --region (it alternates the paths).
region_run() {
  local cmd=("$QBUS_BENCH" fanout --region "$REGION_SIZE" --subscribers "$REGION_SUBSCRIBERS"
    --runs "$REGION_RUNS" --json)
  record "${cmd[@]#"$REPO/"}"
  "${cmd[@]}" >"$TMP/region-fanout.json"
  REGION_ONE_US=$(json_num "$TMP/region-fanout.json" handover_handoff_us)
  REGION_FAN_US=$(json_num "$TMP/region-fanout.json" fanout_handoff_us)
  REGION_ONE_READ_US=$(json_num "$TMP/region-fanout.json" handover_read_us)
  REGION_FAN_READ_US=$(json_num "$TMP/region-fanout.json" fanout_read_us)
  REGION_RATIO=$(json_num "$TMP/region-fanout.json" ratio_handoff)
  REGION_READ_RATIO=$(json_num "$TMP/region-fanout.json" ratio_read)
  log "region fan-out: hand-over ${REGION_ONE_US} us, fan-out to $REGION_SUBSCRIBERS ${REGION_FAN_US} us"
}

run_pubsub() {
  log "publish/subscribe: fan-out 1 -> $FANOUT_SUBSCRIBERS against Redis and NATS"
  start_redis
  start_nats
  fanout_runs
  stop_nats
  kill "$REDIS_PID" 2>/dev/null || true
  wait "$REDIS_PID" 2>/dev/null || true
  REDIS_PID=""
  log "publish/subscribe: the matching cost, $IDLE_SUBSCRIPTIONS subscriptions that never match"
  match_runs
  log "publish/subscribe: a $REGION_SIZE region fanned out to $REGION_SUBSCRIBERS"
  region_run
}

pubsub_table() {
  local vs_redis vs_nats match
  vs_redis=$(calc "$FANOUT_QBUS / $FANOUT_REDIS")
  vs_nats=$(calc "$FANOUT_QBUS / $FANOUT_NATS")
  match=$(calc "$MATCH_IDLE / $MATCH_NONE")
  echo "### Publish/subscribe (issue 15; $SIZE-byte payloads, median of $RUNS runs)"
  echo
  row "figure" "value" "qbus/Redis" "qbus/NATS" "notes"
  row "---" "---:" "---:" "---:" "---"
  row "qbus fan-out 1 -> $FANOUT_SUBSCRIBERS" "$(fmt_rate "$FANOUT_QBUS" | sed 's/msg/deliveries/')" \
    "$(fmt_ratio "$vs_redis")" "$(fmt_ratio "$vs_nats")" \
    "$FANOUT_MESSAGES publishes to bench.fan, subscriptions to bench.* (slow: block) read with next_each; daemon $(fmt_ns "$FANOUT_QBUS_CPU_NS") CPU/delivery"
  row "qbus fan-out 1 -> $FANOUT_SUBSCRIBERS, subscribers on next()" "$(fmt_rate "$FANOUT_QBUS_NEXT" | sed 's/msg/deliveries/')" \
    "$(fmt_ratio "$(calc "$FANOUT_QBUS_NEXT / $FANOUT_REDIS")")" "$(fmt_ratio "$(calc "$FANOUT_QBUS_NEXT / $FANOUT_NATS")")" \
    "a Message per delivery (--receive next); next_each is $(fmt_ratio "$(calc "$FANOUT_QBUS / $FANOUT_QBUS_NEXT")") of it"
  row "Redis PUBLISH / PSUBSCRIBE 1 -> $FANOUT_SUBSCRIBERS" "$(fmt_rate "$FANOUT_REDIS" | sed 's/msg/deliveries/')" "" "" \
    "redis-pubsub: PUBLISH pipelined 64 deep, Unix socket, pub/sub buffer limit lifted"
  row "NATS publish / subscribe 1 -> $FANOUT_SUBSCRIBERS" "$(fmt_rate "$FANOUT_NATS" | sed 's/msg/deliveries/')" "" "" \
    "nats-pubsub (libnats $(pkg-config --modversion libnats 2>/dev/null || echo '?')), nats-server $(nats-server --version 2>/dev/null | awk '{ print $NF }'), loopback TCP"
  row "qbus publishes, 1 subscriber, no other subscription" "$(fmt_rate "$MATCH_NONE")" "" "" "alternated run by run with the next row"
  row "qbus publishes, 1 subscriber, $(fmt_count "$IDLE_SUBSCRIPTIONS") that never match" "$(fmt_rate "$MATCH_IDLE")" "" "" \
    "$(fmt_pct "$match") of none; exact, \`*\` and \`>\` patterns in 10 connections"
  row "qbus $REGION_SIZE region: hand-over to 1 / fan-out to $REGION_SUBSCRIBERS" \
    "$(fmt_us_or_ms "$REGION_ONE_US") / $(fmt_us_or_ms "$REGION_FAN_US")" "" "" \
    "until the last receiver holds the mapping; read every byte: $(fmt_us_or_ms "$REGION_ONE_READ_US") / $(fmt_us_or_ms "$REGION_FAN_READ_US") ($(fmt_ratio "$REGION_READ_RATIO"))"
  echo
  row "target" "bar" "measured" "ratio" "result"
  row "---" "---" "---:" "---:" "---"
  row "fan-out 1 -> $FANOUT_SUBSCRIBERS, 64 B, against Redis" "≥ 2x Redis PUBLISH/PSUBSCRIBE" \
    "$(fmt_rate "$FANOUT_QBUS" | sed 's/msg/deliveries/')" "$(fmt_ratio "$vs_redis")" "$(verdict "$vs_redis" '>=' 2)"
  row "fan-out 1 -> $FANOUT_SUBSCRIBERS, 64 B, against NATS" "≥ NATS" \
    "$(fmt_rate "$FANOUT_QBUS" | sed 's/msg/deliveries/')" "$(fmt_ratio "$vs_nats")" "$(verdict "$vs_nats" '>=' 1)"
  row "matching: $(fmt_count "$IDLE_SUBSCRIPTIONS") subscriptions, 1 matches" "within 20% of none (≥ 80%)" \
    "$(fmt_rate "$MATCH_IDLE")" "$(fmt_pct "$match")" "$(verdict "$match" '>=' 0.8)"
  row "$REGION_SIZE fan-out to $REGION_SUBSCRIBERS" "< 2x a hand-over to 1" \
    "$(fmt_us_or_ms "$REGION_FAN_US")" "$(fmt_ratio "$REGION_RATIO")" "$(verdict "$REGION_RATIO" '<' 2)"
}
