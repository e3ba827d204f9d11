-- Reconciling the ledger with the provider's bill list (`callvault sync`), and records kept
-- whatever fields they could not read: the same columns and table as the SQLite ledger's
-- migration 20261123000006_sync.sql (see there for what each one means).
ALTER TABLE calls ADD COLUMN bill_id text COLLATE "C";
ALTER TABLE calls ADD COLUMN origin text NOT NULL DEFAULT 'callback' CHECK (origin IN ('callback', 'bill'));
ALTER TABLE calls ADD COLUMN bill_seen_at timestamptz;
ALTER TABLE calls ADD COLUMN notes text;

CREATE INDEX calls_bill ON calls (company_code, bill_id) WHERE bill_id IS NOT NULL;
CREATE INDEX calls_record_file ON calls (record_file) WHERE record_file <> '';
CREATE INDEX calls_origin ON calls (origin) WHERE origin = 'bill';
CREATE INDEX calls_start ON calls (call_start);

CREATE TABLE syncs (
    id               text COLLATE "C" PRIMARY KEY,
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    status           text NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'credentials_refused')),
    since            timestamptz NOT NULL,
    until            timestamptz NOT NULL,
    covered_until    timestamptz,
    bills            bigint NOT NULL DEFAULT 0,
    found            bigint NOT NULL DEFAULT 0,
    recordings_added bigint NOT NULL DEFAULT 0,
    unreadable       bigint NOT NULL DEFAULT 0,
    requests         bigint NOT NULL DEFAULT 0,
    exit_code        bigint,
    summary          text
);

CREATE INDEX syncs_started ON syncs (started_at, id);
CREATE INDEX syncs_covered ON syncs (covered_until);
