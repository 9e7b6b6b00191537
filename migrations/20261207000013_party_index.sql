-- Which contract and dispute events each user takes part in, for the audit trail by
-- user. A user of a busy marketplace is party to thousands of contracts; reading each
-- one's stream made a page cost grow with them. With this index the contracts and
-- disputes are one walk of (party, position); the user's own few streams (its `user-`
-- stream and its wallets') are still read stream by stream, which keeps the index off
-- the transfers, the bulk of all events.
--
-- A contract's parties are its buyer and seller, fixed by its first event; a dispute's
-- are its contract's. They are recorded once per stream (`stream_parties`) and every
-- event of the stream is indexed under each (`party_events`), by a trigger on `events`
-- that fires only for those streams' rows, in the inserting statement's transaction:
-- whatever path appends (group commit or a single append), the index is exactly as
-- fresh as the events. This file is the one home of the rule; its field names are those
-- of the first events' current schema version (`ContractCreated.buyerId`/`sellerId`,
-- `DisputeRaised.contractId`): an upcaster that renames one must change it too.

CREATE TABLE stream_parties (
    stream_id TEXT NOT NULL,
    party     UUID NOT NULL,
    PRIMARY KEY (stream_id, party)
);

CREATE TABLE party_events (
    party    UUID NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (party, position)
);

-- A uuid, or NULL for anything that is not one (malformed data): the trigger must never
-- refuse an append.
CREATE FUNCTION escrow_try_uuid(t TEXT) RETURNS UUID
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN t ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                THEN t::uuid END
$$;

-- The parties of a contract or dispute stream, from its first event. A dispute's are
-- its contract's, read from `stream_parties`: the contract's first event is always
-- indexed before (earlier in the same statement or in an earlier transaction).
CREATE FUNCTION escrow_first_event_parties(stream TEXT, data JSONB) RETURNS SETOF UUID
LANGUAGE sql STABLE AS $$
    SELECT p FROM (
        SELECT escrow_try_uuid(data->>'buyerId') WHERE starts_with(stream, 'contract-')
        UNION SELECT escrow_try_uuid(data->>'sellerId') WHERE starts_with(stream, 'contract-')
        UNION SELECT sp.party FROM stream_parties sp
              WHERE starts_with(stream, 'dispute-')
                AND sp.stream_id = 'contract-' || (data->>'contractId')
    ) ps(p)
    WHERE p IS NOT NULL
$$;

CREATE FUNCTION escrow_index_parties() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.version = 1 THEN
        INSERT INTO stream_parties (stream_id, party)
        SELECT NEW.stream_id, p FROM escrow_first_event_parties(NEW.stream_id, NEW.data) p
        ON CONFLICT DO NOTHING;
    END IF;
    INSERT INTO party_events (party, position)
    SELECT party, NEW.position FROM stream_parties WHERE stream_id = NEW.stream_id;
    RETURN NULL;
END
$$;

-- The store as it stands: the same rule over the first events (contracts before
-- disputes), then every event of those streams.
INSERT INTO stream_parties (stream_id, party)
SELECT e.stream_id, p FROM events e, escrow_first_event_parties(e.stream_id, e.data) p
WHERE e.version = 1 AND starts_with(e.stream_id, 'contract-')
ON CONFLICT DO NOTHING;
INSERT INTO stream_parties (stream_id, party)
SELECT e.stream_id, p FROM events e, escrow_first_event_parties(e.stream_id, e.data) p
WHERE e.version = 1 AND starts_with(e.stream_id, 'dispute-')
ON CONFLICT DO NOTHING;
INSERT INTO party_events (party, position)
SELECT sp.party, e.position FROM events e JOIN stream_parties sp ON sp.stream_id = e.stream_id;

-- Row by row, and only for contract and dispute rows: a transfer's events never reach
-- the function.
CREATE TRIGGER events_index_parties
AFTER INSERT ON events
FOR EACH ROW
WHEN (starts_with(NEW.stream_id, 'contract-') OR starts_with(NEW.stream_id, 'dispute-'))
EXECUTE FUNCTION escrow_index_parties();
