#!/usr/bin/env bash
# Starts the whole local stack: PostgreSQL and RabbitMQ (via ensure-deps.sh), the Clio
# simulator, audit-svc, auth-svc, import-svc and the dashboard (http://127.0.0.1:8090),
# each as a background process with its log under .stack/. Then, with `demo`, runs an import end to end against the simulator.
#
#   deploy/local/run-stack.sh up     start everything and wait until healthy
#   deploy/local/run-stack.sh demo   up, then the demo import (connect, import, report)
#   deploy/local/run-stack.sh down   stop what `up` started
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
STATE=$ROOT/.stack
CONFIG=$ROOT/deploy/local/config
PROFILE=${PROFILE:-debug}
# Where cargo puts the binaries (CARGO_TARGET_DIR moves them).
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE

log() { printf 'stack: %s\n' "$*" >&2; }

stop_all() {
  [ -d "$STATE" ] || return 0
  for pidfile in "$STATE"/*.pid; do
    [ -e "$pidfile" ] || continue
    local pid; pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      log "stopping $(basename "$pidfile" .pid) ($pid)"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$pidfile"
  done
}

start() { # name, command...
  local name=$1; shift
  "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
  log "started $name (pid $!, log .stack/$name.log)"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name, port
  for _ in $(seq 1 120); do
    if port_open "$2"; then return 0; fi
    if ! kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; then
      log "$1 exited; its log:"; tail -n 30 "$STATE/$1.log" >&2; return 1
    fi
    sleep 0.5
  done
  log "$1 did not open port $2"; return 1
}

up() {
  deploy/local/ensure-deps.sh
  mkdir -p "$STATE"
  stop_all
  log "building ($PROFILE)"
  if [ "$PROFILE" = release ]; then cargo build --release --bins --quiet; else cargo build --bins --quiet; fi

  start clio-sim "$BIN/clio-sim" --listen 127.0.0.1 --base-port 18000 --size 1000 \
    --rate-limit 50/60s --apps "$CONFIG/sim-apps.json" --webhooks-allow-http
  wait_port clio-sim 18000
  start audit-svc "$BIN/audit-svc" --config "$CONFIG/audit-svc.toml"
  wait_port audit-svc 50053
  start auth-svc "$BIN/auth-svc" --config "$CONFIG/auth-svc.toml"
  wait_port auth-svc 50051
  start import-svc "$BIN/import-svc" --config "$CONFIG/import-svc.toml"
  wait_port import-svc 50052
  start dashboard "$BIN/dashboard" --config "$CONFIG/dashboard.toml"
  wait_port dashboard 8090
  log "stack is up: auth 127.0.0.1:50051, import :50052, audit :50053, Clio simulator (US) :18000"
  log "dashboard: http://127.0.0.1:8090 (people and their local passwords: deploy/local/config/dashboard.toml)"
  # audit-svc migrated as clio_audit_owner and runs as clio_audit_service (ensure-deps.sh);
  # its signed checkpoints are copied to the witness file outside Postgres.
  log "audit log check: $BIN/audit-svc verify --witness .stack/audit-witness.jsonl --config $CONFIG/audit-svc.toml"
}

case "${1:-up}" in
  up) up ;;
  down) stop_all ;;
  demo)
    up
    "$BIN/clioctl" --config "$CONFIG/clioctl.toml" demo
    ;;
  *) echo "usage: $0 [up|demo|down]" >&2; exit 64 ;;
esac
