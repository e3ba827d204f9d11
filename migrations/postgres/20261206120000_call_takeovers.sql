-- Callbacks kept for a call a pass holds (src/ledger/takeovers.rs): a callback whose call
-- sync stored takes over that row, but not while a pass holds it (`in_progress`), which
-- would leave the pass's recording under a key the ledger no longer names. The callback's
-- record waits here, keyed by the bill row it takes over, and is applied once no pass holds
-- that row (at the end of every pass, before every sync). Columns as in `calls`.
CREATE TABLE call_takeovers (
    from_uuid    text COLLATE "C" PRIMARY KEY,
    uuid         text COLLATE "C" NOT NULL,
    company_code text NOT NULL,
    record_file  text NOT NULL,
    call_start   timestamptz,
    billsec      bigint,
    raw_json     text NOT NULL,
    bill_id      text,
    notes        text,
    origin       text NOT NULL,
    imported_at  timestamptz NOT NULL
);
