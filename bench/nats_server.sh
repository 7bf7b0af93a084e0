# shellcheck shell=bash
# bench/nats_server.sh, sourced by bench scripts: a private nats-server on a random
# loopback port (NATS has no Unix socket), found through its ports file.
#
#   launch_nats_server CONF DIR [ARGS...]   # sets NATS_PID and NATS_URL; log in DIR/nats.log
#
# The caller defines log() and stops NATS_PID itself (its EXIT trap).

launch_nats_server() {
  local conf=$1 dir=$2
  shift 2
  nats-server "$@" -c "$conf" --ports_file_dir "$dir" -l "$dir/nats.log" &
  NATS_PID=$!
  local ports="$dir/nats-server_$NATS_PID.ports" _
  for _ in $(seq 100); do
    if [ -s "$ports" ]; then
      NATS_URL=$(grep -o 'nats://[0-9.:]*' "$ports" | head -n 1)
      [ -n "$NATS_URL" ] && return 0
    fi
    kill -0 "$NATS_PID" 2>/dev/null || break
    sleep 0.05
  done
  log "nats-server did not come up:"
  cat "$dir/nats.log" >&2 || true
  exit 1
}
