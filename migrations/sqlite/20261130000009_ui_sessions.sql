-- The web page's sessions (`serve --ui`): kept in the ledger so several replicas share them
-- and a logout ends a session everywhere. Only the SHA-256 of the cookie's token is stored,
-- so a copy of the ledger cannot be used to log in. Times are fixed-width UTC text.
CREATE TABLE ui_sessions (
    token_sha256 TEXT PRIMARY KEY NOT NULL,
    username     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);
CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at);
