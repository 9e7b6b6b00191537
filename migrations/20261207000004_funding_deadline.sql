-- A draft's funding deadline (fundBy), and the index the deadline scheduler scans.
-- Contracts created before deadlines existed have none (their events carry no fundBy).
ALTER TABLE rm_contracts ADD COLUMN fund_by timestamptz;
CREATE INDEX rm_contracts_expiry_idx ON rm_contracts (fund_by) WHERE status = 'DRAFT' AND fund_by IS NOT NULL;
