-- An idempotency key keeps what its command produced (the command's outcome, serialized
-- by the write side) and the position its events reached, instead of a rendered HTTP
-- status and body: the API renders first answers and replays with one function.
-- Keys stored before keep their rendered answer, wrapped so the write side replays it as
-- it was: {"rendered": {"status": S, "body": B}}.
ALTER TABLE idempotency_keys ADD COLUMN answer JSONB, ADD COLUMN position BIGINT;
UPDATE idempotency_keys
   SET answer = jsonb_build_object('rendered', jsonb_build_object('status', status, 'body', response));
ALTER TABLE idempotency_keys ALTER COLUMN answer SET NOT NULL;
ALTER TABLE idempotency_keys DROP COLUMN status, DROP COLUMN response;
