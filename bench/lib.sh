# Sourced by bench/run.sh, bench/replay.sh and bench/cpu.sh.

# start_server DATABASE_URL TAG PORT LOG: starts `escrow serve` (release build) on a
# database of its own, with a JetStream server of its own (store under
# .data/bench-nats/TAG, removed on exit unless BENCH_KEEP is set, so that repeated runs do
# not fill the project's JetStream: a full store makes JetStream refuse publishes with
# "insufficient resources"), rate limits off and a random signing secret; waits until it
# answers; sets $server to its pid and stops both on exit. BENCH_SERVER_BIN serves another
# build of `escrow` (e.g. to compare two, alternating).
start_server() {
  local url="$1" tag="$2" port="$3" log="$4"
  # Below 32768, outside Linux's range of ephemeral ports (32768-60999): a port in it can be
  # held by any client socket when nats-server binds (at port + 40000 a run once found
  # 58080 taken, its NATS never started, and the load failed), and a probe of a port
  # nobody listens on can connect to itself.
  local nats_port=$((port + 1000)) nats_dir="$ROOT/.data/bench-nats/$tag"
  mkdir -p "$nats_dir"
  # GOMAXPROCS as scripts/services.sh sets it for its nats-server (one on two cores).
  GOMAXPROCS="${ESCROW_NATS_GOMAXPROCS:-}" \
    "$(command -v nats-server 2>/dev/null || echo /usr/sbin/nats-server)" -js -sd "$nats_dir" \
    -a 127.0.0.1 -p "$nats_port" >"$nats_dir.log" 2>&1 &
  bench_nats=$!
  local up=""
  for _ in $(seq 50); do
    kill -0 "$bench_nats" 2>/dev/null || break
    (echo >"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && { up=1; break; }
    sleep 0.1
  done
  if [ -z "$up" ]; then
    tail -n 3 "$nats_dir.log" >&2
    echo "bench: nats-server did not start on 127.0.0.1:$nats_port (log: $nats_dir.log)" >&2
    kill "$bench_nats" 2>/dev/null || true
    exit 1
  fi
  DATABASE_URL="$url" NATS_URL="nats://127.0.0.1:$nats_port" NATS_STREAM="BENCH_$tag" \
    NATS_SUBJECT_PREFIX="bench$tag.escrow.events" \
    PORT="$port" JWT_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
    RATE_LIMIT_PER_IP_PER_MINUTE=0 RATE_LIMIT_PER_USER_PER_MINUTE=0 RATE_LIMIT_AUTH_PER_IP_PER_MINUTE=0 \
    METRICS_ADDR="127.0.0.1:$((port + 2000))" \
    DB_MAX_CONNECTIONS="${BENCH_DB_MAX_CONNECTIONS:-20}" \
    WEBHOOK_ALLOW_PRIVATE_NETWORKS=true \
    "${BENCH_SERVER_BIN:-target/release/escrow}" serve >"$log" 2>&1 &
  server=$!
  bench_nats_dir="$nats_dir"
  trap bench_exit EXIT
  for _ in $(seq 100); do
    kill -0 "$server" 2>/dev/null || break
    target/release/escrow healthcheck --addr "127.0.0.1:$port" 2>/dev/null && return 0
    sleep 0.1
  done
  tail -n 5 "$log" >&2
  echo "bench: escrow serve did not become healthy on 127.0.0.1:$port (log: $log)" >&2
  exit 1
}

# bench_admin API_URL DATABASE_URL: registers an admin of the run's server and exports its
# token as BENCH_ADMIN_TOKEN (escrow-bench's --admin-token).
bench_admin() {
  local api="$1" url="$2" token
  curl -sf -X POST "$api/auth/register" -H 'Content-Type: application/json' \
    -d '{"email":"fees@bench.example","password":"password123"}' >/dev/null
  target/release/escrow users grant-role --database-url "$url" \
    --email fees@bench.example --role admin >/dev/null
  token=$(curl -sf -X POST "$api/auth/login" -H 'Content-Type: application/json' \
    -d '{"email":"fees@bench.example","password":"password123"}' \
    | python3 -c 'import sys,json; print(json.load(sys.stdin)["access_token"])')
  export BENCH_ADMIN_TOKEN="$token"
}

# Stops what start_server started; removes the run's JetStream store unless BENCH_KEEP.
stop_bench() {
  [ -n "${server:-}" ] || return 0
  kill "$server" "$bench_nats" 2>/dev/null || true
  wait "$server" "$bench_nats" 2>/dev/null || true
  [ -n "${BENCH_KEEP:-}" ] || rm -rf "$bench_nats_dir" "$bench_nats_dir.log"
  server=""
}

# Databases a run creates: `bench_dbs` are dropped when it ends unless BENCH_KEEP is set,
# `scratch_dbs` (the ceilings') always — when it fails or is interrupted too (a failed
# run used to leave 200-450 MB behind each time).
bench_dbs=(); scratch_dbs=()
drop_bench_dbs() {
  local db dbs=("${scratch_dbs[@]}")
  [ -n "${BENCH_KEEP:-}" ] || dbs+=("${bench_dbs[@]}")
  for db in "${dbs[@]}"; do
    command psql -X -q "$TEST_DATABASE_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" \
      >/dev/null 2>&1 || echo "bench: could not drop database $db" >&2
  done
  bench_dbs=(); scratch_dbs=()
}

# The EXIT trap of every bench script: stops the run's servers, drops its databases.
bench_exit() {
  stop_bench
  drop_bench_dbs
}
