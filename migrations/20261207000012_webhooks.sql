-- Webhook endpoints (a read model of their streams; deleted ones stay as DELETED), their signing secrets (outside
-- events, like credentials), and the deliverer's own state: how far each endpoint's
-- JetStream consumer was staged, and every delivery with its attempts.
CREATE TABLE rm_webhooks (
    id             UUID PRIMARY KEY,
    url            TEXT NOT NULL,
    events         TEXT[] NOT NULL,
    description    TEXT,
    status         TEXT NOT NULL,
    -- Rotations so far: the deliverer reloads the secrets when it changes.
    secret_version INT NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    position       BIGINT NOT NULL
);

CREATE TABLE webhook_secrets (
    id          BIGSERIAL PRIMARY KEY,
    webhook_id  UUID NOT NULL,
    -- `plain:<secret>`, or `aes256gcm:<base64 of nonce, ciphertext and tag>` when
    -- WEBHOOK_SECRETS_KEY is set.
    secret      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set when a rotation replaces it: it signs beside the new one until then.
    expires_at  TIMESTAMPTZ
);
CREATE INDEX webhook_secrets_webhook_idx ON webhook_secrets (webhook_id, id);

CREATE TABLE webhook_cursors (
    webhook_id    UUID PRIMARY KEY,
    -- The JetStream stream sequence of the last message staged (deliveries written for
    -- it, or found not to match).
    staged_seq    BIGINT NOT NULL,
    -- The `Escrow-Sequence` of the next delivery.
    next_sequence BIGINT NOT NULL DEFAULT 1,
    -- The delivery that failed for longer than the maximum age: nothing is sent until an
    -- admin re-enables the endpoint, which makes it pending again.
    halted_by     UUID,
    -- Set by the endpoint's deletion: nothing more is staged or sent.
    deleted       BOOLEAN NOT NULL DEFAULT false
);

CREATE TABLE webhook_deliveries (
    id               UUID PRIMARY KEY,
    webhook_id       UUID NOT NULL,
    sequence         BIGINT NOT NULL,
    event_id         UUID NOT NULL,
    position         BIGINT NOT NULL,
    event_type       TEXT NOT NULL,
    body             TEXT NOT NULL,
    -- When the event was recorded (delivery lag counts from here).
    recorded_at      TIMESTAMPTZ NOT NULL,
    status           TEXT NOT NULL,
    attempts         INT NOT NULL DEFAULT 0,
    last_status_code INT,
    last_error       TEXT,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    -- Its age counts from here: creation, or a retry or re-enabling an admin asked for.
    age_from         TIMESTAMPTZ NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    delivered_at     TIMESTAMPTZ,
    UNIQUE (webhook_id, sequence)
);
-- The head of each endpoint's queue.
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (webhook_id, sequence)
    WHERE status = 'PENDING';
