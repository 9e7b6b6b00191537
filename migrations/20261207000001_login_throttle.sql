-- Failed logins per e-mail address (known or not), so that guessing a password slows down
-- whatever address the guesses come from and on every server. Not an event: it is the
-- ledger's defence, not something that happened to an account, and a successful login
-- deletes the row. Rows idle for a day are pruned.
CREATE TABLE login_failures (
    email         TEXT PRIMARY KEY,
    failures      INT NOT NULL,
    blocked_until TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_updated_idx ON login_failures (updated_at);
