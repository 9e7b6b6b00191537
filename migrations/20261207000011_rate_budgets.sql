-- Rate limits shared by every API process (RATE_LIMITS_SHARED=true): one row per budget
-- and key, holding its theoretical arrival time (GCRA). Unlogged: a crash resets the
-- budgets to full, which costs nothing worth a WAL write per request.
CREATE UNLOGGED TABLE rate_budgets (
    key TEXT PRIMARY KEY,
    tat TIMESTAMPTZ NOT NULL
);
