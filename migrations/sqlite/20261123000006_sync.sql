-- Reconciling the ledger with the provider's bill list (`callvault sync`), and records kept
-- whatever fields they could not read. Portable SQL, times as fixed-width UTC text.
--
-- calls:
-- * `bill_id`: the provider's id of the call (the bill's `id`, the same number as the
--   callback's), so a bill without uuid finds its callback's row, and the other way round.
-- * `origin`: `callback` (a callback or an import) or `bill` (found by `sync` only: its
--   callback never came; a callback that comes later makes it `callback`).
-- * `bill_seen_at`: when a sync last saw the call in the provider's bill list.
-- * `notes`: the fields that could not be read (the record was stored without them).
ALTER TABLE calls ADD COLUMN bill_id TEXT;
ALTER TABLE calls ADD COLUMN origin TEXT NOT NULL DEFAULT 'callback' CHECK (origin IN ('callback', 'bill'));
ALTER TABLE calls ADD COLUMN bill_seen_at TEXT;
ALTER TABLE calls ADD COLUMN notes TEXT;

-- Matching a bill (or a callback) to a row: by id within the company, by record file name.
CREATE INDEX calls_bill ON calls (company_code, bill_id) WHERE bill_id IS NOT NULL;
CREATE INDEX calls_record_file ON calls (record_file) WHERE record_file <> '';
-- The rows found only by sync, and the completeness report's days.
CREATE INDEX calls_origin ON calls (origin) WHERE origin = 'bill';
CREATE INDEX calls_start ON calls (call_start);

-- One row per `callvault sync`: the window it read, how far it got (`covered_until`: every
-- bill that started before it has been read and matched; the next sync continues from the
-- newest, less the safety overlap), and what it found.
CREATE TABLE syncs (
    id            TEXT PRIMARY KEY,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    status        TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'credentials_refused')),
    since         TEXT NOT NULL,
    until         TEXT NOT NULL,
    covered_until TEXT,
    bills         BIGINT NOT NULL DEFAULT 0,
    found         BIGINT NOT NULL DEFAULT 0,
    recordings_added BIGINT NOT NULL DEFAULT 0,
    unreadable    BIGINT NOT NULL DEFAULT 0,
    requests      BIGINT NOT NULL DEFAULT 0,
    exit_code     INTEGER,
    summary       TEXT
);

CREATE INDEX syncs_started ON syncs (started_at);
CREATE INDEX syncs_covered ON syncs (covered_until);
