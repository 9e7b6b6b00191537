-- Read models. Every table here can be dropped and rebuilt from the events.

-- The last version of each stream a projection has applied. An event is applied only if
-- it is the next version of its stream, in the same transaction that bumps this row, so
-- a redelivered or reordered message changes nothing.
CREATE TABLE projection_streams (
    projection TEXT NOT NULL,
    stream_id  TEXT NOT NULL,
    version    BIGINT NOT NULL,
    PRIMARY KEY (projection, stream_id)
);

-- Where a projection is in the feed, for operators (lag) and for replay.
CREATE TABLE projection_checkpoints (
    projection TEXT PRIMARY KEY,
    position   BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE rm_users (
    id         UUID PRIMARY KEY,
    email      TEXT NOT NULL,
    role       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE rm_wallets (
    id             UUID PRIMARY KEY,
    user_id        UUID NOT NULL,
    currency       TEXT NOT NULL,
    balance        NUMERIC NOT NULL CHECK (balance >= 0),
    held_in_escrow NUMERIC NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    UNIQUE (user_id, currency)
);

-- One row per money movement (the seed's Transaction). A transfer's two events fill the
-- same row, whichever arrives first.
CREATE TABLE rm_transactions (
    id             UUID PRIMARY KEY,
    from_wallet_id UUID,
    to_wallet_id   UUID,
    amount         NUMERIC NOT NULL,
    currency       TEXT NOT NULL,
    type           TEXT NOT NULL,
    description    TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    position       BIGINT NOT NULL
);
CREATE INDEX rm_transactions_from_idx ON rm_transactions (from_wallet_id, position DESC);
CREATE INDEX rm_transactions_to_idx ON rm_transactions (to_wallet_id, position DESC);
