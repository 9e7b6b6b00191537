-- Payouts: asked for by a wallet's owner (the amount waits in the wallet's pending
-- payouts), then completed or failed by the service.
CREATE TABLE rm_payouts (
    id                 UUID PRIMARY KEY,
    user_id            UUID NOT NULL,
    wallet_id          UUID NOT NULL,
    amount             NUMERIC NOT NULL,
    currency           TEXT NOT NULL,
    destination        TEXT NOT NULL,
    description        TEXT,
    status             TEXT NOT NULL,
    transaction_id     UUID NOT NULL,
    provider_reference TEXT,
    reason             TEXT,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    position           BIGINT NOT NULL
);
CREATE INDEX rm_payouts_user_idx ON rm_payouts (user_id, position);
CREATE INDEX rm_payouts_position_idx ON rm_payouts (position);

ALTER TABLE rm_wallets ADD COLUMN pending_payouts NUMERIC NOT NULL DEFAULT 0;

-- Each history row carries, for each wallet it moves, that wallet's own event's position
-- and the wallet's balance right after it. A transfer's row is shared by two wallets whose
-- legs have positions of their own; a wallet's history is ordered by its own legs (the
-- row's `position`, its first leg's, can sort a transfer before an earlier movement of
-- the other wallet when both were written in one transaction).
ALTER TABLE rm_transactions ADD COLUMN from_balance_after NUMERIC, ADD COLUMN to_balance_after NUMERIC,
    ADD COLUMN from_position BIGINT, ADD COLUMN to_position BIGINT;
UPDATE rm_transactions SET
    from_position = CASE WHEN from_wallet_id IS NOT NULL THEN position END,
    to_position = CASE WHEN to_wallet_id IS NOT NULL THEN position END;
DROP INDEX rm_transactions_from_idx;
DROP INDEX rm_transactions_to_idx;
CREATE INDEX rm_transactions_from_idx ON rm_transactions (from_wallet_id, from_position DESC);
CREATE INDEX rm_transactions_to_idx ON rm_transactions (to_wallet_id, to_position DESC);
WITH legs AS (
    SELECT id, from_wallet_id AS wallet, -amount AS delta, from_position AS position, true AS is_from
      FROM rm_transactions WHERE from_wallet_id IS NOT NULL
    UNION ALL
    SELECT id, to_wallet_id, amount, to_position, false
      FROM rm_transactions WHERE to_wallet_id IS NOT NULL
), running AS (
    SELECT id, is_from, sum(delta) OVER (PARTITION BY wallet ORDER BY position ROWS UNBOUNDED PRECEDING) AS after
      FROM legs
)
UPDATE rm_transactions t SET
    from_balance_after = coalesce((SELECT after FROM running r WHERE r.id = t.id AND r.is_from), t.from_balance_after),
    to_balance_after = coalesce((SELECT after FROM running r WHERE r.id = t.id AND NOT r.is_from), t.to_balance_after);

-- A wallet's balance, escrow holds and pending payouts after every event that changed
-- them: what `GET /wallets/{userId}?asOf=` reads. Rows made by this migration from the
-- history know the balance only (held_in_escrow NULL): `escrow replay` fills them in.
-- `ord` is the order the projection recorded them in (the feed's order), which is the
-- order of each wallet's changes even where positions of different streams interleave.
CREATE TABLE rm_wallet_states (
    wallet_id       UUID NOT NULL,
    position        BIGINT NOT NULL,
    ord             BIGINT GENERATED ALWAYS AS IDENTITY,
    at              TIMESTAMPTZ NOT NULL,
    balance         NUMERIC NOT NULL,
    held_in_escrow  NUMERIC,
    pending_payouts NUMERIC NOT NULL,
    PRIMARY KEY (wallet_id, position)
);
CREATE INDEX rm_wallet_states_at_idx ON rm_wallet_states (wallet_id, at, ord);
INSERT INTO rm_wallet_states (wallet_id, position, at, balance, held_in_escrow, pending_payouts)
SELECT wallet, position, created_at, after, NULL, 0 FROM (
    SELECT from_wallet_id AS wallet, from_position AS position, created_at, from_balance_after AS after
      FROM rm_transactions WHERE from_wallet_id IS NOT NULL
    UNION ALL
    SELECT to_wallet_id, to_position, created_at, to_balance_after
      FROM rm_transactions WHERE to_wallet_id IS NOT NULL
) l ORDER BY wallet, position;

