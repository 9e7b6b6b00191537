#!/usr/bin/env bash
# Builds an event store of about a million events with the transfers workload (1,000
# users, 210 s at concurrency 64 — about 2,460 transfers/s on the 2-core machine), then
# times `escrow replay` of it. Prints the load's timeline (every 10 s) and summary, the
# event count and the replay's events/s and peak RSS.
#
#   bench/replay.sh [SECONDS=210]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. bench/lib.sh
seconds="${1:-210}"
scripts/services.sh start
eval "$(scripts/services.sh env)"
cargo build --release --locked -p api --bin escrow -p escrow-bench --bin escrow-bench 2>&1 | tail -n 1
db="escrow_replay_$(date +%s)_$$"
bench_dbs=("$db")
trap bench_exit EXIT
psql -X -q "$TEST_DATABASE_URL" -c "CREATE DATABASE $db"
url="${DATABASE_URL%/*}/$db"
target/release/escrow migrate --database-url "$url" >/dev/null
port="${BENCH_PORT:-18082}"
start_server "$url" "$db" "$port" "$ROOT/.data/replay-server.log"
target/release/escrow-bench --base "http://127.0.0.1:$port/api/v1" --server-pid "$server" \
  --users 1000 --duration "$seconds" --lag-every 1000 --every 10 | tail -n 1
stop_bench
echo "events: $(psql -X -At "$url" -c 'SELECT count(*) FROM events')"
/usr/bin/time -f "wall %e s, peak RSS %M KiB" target/release/escrow replay --database-url "$url" 2>&1 \
  | tr '\r' '\n' | tail -n 2
drop_bench_dbs
