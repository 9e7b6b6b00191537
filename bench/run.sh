#!/usr/bin/env bash
# Runs one benchmark end to end on this machine, as in docs/performance.md:
#   1. provisions and starts Postgres and NATS (scripts/services.sh), builds release binaries;
#   2. measures the one-transaction-per-transfer ceiling with pgbench (bench/ceiling.sh) on
#      a scratch database of the same Postgres, at the same concurrency;
#   3. starts `escrow serve` on a fresh database (rate limits off) and drives it with
#      `escrow-bench`, which prints the figures, the ratio and a JSON summary last;
#   4. runs `escrow verify` on what the run wrote.
#
#   bench/run.sh [transfers|hot|escrow|mixed] [CONCURRENCY=64] [SECONDS=20]
#   BENCH_USERS=100 (users), BENCH_DB_MAX_CONNECTIONS=20 (server pool),
#   BENCH_KEEP=1 keeps the run's database and JetStream store (e.g. to time `escrow replay`)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. bench/lib.sh
workload="${1:-transfers}"; clients="${2:-64}"; seconds="${3:-20}"
scripts/services.sh start
eval "$(scripts/services.sh env)"
cargo build --release --locked -p api --bin escrow -p escrow-bench --bin escrow-bench 2>&1 | tail -n 1
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$TEST_DATABASE_URL" "$@"; }
run_id="$(date +%s)_$$"
bench_db="escrow_bench_$run_id"; ceiling_db="escrow_ceiling_$run_id"
psql -c "CREATE DATABASE $bench_db" -c "CREATE DATABASE $ceiling_db"
base_url="${DATABASE_URL%/*}"
target/release/escrow migrate --database-url "$base_url/$ceiling_db" >/dev/null
target/release/escrow migrate --database-url "$base_url/$bench_db" >/dev/null

echo "== ceiling: one transaction per transfer, pgbench -c $clients, ${seconds} s"
ceiling="$(bench/ceiling.sh "$base_url/$ceiling_db" "$clients" "$seconds" | tail -n 1)"
echo "one-tx-per-transfer TPS: $ceiling"
psql -c "DROP DATABASE $ceiling_db"

port="${BENCH_PORT:-18080}"
log="$ROOT/.data/bench-server-$run_id.log"
start_server "$base_url/$bench_db" "$run_id" "$port" "$log"
echo "== ledger: $workload, $clients clients, ${seconds} s (server pid $server, log $log)"
target/release/escrow-bench --base "http://127.0.0.1:$port/api/v1" --workload "$workload" \
  --concurrency "$clients" --duration "$seconds" --users "${BENCH_USERS:-100}" \
  --server-pid "$server" --ceiling-tps "$ceiling" | tee "$ROOT/.data/bench-$workload.out"
kill "$server"; wait "$server" 2>/dev/null || true
echo "== escrow verify"
target/release/escrow verify --database-url "$base_url/$bench_db" | tail -n 3
[ -n "${BENCH_KEEP:-}" ] || psql -c "DROP DATABASE $bench_db WITH (FORCE)"
tail -n 1 "$ROOT/.data/bench-$workload.out"
