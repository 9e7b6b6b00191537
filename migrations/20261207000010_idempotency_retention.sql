-- Idempotency keys expire (IDEMPOTENCY_RETENTION_HOURS, 7 days by default): the pruner
-- finds the old ones by age. Rows are appended in time order, so a BRIN index answers that
-- at almost no cost to each command's insert.
CREATE INDEX idempotency_keys_created_brin ON idempotency_keys USING brin (created_at);
