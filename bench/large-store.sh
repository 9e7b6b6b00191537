#!/usr/bin/env bash
# Grows a ledger to millions of events through its real write path and measures it at each
# size (docs/performance.md, "A large store"):
#   1. provisions and starts Postgres and NATS (scripts/services.sh), builds release binaries;
#   2. starts `escrow serve` on a fresh database with a JetStream server of its own, and
#      drives it with `escrow-large-store`, which registers users and grows the store with
#      transfers and escrow flows until each size, then, with the load paused and the read
#      models caught up, measures each read endpoint's p50/p99;
#   3. at each size, this script (as `--checkpoint`) times `escrow verify` and
#      `escrow replay` over the whole store and weighs it: PostgreSQL bytes per event (and
#      the largest tables), JetStream bytes per event.
# Each size prints one JSON line; the last line is all of them.
#
#   bench/large-store.sh [SIZES=1000000,10000000] [CONCURRENCY=64]
#   BENCH_KEEP=1 keeps the database and JetStream store afterwards.
# Disk: about 3 KB per event (10 M events: about 30 GB, dropped at the end); time: about
# 6,400 events/s on two cores, so 10 M take half an hour.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [ "${1:-}" = --checkpoint ]; then
  url="$2"; nats_dir="$3"
  q() { command psql -X -q -At "$url" -c "$1"; }
  events="$(q "SELECT count(*) FROM events")"
  t0=$(date +%s.%N)
  target/release/escrow verify --database-url "$url" >/dev/null
  t1=$(date +%s.%N)
  replayed="$(target/release/escrow replay --database-url "$url" 2>/dev/null)"
  t2=$(date +%s.%N)
  db="$(q "SELECT pg_database_size(current_database())")"
  tables="$(q "SELECT string_agg(format('\"%s\":%s', relname, pg_total_relation_size(oid)), ',' ORDER BY pg_total_relation_size(oid) DESC)
               FROM (SELECT oid, relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace
                     ORDER BY pg_total_relation_size(oid) DESC LIMIT 6) t")"
  js="$(du -sb "$nats_dir" | cut -f1)"
  python3 - "$events" "$t0" "$t1" "$t2" "$db" "$js" "{$tables}" "$replayed" <<'PY'
import json, re, sys
events, t0, t1, t2, db, js = int(sys.argv[1]), *map(float, sys.argv[2:5]), int(sys.argv[5]), int(sys.argv[6])
split = re.search(r"loading ([0-9.]+)s, indexes and swap ([0-9.]+)s", sys.argv[8])
print(json.dumps({
    "events_counted": events,
    "verify_s": round(t1 - t0, 1), "verify_events_per_s": round(events / (t1 - t0)),
    "replay_s": round(t2 - t1, 1), "replay_events_per_s": round(events / (t2 - t1)),
    "replay_loading_s": float(split.group(1)) if split else None,
    "replay_indexes_and_swap_s": float(split.group(2)) if split else None,
    "postgres_bytes_per_event": round(db / events), "jetstream_bytes_per_event": round(js / events),
    "largest_tables_bytes": json.loads(sys.argv[7]),
}))
PY
  exit 0
fi

. bench/lib.sh
sizes="${1:-1000000,10000000}"; clients="${2:-64}"
scripts/services.sh start
eval "$(scripts/services.sh env)"
cargo build --release --locked -p api --bin escrow -p escrow-bench --bin escrow-bench \
  --bin escrow-large-store 2>&1 | tail -n 1
run_id="$(date +%s)_$$"
db="escrow_large_$run_id"
bench_dbs=("$db")
trap bench_exit EXIT
command psql -X -q -v ON_ERROR_STOP=1 "$TEST_DATABASE_URL" -c "CREATE DATABASE $db"
url="${DATABASE_URL%/*}/$db"
target/release/escrow migrate --database-url "$url" >/dev/null
port="${BENCH_PORT:-18086}"
# Tokens outlive the growth to 10 M events.
export JWT_TTL_SECONDS=86400
start_server "$url" "$run_id" "$port" "$ROOT/.data/large-store-server-$run_id.log"
bench_admin "http://127.0.0.1:$port/api/v1" "$url"
target/release/escrow-large-store --base "http://127.0.0.1:$port/api/v1" --events "$sizes" \
  --concurrency "$clients" \
  --checkpoint-cmd "bench/large-store.sh --checkpoint '$url' '$bench_nats_dir'" \
  | tee "$ROOT/.data/large-store.out"
