#!/usr/bin/env bash
# Runs every test against real PostgreSQL and NATS (provisioned and started as for
# run.sh). Each test creates its own database and JetStream stream.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
command -v cargo >/dev/null || { echo "cargo is missing: install Rust from https://rustup.rs first" >&2; exit 1; }
# Services this command starts are stopped again when it ends (so that a second checkout's
# tests or benchmarks find their ports free); services already running are left running.
started=()
for svc in pg nats; do scripts/services.sh running "$svc" || started+=("$svc"); done
stop_started() { for svc in "${started[@]}"; do scripts/services.sh stop "$svc"; done; }
trap stop_started EXIT
scripts/services.sh start
eval "$(scripts/services.sh env)"
export NATS_SERVER_BIN="$(command -v nats-server || echo /usr/sbin/nats-server)"
# Each test creates its own database; drop those left by earlier runs (they add up to
# gigabytes over a day of runs).
psql -X -q -At "$TEST_DATABASE_URL" -c "SELECT datname FROM pg_database WHERE datname ~ '^t_[0-9a-f]{32}$'" \
  | while read -r db; do psql -X -q "$TEST_DATABASE_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"; done
# The console test drives headless Chromium with playwright-core.
scripts/browser.sh
# The generated-client tests: a Python and a TypeScript client generated from the served
# OpenAPI document run the walkthrough.
scripts/clients.sh
# The fault tests start and kill the real `escrow` binary.
cargo build --locked -p api --bin escrow
export ESCROW_BIN="$ROOT/target/debug/escrow"
# One test at a time: the tests hold servers to the documented 2 s read wait, and a load or
# fault test running beside them on two cores held a projection back past it.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-1}"
cargo test --workspace --locked "$@" 2>&1 | tee .data/test.log
status=${PIPESTATUS[0]}
# Long mode: longer outages in the fault tests (above) and schemathesis against the API.
if [ -n "${ESCROW_LONG_TESTS:-}" ] && [ "$status" = 0 ]; then
  scripts/schemathesis.sh || status=$?
fi
echo "---- summary"
grep -E "^test result:" .data/test.log | awk '{p+=$4; f+=$6} END {printf "%d passed, %d failed\n", p, f}'
exit "$status"
