-- A user's audit trail lists the disputes they are a party to on every page, and the
-- arbiters' queue pages all disputes newest first: without these both read the whole
-- dispute table each time.
CREATE INDEX rm_disputes_buyer_idx ON rm_disputes (buyer_id, position DESC);
CREATE INDEX rm_disputes_seller_idx ON rm_disputes (seller_id, position DESC);
CREATE INDEX rm_disputes_position_idx ON rm_disputes (position DESC);
