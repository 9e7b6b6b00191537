#!/usr/bin/env bash
# Runs one benchmark end to end on this machine, as in docs/performance.md:
#   1. provisions and starts Postgres and NATS (scripts/services.sh), builds release binaries;
#   2. starts `escrow serve` on a fresh database (rate limits off) and drives it with
#      `escrow-bench`, which measures the one-transaction-per-transfer ceiling with pgbench
#      (bench/ceiling.sh, on scratch databases of the same Postgres, at the same concurrency)
#      right before its load and right after it, and prints the figures, the ratio against
#      the ceilings' mean and a JSON summary last;
#   3. runs `escrow verify` on what the run wrote.
#
#   bench/run.sh [transfers|hot|escrow|mixed] [CONCURRENCY=64] [SECONDS=20]
#   BENCH_USERS=100 (users), BENCH_DB_MAX_CONNECTIONS=20 (server pool),
#   BENCH_KEEP=1 keeps the run's database and JetStream store (e.g. to time `escrow replay`)
#   BENCH_FEE_BPS=250 sets a USD fee schedule (seller pays) before the load, so every
#   contract of the `escrow` workload charges that fee on its release
#   BENCH_WEBHOOKS=3 registers that many webhook endpoints for every event (`*`) before the
#   load, answered by a receiver inside escrow-bench, and reports their delivery lag
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
bench_dbs=("$bench_db"); scratch_dbs=("${ceiling_db}_before" "${ceiling_db}_after")
trap bench_exit EXIT
psql -c "CREATE DATABASE $bench_db" -c "CREATE DATABASE ${ceiling_db}_before" \
  -c "CREATE DATABASE ${ceiling_db}_after"
base_url="${DATABASE_URL%/*}"
for db in "$bench_db" "${ceiling_db}_before" "${ceiling_db}_after"; do
  target/release/escrow migrate --database-url "$base_url/$db" >/dev/null
done

port="${BENCH_PORT:-18080}"
log="$ROOT/.data/bench-server-$run_id.log"
start_server "$base_url/$bench_db" "$run_id" "$port" "$log"
echo "== ledger: $workload, $clients clients, ${seconds} s (server pid $server, log $log)," \
  "between two ceilings: one transaction per transfer, pgbench -c $clients, ${seconds} s"
# The ceiling runs right before the load and right after it, each on a scratch database of
# its own ($CEILING_ROUND is before or after); the ratio is against the mean of the two.
# Each ceiling checkpoints first, and vacuums and checkpoints its own database after
# itself, so that no phase pays for the autovacuum or the dirty pages of the one before;
# the one after the load first vacuums the ledger's database too. (Not the one before:
# statistics taken while the ledger's tables are nearly empty would give its long-lived
# connections plans for empty tables, and the load's first seconds ran at a tenth of its
# rate until autovacuum analysed the tables again.)
if [ -n "${BENCH_FEE_BPS:-}" ] || [ -n "${BENCH_WEBHOOKS:-}" ]; then
  bench_admin "http://127.0.0.1:$port/api/v1" "$base_url/$bench_db"
  if [ -n "${BENCH_FEE_BPS:-}" ]; then
    curl -sf -X PUT "http://127.0.0.1:$port/api/v1/admin/fee-schedule" \
      -H "Authorization: Bearer $BENCH_ADMIN_TOKEN" -H 'Content-Type: application/json' \
      -d "{\"currency\":\"USD\",\"percentBps\":$BENCH_FEE_BPS,\"payer\":\"SELLER\"}" >/dev/null
    echo "== fee schedule: USD, $BENCH_FEE_BPS basis points, the seller pays"
  fi
fi
target/release/escrow-bench --base "http://127.0.0.1:$port/api/v1" --workload "$workload" \
  --concurrency "$clients" --duration "$seconds" --users "${BENCH_USERS:-100}" \
  --server-pid "$server" --webhooks "${BENCH_WEBHOOKS:-0}" \
  --ceiling-cmd "if [ \"\$CEILING_ROUND\" = after ]; then export CEILING_VACUUM='$base_url/$bench_db'; fi
    bench/ceiling.sh '$base_url/${ceiling_db}_'\"\$CEILING_ROUND\" $clients $seconds" \
  | tee "$ROOT/.data/bench-$workload.out"
stop_bench
echo "== escrow verify"
target/release/escrow verify --database-url "$base_url/$bench_db" | tail -n 3
drop_bench_dbs
tail -n 1 "$ROOT/.data/bench-$workload.out"
