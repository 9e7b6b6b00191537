#!/usr/bin/env bash
# Fuzzes the served OpenAPI document with schemathesis (from PyPI): zero 5xx, zero
# responses that violate the schema, zero undocumented status codes or content types.
# Part of the long test mode: ESCROW_LONG_TESTS=1 scripts/test.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/services.sh start
eval "$(scripts/services.sh env)"
command -v st >/dev/null 2>&1 || python3 -m pip install -q schemathesis
cargo build --locked -p api --bin escrow
DB="st_$(date +%s)"
psql_url="${DATABASE_URL%/*}"
bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
"$bin/psql" "$psql_url/postgres" -qc "CREATE DATABASE $DB"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export DATABASE_URL="$psql_url/$DB" PORT NATS_STREAM="ST_$DB" NATS_SUBJECT_PREFIX="$DB.events"
export JWT_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export RATE_LIMIT_PER_IP_PER_MINUTE=0 RATE_LIMIT_PER_USER_PER_MINUTE=0 RATE_LIMIT_AUTH_PER_IP_PER_MINUTE=0
export RATE_LIMIT_LOOKUPS_PER_USER_PER_MINUTE=0
target/debug/escrow serve > ".data/schemathesis-server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
B="http://127.0.0.1:$PORT/api/v1"
for _ in $(seq 1 100); do curl -sf "$B/health" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf -X POST "$B/auth/register" -H 'Content-Type: application/json' -d '{"email":"fuzz@example.com","password":"password123"}' >/dev/null
target/debug/escrow users grant-role --email fuzz@example.com --role admin >/dev/null
TOKEN=$(curl -sf -X POST "$B/auth/login" -H 'Content-Type: application/json' \
  -d '{"email":"fuzz@example.com","password":"password123"}' | python3 -c 'import sys,json; print(json.load(sys.stdin)["access_token"])')
# Left out: /auth/logout (it would end the session every later request uses) and /ws (a
# WebSocket upgrade, which schemathesis does not speak). Every check and every phase runs;
# schemathesis.toml and schemathesis_rules.py hold the refusals the document cannot state,
# and fail any other refusal of a schema-valid request.
export SCHEMATHESIS_HOOKS="$ROOT/scripts/schemathesis_rules.py"
st --config-file "$ROOT/scripts/schemathesis.toml" run "$B/openapi.json" \
  --exclude-path /api/v1/auth/logout --exclude-path /api/v1/ws -H "Authorization: Bearer $TOKEN" \
  --checks all --phases examples,coverage,fuzzing,stateful \
  --max-examples "${ST_MAX_EXAMPLES:-50}" "$@"
