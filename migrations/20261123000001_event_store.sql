-- The event store: the only source of truth. Everything else is derived from it.

CREATE TABLE events (
    -- Global position: allocated at insert, strictly increasing, with gaps on rollback.
    position       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The inserting transaction's id (xid8 as bigint). Feed readers order by
    -- (tx_id, position) and only read below the oldest running transaction, so a
    -- transaction that took a lower position but committed later is never skipped.
    tx_id          BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    event_id       UUID NOT NULL,
    stream_id      TEXT NOT NULL,
    version        BIGINT NOT NULL CHECK (version >= 1),
    event_type     TEXT NOT NULL,
    schema_version INT NOT NULL CHECK (schema_version >= 1),
    data           JSONB NOT NULL,
    metadata       JSONB NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL,
    -- Per-stream hash chain: hash = sha256(prev_hash || canonical fields).
    prev_hash      BYTEA NOT NULL,
    hash           BYTEA NOT NULL,
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    -- Optimistic concurrency: two writers of one stream version cannot both commit.
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

CREATE INDEX events_feed_idx ON events (tx_id, position);
CREATE INDEX events_type_idx ON events (event_type, position);

-- Login credentials. Kept out of the event stream on purpose: a password hash must never
-- reach events, NATS or the audit log. Written in the same transaction as UserRegistered;
-- the unique e-mail constraint is what makes registration race-free.
CREATE TABLE credentials (
    user_id       UUID PRIMARY KEY,
    email         TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT credentials_email_key UNIQUE (email)
);

-- Idempotency keys, scoped to the caller and the route, stored in the same transaction
-- as the events a command appended.
CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BYTEA NOT NULL,
    status       SMALLINT NOT NULL,
    response     JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

-- Feed cursors of the order-sensitive workers (the relay, replays).
CREATE TABLE checkpoints (
    name       TEXT PRIMARY KEY,
    tx_id      BIGINT NOT NULL,
    position   BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
