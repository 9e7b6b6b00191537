#!/usr/bin/env bash
# Where the machine goes under load: starts `escrow serve` on a fresh database as run.sh
# does (no ceiling), drives it with escrow-bench, and over the middle of the load samples
# /proc for the CPU each process spends per command — the server, its nats-server, the
# load generator and the PostgreSQL backends of its database — and the machine's idle
# share; then reads from the server's /metrics how many commands each group commit held.
# Its last line is one machine-readable summary. For comparing two builds, run it
# alternately with each (the machine's speed drifts by tens of per cent within minutes).
#
#   bench/cpu.sh [transfers|hot|escrow|mixed] [CONCURRENCY=64] [SECONDS=25]
#   BENCH_SERVER_BIN=path   the `escrow` binary to serve (default target/release/escrow)
#   BENCH_GENERATOR_BIN=path   the load generator to drive it with (default
#                           target/release/escrow-bench)
#   BENCH_USERS=100, BENCH_DB_MAX_CONNECTIONS=20 as for run.sh
#   BENCH_WEBHOOKS=3 as for run.sh (the receiver's CPU counts with the load generator's;
#                           the queued deliveries are not waited for after the load)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. bench/lib.sh
workload="${1:-transfers}"; clients="${2:-64}"; seconds="${3:-25}"
# The sample leaves out the setup (about 4 s) and the first seconds of the load, and ends
# before the load does.
warmup=8; window=$((seconds - 12))
[ "$window" -ge 5 ] || { echo "bench/cpu.sh: SECONDS must be at least 17" >&2; exit 2; }
scripts/services.sh start
eval "$(scripts/services.sh env)"
cargo build --release --locked -p api --bin escrow -p escrow-bench --bin escrow-bench 2>&1 | tail -n 1
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$TEST_DATABASE_URL" "$@"; }
run_id="$(date +%s)_$$"
db="escrow_cpu_$run_id"
bench_dbs=("$db")
trap bench_exit EXIT
psql -c "CREATE DATABASE $db"
url="${DATABASE_URL%/*}/$db"
target/release/escrow migrate --database-url "$url" >/dev/null
port="${BENCH_PORT:-18084}"
start_server "$url" "$run_id" "$port" "$ROOT/.data/cpu-server-$run_id.log"
out="$ROOT/.data/cpu-$workload.out"
[ -z "${BENCH_WEBHOOKS:-}" ] || bench_admin "http://127.0.0.1:$port/api/v1" "$url"
"${BENCH_GENERATOR_BIN:-target/release/escrow-bench}" --base "http://127.0.0.1:$port/api/v1" \
  --workload "$workload" \
  --concurrency "$clients" --duration "$seconds" --users "${BENCH_USERS:-100}" \
  --server-pid "$server" --webhooks "${BENCH_WEBHOOKS:-0}" --webhook-drain-s 0 >"$out" 2>&1 &
load=$!

# Clock ticks (user + system) of a comma-separated list of pids; a pid gone counts 0.
ticks() {
  local t=0 p f
  for p in ${1//,/ }; do
    f="$(cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null || echo "0 0")"
    t=$((t + ${f% *} + ${f#* }))
  done
  echo "$t"
}
backends() { pgrep -d, -f "postgres: postgres $db " || true; }
sleep "$warmup"
pg_before="$(backends)"
read -r _ u0 n0 s0 i0 w0 q0 sq0 _ </proc/stat
srv0=$(ticks "$server"); nats0=$(ticks "$bench_nats"); gen0=$(ticks "$load"); pg0=$(ticks "$pg_before")
sleep "$window"
srv1=$(ticks "$server"); nats1=$(ticks "$bench_nats"); gen1=$(ticks "$load")
read -r _ u1 n1 s1 i1 w1 q1 sq1 _ </proc/stat
# Backends that connected during the window count whole (all their CPU is in it).
pg_after="$(backends)"
pg1=$(ticks "$pg_after")
wait "$load" || true
# METRICS_ADDR as bench/lib.sh sets it; builds from before it served /metrics on the API port.
metrics="$(curl -sf "http://127.0.0.1:$((port + 2000))/metrics" || curl -s "http://127.0.0.1:$port/metrics" || true)"
bench_exit
trap - EXIT

rate="$(grep -o '"commands_per_s":[0-9.]*' "$out" | cut -d: -f2)"
[ -n "$rate" ] || { cat "$out" >&2; echo "bench/cpu.sh: the load did not finish" >&2; exit 1; }
batch="$(printf '%s\n' "$metrics" | awk '/^escrow_append_batch_commands_sum /{s=$2} /^escrow_append_batch_commands_count /{c=$2} END {if (c > 0) printf "%.1f", s / c; else printf "null"}')"
hz="$(getconf CLK_TCK)"
grep -E '^(commands|latency|non-2xx|server peak|conservation)' "$out"
awk -v rate="$rate" -v window="$window" -v hz="$hz" -v batch="$batch" \
  -v srv="$((srv1 - srv0))" -v nats="$((nats1 - nats0))" -v gen="$((gen1 - gen0))" \
  -v pg="$((pg1 - pg0))" -v busy="$(((u1 + n1 + s1 + q1 + sq1) - (u0 + n0 + s0 + q0 + sq0)))" \
  -v idle="$(((i1 + w1) - (i0 + w0)))" -v workload="$workload" -v clients="$clients" 'BEGIN {
    n = rate * window; us = 1e6 / hz / n
    printf "CPU per command (µs), %d s of the load: server %.0f, nats-server %.0f, load generator %.0f, PostgreSQL backends %.0f; machine idle %.1f %%; commands per group commit %s\n",
      window, srv * us, nats * us, gen * us, pg * us, 100 * idle / (idle + busy), batch
    printf "{\"workload\":\"%s\",\"concurrency\":%d,\"commands_per_s\":%s,\"server_us\":%.1f,\"nats_us\":%.1f,\"generator_us\":%.1f,\"postgres_us\":%.1f,\"idle_pct\":%.1f,\"commands_per_batch\":%s}\n",
      workload, clients, rate, srv * us, nats * us, gen * us, pg * us, 100 * idle / (idle + busy), batch
  }'
