#!/bin/sh
# The hot standby: on first start, copies the primary with pg_basebackup -R (which writes
# the connection to follow it and standby.signal), then runs as a read-only server applying
# the primary's WAL. Promote it with `pg_ctl promote` (docs/operations.md).
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  until pg_isready -q -h postgres-primary -U "$POSTGRES_USER"; do sleep 1; done
  su-exec postgres env PGPASSWORD="$REPLICATION_PASSWORD" \
    pg_basebackup -h postgres-primary -U replicator -D "$PGDATA" -R -X stream -P
fi
exec su-exec postgres postgres -c hot_standby=on -c listen_addresses='*'
