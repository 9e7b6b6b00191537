-- Audit queries read the event stream itself; these indexes keep them fast with
-- millions of events.

-- "Everything this user did": the actor recorded in each event's metadata.
CREATE INDEX events_actor_idx ON events ((metadata->>'actor'), position);
-- "Everything on these streams", newest first.
CREATE INDEX events_stream_position_idx ON events (stream_id, position);
-- Time-range filters: recorded_at rises with position, so a BRIN index is tiny and cheap.
CREATE INDEX events_recorded_at_brin ON events USING brin (recorded_at);
