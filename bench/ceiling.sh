#!/usr/bin/env bash
# The ceiling of the naive design on this machine's Postgres: one transaction per transfer
# (2 event inserts + 1 idempotency-key insert, into the ledger's real, indexed tables),
# driven by pgbench at the given concurrency. Prints the TPS as its last line.
#
#   bench/ceiling.sh DATABASE_URL CONCURRENCY SECONDS
#
# DATABASE_URL must be a scratch database migrated with `escrow migrate` (bench/run.sh
# makes one). fsync and synchronous_commit stay at the server's settings (on).
#
# The statements are prepared once per connection (`-M prepared`), as a naive design
# written with sqlx, like this project, would have them: pgbench's default, the simple
# protocol, parses and plans every statement of every transaction, measured 24-40 % fewer
# TPS, and so would flatter the ratio (docs/performance.md, "How to run it").
#
# The measurement starts and ends quiet, so that neither it nor the phase next to it pays
# for the other's leftovers: first the databases named in CEILING_VACUUM (space-separated
# URLs, e.g. the ledger's, whose load just ended) are vacuumed and analysed, which leaves
# autovacuum nothing to start on them; then a CHECKPOINT writes out the dirty buffers and
# `sync` the kernel's dirty pages. After pgbench, the same for this database.
set -euo pipefail
url="$1"; clients="$2"; seconds="$3"
pgbench="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)/pgbench"
[ -x "$pgbench" ] || pgbench="$(command -v pgbench)"
quiet() {
  local db
  for db in "$@"; do psql -X -q -v ON_ERROR_STOP=1 "$db" -c "VACUUM ANALYZE"; done
  psql -X -q -v ON_ERROR_STOP=1 "$url" -c "CHECKPOINT"
  sync
}
# shellcheck disable=SC2086 # CEILING_VACUUM is a list of URLs
quiet ${CEILING_VACUUM:-}
script="$(mktemp)"
trap 'rm -f "$script"' EXIT
# Each transaction writes a transfer's two events (payer and payee streams, new each time,
# so no conflicts) with realistic JSON, a 32-byte hash chain, and the idempotency record:
# three INSERT statements, one per row, as the issue describes the naive design ("2 event
# inserts + 1 idempotency insert") and as a naive event store appends, event by event
# (one multi-row INSERT for both events is a technique of the faster write path).
cat > "$script" <<'SQL'
\set cents random(1, 100)
BEGIN;
INSERT INTO events (event_id, stream_id, version, event_type, schema_version, data, metadata, recorded_at, prev_hash, hash)
VALUES (gen_random_uuid(), 'wallet-' || gen_random_uuid(), 1, 'TransferSent', 1,
        jsonb_build_object('transactionId', gen_random_uuid(), 'toWalletId', gen_random_uuid(), 'toUserId', gen_random_uuid(), 'amount', (:cents / 100.0)::text),
        jsonb_build_object('actor', gen_random_uuid(), 'command', 'Transfer', 'correlationId', gen_random_uuid(), 'requestId', gen_random_uuid()),
        now(), sha256(random()::text::bytea), sha256(random()::text::bytea));
INSERT INTO events (event_id, stream_id, version, event_type, schema_version, data, metadata, recorded_at, prev_hash, hash)
VALUES (gen_random_uuid(), 'wallet-' || gen_random_uuid(), 1, 'TransferReceived', 1,
        jsonb_build_object('transactionId', gen_random_uuid(), 'fromWalletId', gen_random_uuid(), 'fromUserId', gen_random_uuid(), 'amount', (:cents / 100.0)::text),
        jsonb_build_object('actor', gen_random_uuid(), 'command', 'Transfer', 'correlationId', gen_random_uuid(), 'requestId', gen_random_uuid()),
        now(), sha256(random()::text::bytea), sha256(random()::text::bytea));
INSERT INTO idempotency_keys (scope, key, request_hash, answer, position)
VALUES (gen_random_uuid()::text || '|POST /transfers', gen_random_uuid()::text, sha256(random()::text::bytea),
        jsonb_build_object('outcome', jsonb_build_object('balance', '1.00')), 1);
COMMIT;
SQL
threads=$(( clients < $(nproc) ? clients : $(nproc) ))
out="$("$pgbench" -M prepared -n -c "$clients" -j "$threads" -T "$seconds" -f "$script" "$url" 2>&1)"
echo "$out" | grep -E "latency average|tps =" >&2
quiet "$url"
echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p'
