-- Pay-ins: money a payment provider is bringing in for a user, announced by the service,
-- then confirmed (the wallet credited) or failed.
CREATE TABLE rm_payins (
    id             UUID PRIMARY KEY,
    user_id        UUID NOT NULL,
    amount         NUMERIC NOT NULL,
    currency       TEXT NOT NULL,
    reference      TEXT NOT NULL,
    description    TEXT,
    status         TEXT NOT NULL,
    created_by     UUID NOT NULL,
    reason         TEXT,
    transaction_id UUID,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    position       BIGINT NOT NULL
);
CREATE INDEX rm_payins_user_idx ON rm_payins (user_id, position);
CREATE INDEX rm_payins_position_idx ON rm_payins (position);
