-- Platform fees: each contract's copied terms and what it has charged, the fee schedule
-- per currency, and the platform's revenue account with its movements. Contracts created
-- before fees existed have no terms and have charged nothing.
ALTER TABLE rm_contracts
    ADD COLUMN fee_percent_bps INT,
    ADD COLUMN fee_minimum NUMERIC,
    ADD COLUMN fee_maximum NUMERIC,
    ADD COLUMN fee_payer TEXT,
    ADD COLUMN fee_charged NUMERIC NOT NULL DEFAULT 0,
    ADD COLUMN fee_held NUMERIC NOT NULL DEFAULT 0;

CREATE TABLE rm_fee_schedules (
    currency    TEXT PRIMARY KEY,
    percent_bps INT NOT NULL,
    minimum     NUMERIC,
    maximum     NUMERIC,
    payer       TEXT NOT NULL,
    set_by      UUID,
    updated_at  TIMESTAMPTZ NOT NULL,
    position    BIGINT NOT NULL
);

CREATE TABLE rm_revenue (
    currency   TEXT PRIMARY KEY,
    balance    NUMERIC NOT NULL CHECK (balance >= 0),
    updated_at TIMESTAMPTZ NOT NULL
);

-- One row per fee collected or withdrawal made.
CREATE TABLE rm_revenue_transactions (
    id          UUID PRIMARY KEY,
    currency    TEXT NOT NULL,
    type        TEXT NOT NULL,
    amount      NUMERIC NOT NULL,
    contract_id UUID,
    created_at  TIMESTAMPTZ NOT NULL,
    position    BIGINT NOT NULL
);
CREATE INDEX rm_revenue_transactions_idx ON rm_revenue_transactions (currency, position DESC);
CREATE INDEX rm_revenue_transactions_position_idx ON rm_revenue_transactions (position DESC);
