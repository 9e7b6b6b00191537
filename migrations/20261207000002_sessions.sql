-- Login sessions: every access token names its session (`sid`), and a session ended by
-- logout ends its tokens on every server. Rows past their tokens' lifetime are pruned.
CREATE TABLE sessions (
    id         UUID PRIMARY KEY,
    user_id    UUID NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    ended_at   TIMESTAMPTZ
);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);
