-- Finding calls (`callvault find`, the web page) and recording who looked (`access_log`).
-- Portable SQL, times as fixed-width UTC text (see the first migration); the triggers are
-- SQLite's syntax (the PostgreSQL ledger writes them as trigger functions).
--
-- 1. Search terms. The numbers a compliance officer searches by (caller, callee, the
--    displayed number), the extension and the agent (`crmid`, `userid`) live only in the
--    callback's raw JSON, which may not even be strict JSON (the provider leaves commas
--    out). callvault reads them in Rust with the callback's lenient parser and keeps one
--    row per (call, field, term) in `call_terms`. A number is kept with its digits
--    REVERSED, so "ends with 13692" is the index range `term >= '29631' AND term < '29632'`
--    instead of a `LIKE '%13692'` that reads every row. `call_start` is copied in so that a
--    search by agent or extension walks the index in call order and stops after one page.
-- 2. The terms are derived data: a trigger queues every call inserted, or whose raw record
--    or start changes, in `call_terms_stale`; callvault rewrites the queued calls' terms
--    before it searches (src/ledger/search.rs). Whatever writes calls (import, sync, ledger
--    copy, a bulk load) therefore never leaves the index behind. The calls already in the
--    ledger are queued here.
-- 3. Calls are listed by call start then uuid: the company and plain date-range searches
--    walk (company_code, call_start, uuid) and (call_start, uuid) in that order.
-- 4. `access_log`: one row per find, get, link, page view, play, download, login. Which
--    calls an entry touched are rows of `access_log_calls` (indexed by call, so "who
--    looked at this call" reads only its entries). Both tables are append-only: triggers
--    refuse UPDATE and DELETE.

CREATE TABLE call_terms (
    uuid       TEXT NOT NULL REFERENCES calls (uuid) ON DELETE CASCADE,
    field      TEXT NOT NULL CHECK (field IN ('number', 'extension', 'agent')),
    term       TEXT NOT NULL,
    call_start TEXT,
    PRIMARY KEY (uuid, field, term)
) WITHOUT ROWID;

CREATE INDEX call_terms_search ON call_terms (field, term, call_start, uuid);

CREATE TABLE call_terms_stale (
    uuid TEXT PRIMARY KEY
) WITHOUT ROWID;

INSERT INTO call_terms_stale (uuid) SELECT uuid FROM calls;

CREATE TRIGGER calls_terms_insert AFTER INSERT ON calls
BEGIN
    INSERT OR IGNORE INTO call_terms_stale (uuid) VALUES (NEW.uuid);
END;

CREATE TRIGGER calls_terms_update AFTER UPDATE OF raw_json, call_start ON calls
WHEN OLD.raw_json IS NOT NEW.raw_json OR OLD.call_start IS NOT NEW.call_start
BEGIN
    INSERT OR IGNORE INTO call_terms_stale (uuid) VALUES (NEW.uuid);
END;

CREATE INDEX calls_start_uuid ON calls (call_start, uuid);
-- It does what calls_start did (sync's completeness report), in call-then-uuid order.
DROP INDEX calls_start;
CREATE INDEX calls_company_start ON calls (company_code, call_start, uuid);

CREATE TABLE access_log (
    id     INTEGER PRIMARY KEY,
    at     TEXT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    source TEXT NOT NULL,
    reason TEXT,
    query  TEXT,
    calls  BIGINT NOT NULL
);

CREATE INDEX access_log_at ON access_log (at);
CREATE INDEX access_log_actor ON access_log (actor, at);

CREATE TABLE access_log_calls (
    id        INTEGER PRIMARY KEY,
    entry_id  BIGINT NOT NULL REFERENCES access_log (id),
    call_uuid TEXT NOT NULL
);

CREATE INDEX access_log_calls_uuid ON access_log_calls (call_uuid, entry_id);
CREATE INDEX access_log_calls_entry ON access_log_calls (entry_id);

CREATE TRIGGER access_log_no_update BEFORE UPDATE ON access_log
BEGIN
    SELECT RAISE(ABORT, 'the access log is append-only: entries cannot be changed');
END;

CREATE TRIGGER access_log_no_delete BEFORE DELETE ON access_log
BEGIN
    SELECT RAISE(ABORT, 'the access log is append-only: entries cannot be deleted');
END;

CREATE TRIGGER access_log_calls_no_update BEFORE UPDATE ON access_log_calls
BEGIN
    SELECT RAISE(ABORT, 'the access log is append-only: entries cannot be changed');
END;

CREATE TRIGGER access_log_calls_no_delete BEFORE DELETE ON access_log_calls
BEGIN
    SELECT RAISE(ABORT, 'the access log is append-only: entries cannot be deleted');
END;
