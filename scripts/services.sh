#!/usr/bin/env bash
# Provisions and starts the ledger's two services on loopback, with data inside the
# project: PostgreSQL (as the `postgres` user when run as root) and nats-server with
# JetStream. Installs them from the distribution's packages when missing. Idempotent:
# services already running are left alone.
#
#   scripts/services.sh start   # install if needed, start, wait until ready
#   scripts/services.sh stop [pg|nats]   # stop both (or one)
#   scripts/services.sh running pg|nats  # exit 0 if that one is running
#   scripts/services.sh env     # print the environment variables to reach them
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${ESCROW_DATA_DIR:-$ROOT/.data}"
PG_PORT="${ESCROW_PG_PORT:-55432}"
NATS_PORT="${ESCROW_NATS_PORT:-54222}"

log() { printf '[services] %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_missing() {
  local pkgs=()
  pg_bin_dir >/dev/null 2>&1 || pkgs+=(postgresql)
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || pkgs+=(nats-server)
  if [ ${#pkgs[@]} -gt 0 ]; then
    log "installing ${pkgs[*]} from the distribution's packages"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
}

pg_bin_dir() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [ -n "$d" ] && [ -x "$d/pg_ctl" ] && echo "$d"
}

nats_bin() { command -v nats-server 2>/dev/null || echo /usr/sbin/nats-server; }

# nats-server's Go scheduler spins on an idle processor looking for work before it sleeps.
# On a machine of two cores, shared with PostgreSQL and the ledger, one Go processor
# (GOMAXPROCS=1) made nats-server spend 15-17 % less CPU per command under load, measured
# against the server's in the same run (docs/performance.md). With more cores Go's default
# stays. GOMAXPROCS set by the caller wins.
nats_gomaxprocs() {
  if [ -n "${GOMAXPROCS:-}" ]; then echo "$GOMAXPROCS"
  elif [ "$(nproc)" -le 2 ]; then echo 1
  fi
}

# PostgreSQL refuses to run as root. As root we run it as `postgres`; that user must be
# able to reach the data directory, which it cannot inside e.g. /root. Then the data
# goes to a per-project directory under /var/tmp instead (printed below).
pg_data_dir() {
  if [ "$(id -u)" = 0 ]; then
    mkdir -p "$DATA"
    if ! runuser -u postgres -- test -x "$DATA" 2>/dev/null; then
      local alt="/var/tmp/escrow-ledger-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
      mkdir -p "$alt"; chmod 755 "$alt"
      echo "$alt/pg"; return
    fi
  fi
  echo "$DATA/pg"
}

run_pg() { # run a Postgres binary as the right user
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_pg() {
  local bin pgdata sock
  bin="$(pg_bin_dir)"
  pgdata="$(pg_data_dir)"
  sock="$(dirname "$pgdata")/pg-socket"
  mkdir -p "$pgdata" "$sock"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$pgdata" "$sock"; fi
  chmod 700 "$pgdata"
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    log "initialising PostgreSQL in $pgdata"
    run_pg "$bin/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  if pg_running; then
    log "PostgreSQL already running on 127.0.0.1:$PG_PORT"
    return
  fi
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  run_pg "$bin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $sock -c max_connections=300 -c shared_buffers=256MB \
        -c idle_in_transaction_session_timeout=60s" >/dev/null
}

start_nats() {
  local dir="$DATA/nats"
  mkdir -p "$dir"
  if nats_running; then
    log "nats-server already running on 127.0.0.1:$NATS_PORT"
    return
  fi
  log "starting nats-server (JetStream) on 127.0.0.1:$NATS_PORT"
  GOMAXPROCS="$(nats_gomaxprocs)" nohup "$(nats_bin)" -js -sd "$dir/jetstream" \
    -a 127.0.0.1 -p "$NATS_PORT" -P "$dir/nats.pid" >"$dir/nats.log" 2>&1 &
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null; then return; fi
    sleep 0.1
  done
  log "nats-server did not start; see $dir/nats.log"; exit 1
}

wait_pg() {
  local bin; bin="$(pg_bin_dir)"
  for _ in $(seq 1 100); do
    if "$bin/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -q; then
      "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='escrow'" | grep -q 1 \
        || "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE escrow" >/dev/null
      return
    fi
    sleep 0.1
  done
  log "PostgreSQL did not become ready"; exit 1
}

print_env() {
  echo "export DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/escrow"
  echo "export TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  echo "export NATS_URL=nats://127.0.0.1:$NATS_PORT"
  # For scripts that start a nats-server of their own (bench/lib.sh).
  echo "export ESCROW_NATS_GOMAXPROCS=$(nats_gomaxprocs)"
}

pg_running() {
  local bin; bin="$(pg_bin_dir)" || return 1
  run_pg "$bin/pg_ctl" -D "$(pg_data_dir)" status >/dev/null 2>&1
}

nats_running() {
  [ -f "$DATA/nats/nats.pid" ] && kill -0 "$(cat "$DATA/nats/nats.pid")" 2>/dev/null
}

stop_pg() {
  local bin; bin="$(pg_bin_dir || true)"
  [ -n "$bin" ] && run_pg "$bin/pg_ctl" -D "$(pg_data_dir)" -m fast stop >/dev/null 2>&1 || true
}

stop_nats() {
  if [ -f "$DATA/nats/nats.pid" ]; then
    local pid; pid="$(cat "$DATA/nats/nats.pid")"
    kill "$pid" 2>/dev/null || true
    # Wait for it to exit, so an immediate `start` does not find the port still taken.
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
}

case "${1:-start}" in
  start) install_missing; start_pg; wait_pg; start_nats ;;
  stop)
    case "${2:-both}" in
      pg) stop_pg ;;
      nats) stop_nats ;;
      both) stop_pg; stop_nats ;;
      *) echo "usage: $0 stop [pg|nats]" >&2; exit 2 ;;
    esac
    ;;
  running)
    case "${2:-}" in
      pg) pg_running ;;
      nats) nats_running ;;
      *) echo "usage: $0 running pg|nats" >&2; exit 2 ;;
    esac
    ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|running|env" >&2; exit 2 ;;
esac
