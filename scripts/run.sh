#!/usr/bin/env bash
# Runs the ledger: provisions and starts PostgreSQL and NATS (see services.sh), builds the
# release binary, migrates and serves on http://127.0.0.1:${PORT:-8080}/api/v1.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
command -v cargo >/dev/null || { echo "cargo is missing: install Rust from https://rustup.rs first" >&2; exit 1; }
scripts/services.sh start
eval "$(scripts/services.sh env)"
# A real random signing secret, kept with the data so tokens survive restarts.
if [ -z "${JWT_SECRET:-}" ]; then
  mkdir -p .data
  [ -s .data/jwt_secret ] || (umask 077; head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' > .data/jwt_secret)
  JWT_SECRET="$(cat .data/jwt_secret)"; export JWT_SECRET
fi
cargo build --release --locked -p api --bin escrow
target/release/escrow migrate
exec target/release/escrow serve "$@"
