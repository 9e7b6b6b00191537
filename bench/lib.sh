# Sourced by bench/run.sh and bench/replay.sh.

# start_server DATABASE_URL TAG PORT LOG: starts `escrow serve` (release build) on a
# database of its own, with its own JetStream stream, rate limits off and a random signing
# secret; waits until it answers; sets $server to its pid and kills it on exit.
start_server() {
  local url="$1" tag="$2" port="$3" log="$4"
  DATABASE_URL="$url" NATS_STREAM="BENCH_$tag" NATS_SUBJECT_PREFIX="bench$tag.escrow.events" \
    PORT="$port" JWT_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
    RATE_LIMIT_PER_IP_PER_MINUTE=0 RATE_LIMIT_PER_USER_PER_MINUTE=0 \
    DB_MAX_CONNECTIONS="${BENCH_DB_MAX_CONNECTIONS:-20}" \
    target/release/escrow serve >"$log" 2>&1 &
  server=$!
  trap 'kill $server 2>/dev/null || true' EXIT
  for _ in $(seq 100); do
    target/release/escrow healthcheck --addr "127.0.0.1:$port" 2>/dev/null && break
    sleep 0.1
  done
}
