-- Legal holds and erasure (issue 9, points 2 and 3). Portable SQL, times as fixed-width UTC
-- text (see the first migration).
--
-- 1. `calls.state` may be `erased`: the recording and its sidecar were deleted from the store
--    and the row's personal fields blanked; its tombstone says what went, when, why, by whom.
--    SQLite cannot change a CHECK constraint in place, so `calls` is rebuilt (SQLite's
--    documented procedure): the rows copied aside, the table dropped and made again with the
--    same columns in the same order, the rows copied back, the indexes and state-count
--    triggers made again (state counts; search terms, from the access-log migration) and the
--    counts recomputed; the search terms that cascade from `calls` are kept aside and put back. References to `calls` (attempts) are
--    checked at commit (`defer_foreign_keys`), when `calls` holds every row again.
-- 2. `holds`: one row per legal hold (a case): why, who placed it, when, and the selection
--    it was placed with; `held_calls`: the calls it holds, each released on its own (who,
--    when, why). A call is on hold while any of its `held_calls` rows is unreleased.
-- 3. `tombstones`: one row per erased call; `manifest_seq` is NULL until a manifest lists
--    the erasure (the next manifest takes it, as it takes new archived records).

PRAGMA defer_foreign_keys = ON;

CREATE TEMP TABLE calls_copy AS SELECT * FROM calls;
-- Dropping `calls` deletes the search terms that cascade from it: kept aside, put back.
CREATE TEMP TABLE call_terms_copy AS SELECT * FROM call_terms;
DROP TABLE calls;

CREATE TABLE calls (
    uuid            TEXT PRIMARY KEY,
    company_code    TEXT NOT NULL,
    record_file     TEXT NOT NULL DEFAULT '',
    call_start      TEXT,
    billsec         BIGINT,
    raw_json        TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN
                        ('pending', 'in_progress', 'archived', 'failed', 'expired', 'no_recording', 'erased')),
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
    updated_at      TEXT NOT NULL,
    manifest_seq    BIGINT,
    last_verified_at TEXT,
    last_verify_result TEXT,
    media_duration_ms BIGINT,
    media_note      TEXT,
    bill_id         TEXT,
    origin          TEXT NOT NULL DEFAULT 'callback' CHECK (origin IN ('callback', 'bill')),
    bill_seen_at    TEXT,
    notes           TEXT
);

INSERT INTO calls SELECT * FROM temp.calls_copy;
DROP TABLE temp.calls_copy;
INSERT INTO call_terms SELECT * FROM temp.call_terms_copy;
DROP TABLE temp.call_terms_copy;

CREATE INDEX calls_lease ON calls (state, lease_until);
CREATE INDEX calls_manifest ON calls (state, manifest_seq);
CREATE INDEX calls_due ON calls (state, call_start, next_attempt_at);
CREATE INDEX calls_media_flagged ON calls (state) WHERE media_note IS NOT NULL;
CREATE INDEX calls_bill ON calls (company_code, bill_id) WHERE bill_id IS NOT NULL;
CREATE INDEX calls_record_file ON calls (record_file) WHERE record_file <> '';
CREATE INDEX calls_origin ON calls (origin) WHERE origin = 'bill';
-- From the access-log migration (20261130000007): calls listed by start then uuid.
CREATE INDEX calls_start_uuid ON calls (call_start, uuid);
CREATE INDEX calls_company_start ON calls (company_code, call_start, uuid);

CREATE TRIGGER calls_count_insert AFTER INSERT ON calls
BEGIN
    UPDATE state_counts SET n = n + 1 WHERE state = NEW.state;
END;

CREATE TRIGGER calls_count_update AFTER UPDATE OF state ON calls
WHEN OLD.state <> NEW.state
BEGIN
    UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
    UPDATE state_counts SET n = n + 1 WHERE state = NEW.state;
END;

CREATE TRIGGER calls_count_delete AFTER DELETE ON calls
BEGIN
    UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
END;

-- From the access-log migration (20261130000007): a call's search terms are rewritten when
-- it is new or its record or start changes (an erasure blanks the record: its terms go).
CREATE TRIGGER calls_terms_insert AFTER INSERT ON calls
BEGIN
    INSERT OR IGNORE INTO call_terms_stale (uuid) VALUES (NEW.uuid);
END;

CREATE TRIGGER calls_terms_update AFTER UPDATE OF raw_json, call_start ON calls
WHEN OLD.raw_json IS NOT NEW.raw_json OR OLD.call_start IS NOT NEW.call_start
BEGIN
    INSERT OR IGNORE INTO call_terms_stale (uuid) VALUES (NEW.uuid);
END;

INSERT INTO state_counts (state, n) VALUES ('erased', 0);
UPDATE state_counts SET n = (SELECT COUNT(*) FROM calls WHERE calls.state = state_counts.state);

CREATE TABLE holds (
    id         TEXT PRIMARY KEY,
    reason     TEXT NOT NULL,
    placed_by  TEXT NOT NULL,
    placed_at  TEXT NOT NULL,
    selection  TEXT NOT NULL
);

CREATE TABLE held_calls (
    -- `<hold id>:<call uuid>`: one key to page by (`ledger copy`).
    id             TEXT PRIMARY KEY,
    hold_id        TEXT NOT NULL REFERENCES holds (id),
    call_uuid      TEXT NOT NULL REFERENCES calls (uuid),
    -- What the store did with the object-level legal hold: 'set', 'unsupported' (a store
    -- without the Object Lock API: the ledger hold alone applies), 'not_archived' (no object
    -- yet: the ledger hold alone) or 'failed' (the store did not answer; run `hold` again).
    object_hold    TEXT NOT NULL CHECK (object_hold IN ('set', 'unsupported', 'not_archived', 'failed')),
    released_at    TEXT,
    released_by    TEXT,
    release_reason TEXT,
    UNIQUE (hold_id, call_uuid)
);

-- "Is this call on hold?" and the erasure's check.
CREATE INDEX held_calls_active ON held_calls (call_uuid) WHERE released_at IS NULL;

CREATE TABLE tombstones (
    call_uuid     TEXT PRIMARY KEY REFERENCES calls (uuid),
    object_key    TEXT NOT NULL,
    sidecar_key   TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    archived_at   TEXT,
    erased_at     TEXT NOT NULL,
    reason        TEXT NOT NULL,
    erased_by     TEXT NOT NULL,
    versions_deleted BIGINT NOT NULL DEFAULT 0,
    manifest_seq  BIGINT
);

CREATE INDEX tombstones_unlisted ON tombstones (manifest_seq);
