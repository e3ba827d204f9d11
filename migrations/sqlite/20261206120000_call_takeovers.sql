-- Callbacks kept for a call a pass holds (src/ledger/takeovers.rs): a callback whose call
-- sync stored takes over that row, but not while a pass holds it (`in_progress`), which
-- would leave the pass's recording under a key the ledger no longer names. The callback's
-- record waits here, keyed by the bill row it takes over, and is applied once no pass holds
-- that row (at the end of every pass, before every sync). Columns as in `calls`.
CREATE TABLE call_takeovers (
    from_uuid    TEXT PRIMARY KEY,
    uuid         TEXT NOT NULL,
    company_code TEXT NOT NULL,
    record_file  TEXT NOT NULL,
    call_start   TEXT,
    billsec      INTEGER,
    raw_json     TEXT NOT NULL,
    bill_id      TEXT,
    notes        TEXT,
    origin       TEXT NOT NULL,
    imported_at  TEXT NOT NULL
);
