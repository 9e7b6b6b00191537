-- Login sessions: every access token names its session (`sid`), and a session ended by
-- logout, or by the reuse of a spent refresh token, ends its tokens on every server.
-- Rows past their refresh tokens' lifetime are pruned.
CREATE TABLE sessions (
    id         UUID PRIMARY KEY,
    user_id    UUID NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    ended_at   TIMESTAMPTZ
);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

-- Refresh tokens, by the SHA-256 of the token (the token itself is never stored). Each is
-- used once: refreshing spends it and issues the next of the same session; presenting a
-- spent one again ends the whole session.
CREATE TABLE refresh_tokens (
    token_hash BYTEA PRIMARY KEY,
    session_id UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    expires_at TIMESTAMPTZ NOT NULL,
    spent_at   TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);
