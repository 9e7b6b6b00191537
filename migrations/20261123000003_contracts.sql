-- Read models for escrow contracts and disputes (rebuildable from the events).

CREATE TABLE rm_contracts (
    id                      UUID PRIMARY KEY,
    buyer_id                UUID NOT NULL,
    seller_id               UUID NOT NULL,
    title                   TEXT NOT NULL,
    description             TEXT,
    amount                  NUMERIC NOT NULL,
    currency                TEXT NOT NULL,
    held_amount             NUMERIC NOT NULL DEFAULT 0 CHECK (held_amount >= 0),
    status                  TEXT NOT NULL,
    inspection_period_hours INT,
    delivered_at            TIMESTAMPTZ,
    auto_release_at         TIMESTAMPTZ,
    dispute_id              UUID,
    created_at              TIMESTAMPTZ NOT NULL,
    updated_at              TIMESTAMPTZ NOT NULL,
    -- Global position of ContractCreated: the pagination key.
    position                BIGINT NOT NULL
);
CREATE INDEX rm_contracts_buyer_idx ON rm_contracts (buyer_id, position DESC);
CREATE INDEX rm_contracts_seller_idx ON rm_contracts (seller_id, position DESC);
-- The auto-release scheduler's scan: only active contracts with a window.
CREATE INDEX rm_contracts_due_idx ON rm_contracts (auto_release_at) WHERE status = 'ACTIVE' AND auto_release_at IS NOT NULL;

CREATE TABLE rm_disputes (
    id            UUID PRIMARY KEY,
    contract_id   UUID NOT NULL,
    buyer_id      UUID NOT NULL,
    seller_id     UUID NOT NULL,
    raised_by     UUID NOT NULL,
    description   TEXT NOT NULL,
    status        TEXT NOT NULL,
    outcome       TEXT,
    seller_amount NUMERIC,
    buyer_amount  NUMERIC,
    currency      TEXT NOT NULL,
    resolution    TEXT,
    resolved_by   UUID,
    resolved_at   TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    position      BIGINT NOT NULL
);
CREATE INDEX rm_disputes_status_idx ON rm_disputes (status, position DESC);
CREATE INDEX rm_disputes_contract_idx ON rm_disputes (contract_id);

-- Escrow movements name their contract, so both parties see them in their history.
ALTER TABLE rm_transactions ADD COLUMN contract_id UUID;
CREATE INDEX rm_transactions_contract_idx ON rm_transactions (contract_id, position DESC) WHERE contract_id IS NOT NULL;
