-- A user's audit trail lists the disputes they are a party to on every page: without these
-- it read the whole dispute table each time.
CREATE INDEX rm_disputes_buyer_idx ON rm_disputes (buyer_id);
CREATE INDEX rm_disputes_seller_idx ON rm_disputes (seller_id);
