-- The callvault ledger: one row per call record, one per archival attempt, one per run.
-- Kept to SQL that SQLite and PostgreSQL both accept (times are fixed-width UTC text,
-- `YYYY-MM-DDTHH:MM:SS.sssZ`, so they sort and compare as text), except the attempts key,
-- which a PostgreSQL migration writes as an identity column.

CREATE TABLE calls (
    uuid            TEXT PRIMARY KEY,
    company_code    TEXT NOT NULL,
    record_file     TEXT NOT NULL DEFAULT '',
    call_start      TEXT,
    billsec         BIGINT,
    raw_json        TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN
                        ('pending', 'in_progress', 'archived', 'failed', 'expired', 'no_recording')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    lease_owner     TEXT,
    lease_until     TEXT,
    object_key      TEXT,
    size_bytes      BIGINT,
    sha256          TEXT,
    content_type    TEXT,
    etag            TEXT,
    object_version  TEXT,
    archived_at     TEXT,
    last_error_code TEXT,
    last_error      TEXT,
    imported_at     TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

-- Claiming walks due records oldest call first.
CREATE INDEX calls_state_start ON calls (state, call_start);
CREATE INDEX calls_lease ON calls (state, lease_until);

CREATE TABLE runs (
    id          TEXT PRIMARY KEY,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    status      TEXT NOT NULL,
    host        TEXT NOT NULL,
    pid         BIGINT NOT NULL,
    options     TEXT NOT NULL,
    summary     TEXT,
    exit_code   INTEGER
);

CREATE INDEX runs_started ON runs (started_at);

CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY,
    call_uuid   TEXT NOT NULL REFERENCES calls (uuid),
    run_id      TEXT NOT NULL REFERENCES runs (id),
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT NOT NULL,
    error_code  TEXT,
    message     TEXT,
    bytes       BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX attempts_call ON attempts (call_uuid, started_at);
CREATE INDEX attempts_run ON attempts (run_id);
