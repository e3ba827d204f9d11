-- The web page's sessions (`serve --ui`): the same table as the SQLite ledger's migration
-- 20261130000009_ui_sessions.sql (see there for what each column means).
CREATE TABLE ui_sessions (
    token_sha256 text COLLATE "C" PRIMARY KEY,
    username     text NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);
CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at);
