-- A call is identified by (account, uuid) (issue 18; docs/accounts.md): two provider
-- accounts may report the same uuid, and they are two calls. SQLite cannot change a
-- primary key in place, so each table keyed or referenced by a call's uuid is built anew
-- with the account in its key: the old table is renamed away (its children's references
-- follow it), the new one created under the old name and filled, and the old ones dropped,
-- children first. Indexes lead with the account, since every statement names one; the
-- per-state counts are kept per account. Rows keep the account the previous migration
-- gave them (`default` for a ledger made before accounts).

ALTER TABLE calls RENAME TO calls_v1;
ALTER TABLE attempts RENAME TO attempts_v1;
ALTER TABLE call_terms RENAME TO call_terms_v1;
ALTER TABLE call_terms_stale RENAME TO call_terms_stale_v1;
ALTER TABLE call_takeovers RENAME TO call_takeovers_v1;
ALTER TABLE held_calls RENAME TO held_calls_v1;
ALTER TABLE tombstones RENAME TO tombstones_v1;
ALTER TABLE manifests RENAME TO manifests_v1;
ALTER TABLE state_counts RENAME TO state_counts_v1;

CREATE TABLE calls (
    account         TEXT NOT NULL,
    uuid            TEXT NOT NULL,
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
    notes           TEXT,
    PRIMARY KEY (account, uuid)
);

INSERT INTO calls (account, uuid, company_code, record_file, call_start, billsec, raw_json,
                   state, attempts, next_attempt_at, lease_owner, lease_until, object_key,
                   size_bytes, sha256, content_type, etag, object_version, archived_at,
                   last_error_code, last_error, imported_at, updated_at, manifest_seq,
                   last_verified_at, last_verify_result, media_duration_ms, media_note,
                   bill_id, origin, bill_seen_at, notes)
SELECT account, uuid, company_code, record_file, call_start, billsec, raw_json,
       state, attempts, next_attempt_at, lease_owner, lease_until, object_key,
       size_bytes, sha256, content_type, etag, object_version, archived_at,
       last_error_code, last_error, imported_at, updated_at, manifest_seq,
       last_verified_at, last_verify_result, media_duration_ms, media_note,
       bill_id, origin, bill_seen_at, notes
FROM calls_v1;

CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY,
    account     TEXT NOT NULL,
    call_uuid   TEXT NOT NULL,
    run_id      TEXT NOT NULL REFERENCES runs (id),
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT NOT NULL,
    error_code  TEXT,
    message     TEXT,
    bytes       BIGINT NOT NULL DEFAULT 0,
    FOREIGN KEY (account, call_uuid) REFERENCES calls (account, uuid)
);
INSERT INTO attempts (id, account, call_uuid, run_id, started_at, finished_at, outcome,
                      error_code, message, bytes)
SELECT id, account, call_uuid, run_id, started_at, finished_at, outcome, error_code, message,
       bytes
FROM attempts_v1;

CREATE TABLE call_terms (
    account    TEXT NOT NULL,
    uuid       TEXT NOT NULL,
    field      TEXT NOT NULL CHECK (field IN ('number', 'extension', 'agent')),
    term       TEXT NOT NULL,
    call_start TEXT,
    PRIMARY KEY (account, uuid, field, term),
    FOREIGN KEY (account, uuid) REFERENCES calls (account, uuid) ON DELETE CASCADE
) WITHOUT ROWID;
INSERT INTO call_terms (account, uuid, field, term, call_start)
SELECT account, uuid, field, term, call_start FROM call_terms_v1;

CREATE TABLE call_terms_stale (
    account TEXT NOT NULL,
    uuid    TEXT NOT NULL,
    PRIMARY KEY (account, uuid)
) WITHOUT ROWID;
INSERT INTO call_terms_stale (account, uuid) SELECT account, uuid FROM call_terms_stale_v1;

CREATE TABLE call_takeovers (
    account      TEXT NOT NULL,
    from_uuid    TEXT NOT NULL,
    uuid         TEXT NOT NULL,
    company_code TEXT NOT NULL,
    record_file  TEXT NOT NULL,
    call_start   TEXT,
    billsec      INTEGER,
    raw_json     TEXT NOT NULL,
    bill_id      TEXT,
    notes        TEXT,
    origin       TEXT NOT NULL,
    imported_at  TEXT NOT NULL,
    PRIMARY KEY (account, from_uuid)
);
INSERT INTO call_takeovers (account, from_uuid, uuid, company_code, record_file, call_start,
                            billsec, raw_json, bill_id, notes, origin, imported_at)
SELECT account, from_uuid, uuid, company_code, record_file, call_start, billsec, raw_json,
       bill_id, notes, origin, imported_at
FROM call_takeovers_v1;

CREATE TABLE held_calls (
    id             TEXT PRIMARY KEY,
    hold_id        TEXT NOT NULL REFERENCES holds (id),
    account        TEXT NOT NULL,
    call_uuid      TEXT NOT NULL,
    object_hold    TEXT NOT NULL CHECK (object_hold IN ('set', 'unsupported', 'not_archived', 'failed')),
    released_at    TEXT,
    released_by    TEXT,
    release_reason TEXT,
    UNIQUE (hold_id, call_uuid),
    FOREIGN KEY (account, call_uuid) REFERENCES calls (account, uuid)
);
INSERT INTO held_calls (id, hold_id, account, call_uuid, object_hold, released_at, released_by,
                        release_reason)
SELECT id, hold_id, account, call_uuid, object_hold, released_at, released_by, release_reason
FROM held_calls_v1;

CREATE TABLE tombstones (
    account       TEXT NOT NULL,
    call_uuid     TEXT NOT NULL,
    object_key    TEXT NOT NULL,
    sidecar_key   TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    archived_at   TEXT,
    erased_at     TEXT NOT NULL,
    reason        TEXT NOT NULL,
    erased_by     TEXT NOT NULL,
    versions_deleted BIGINT NOT NULL DEFAULT 0,
    manifest_seq  BIGINT,
    PRIMARY KEY (account, call_uuid),
    FOREIGN KEY (account, call_uuid) REFERENCES calls (account, uuid)
);
INSERT INTO tombstones (account, call_uuid, object_key, sidecar_key, sha256, size_bytes,
                        archived_at, erased_at, reason, erased_by, versions_deleted, manifest_seq)
SELECT account, call_uuid, object_key, sidecar_key, sha256, size_bytes, archived_at, erased_at,
       reason, erased_by, versions_deleted, manifest_seq
FROM tombstones_v1;

CREATE TABLE manifests (
    account         TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    object_key      TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('writing', 'written')),
    run_id          TEXT NOT NULL,
    owner           TEXT,
    claimed_until   TEXT,
    previous_key    TEXT,
    previous_sha256 TEXT,
    entries         BIGINT NOT NULL,
    sha256          TEXT,
    size_bytes      BIGINT,
    created_at      TEXT NOT NULL,
    written_at      TEXT,
    PRIMARY KEY (account, seq)
);
INSERT INTO manifests (account, seq, object_key, state, run_id, owner, claimed_until,
                       previous_key, previous_sha256, entries, sha256, size_bytes, created_at,
                       written_at)
SELECT account, seq, object_key, state, run_id, owner, claimed_until, previous_key,
       previous_sha256, entries, sha256, size_bytes, created_at, written_at
FROM manifests_v1;

CREATE TABLE state_counts (
    account TEXT NOT NULL,
    state   TEXT NOT NULL,
    n       BIGINT NOT NULL,
    PRIMARY KEY (account, state)
) WITHOUT ROWID;
INSERT INTO state_counts (account, state, n)
SELECT account, state, count(*) FROM calls GROUP BY account, state;

DROP TABLE attempts_v1;
DROP TABLE call_terms_v1;
DROP TABLE call_terms_stale_v1;
DROP TABLE call_takeovers_v1;
DROP TABLE held_calls_v1;
DROP TABLE tombstones_v1;
DROP TABLE manifests_v1;
DROP TABLE state_counts_v1;
DROP TABLE calls_v1;

-- The indexes of the tables built anew, each led by the account.
CREATE INDEX calls_lease ON calls (account, state, lease_until);
CREATE INDEX calls_manifest ON calls (account, state, manifest_seq);
CREATE INDEX calls_due ON calls (account, state, call_start, uuid, next_attempt_at);
CREATE INDEX calls_media_flagged ON calls (account, state) WHERE media_note IS NOT NULL;
CREATE INDEX calls_bill ON calls (account, company_code, bill_id) WHERE bill_id IS NOT NULL;
CREATE INDEX calls_record_file ON calls (account, record_file) WHERE record_file <> '';
CREATE INDEX calls_origin ON calls (account, origin) WHERE origin = 'bill';
CREATE INDEX calls_start_uuid ON calls (account, call_start, uuid);
CREATE INDEX calls_company_start ON calls (account, company_code, call_start, uuid);
CREATE INDEX calls_from_bills ON calls (account, uuid) WHERE origin = 'bill';
CREATE INDEX calls_noted ON calls (account, uuid) WHERE notes IS NOT NULL;
CREATE INDEX attempts_call ON attempts (account, call_uuid, started_at);
CREATE INDEX attempts_run ON attempts (run_id);
CREATE INDEX call_terms_search ON call_terms (account, field, term, call_start, uuid);
CREATE INDEX held_calls_active ON held_calls (account, call_uuid) WHERE released_at IS NULL;
CREATE INDEX tombstones_unlisted ON tombstones (account, manifest_seq);
DROP INDEX access_log_calls_uuid;
CREATE INDEX access_log_calls_uuid ON access_log_calls (account, call_uuid, entry_id);

-- The counts per account and state, and the search-term queue, kept by triggers as before.
CREATE TRIGGER calls_count_insert AFTER INSERT ON calls
BEGIN
    INSERT INTO state_counts (account, state, n) VALUES (NEW.account, NEW.state, 1)
    ON CONFLICT (account, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER calls_count_update AFTER UPDATE OF state ON calls
WHEN OLD.state <> NEW.state
BEGIN
    UPDATE state_counts SET n = n - 1 WHERE account = OLD.account AND state = OLD.state;
    INSERT INTO state_counts (account, state, n) VALUES (NEW.account, NEW.state, 1)
    ON CONFLICT (account, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER calls_count_delete AFTER DELETE ON calls
BEGIN
    UPDATE state_counts SET n = n - 1 WHERE account = OLD.account AND state = OLD.state;
END;

CREATE TRIGGER calls_terms_insert AFTER INSERT ON calls
BEGIN
    INSERT OR IGNORE INTO call_terms_stale (account, uuid) VALUES (NEW.account, NEW.uuid);
END;

CREATE TRIGGER calls_terms_update AFTER UPDATE OF raw_json, call_start ON calls
WHEN OLD.raw_json IS NOT NEW.raw_json OR OLD.call_start IS NOT NEW.call_start
BEGIN
    INSERT OR IGNORE INTO call_terms_stale (account, uuid) VALUES (NEW.account, NEW.uuid);
END;
