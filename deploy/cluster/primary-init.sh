#!/bin/sh
# Runs once, when the primary's data directory is first initialised (the postgres image's
# /docker-entrypoint-initdb.d): a role the standby replicates as, a pg_hba line letting it,
# and synchronous replication. The last two take effect when the image restarts the server
# after its initialisation; set here rather than on the command line so that initialisation
# itself does not wait for a standby that cannot exist yet.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD '$REPLICATION_PASSWORD';
ALTER SYSTEM SET synchronous_standby_names = '*';
ALTER SYSTEM SET synchronous_commit = 'remote_apply';
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
