-- The audit trail: which manifest lists each archived record, the manifest chain itself,
-- the last read-back of each object, and one row per `callvault verify`.
-- Portable SQL, times as fixed-width UTC text (see the first migration).

-- NULL while an archived record is in no manifest yet; the next manifest takes it.
ALTER TABLE calls ADD COLUMN manifest_seq BIGINT;
-- When `verify` last read the object back, and what it found (ok, missing, changed, unreadable).
ALTER TABLE calls ADD COLUMN last_verified_at TEXT;
ALTER TABLE calls ADD COLUMN last_verify_result TEXT;

CREATE INDEX calls_manifest ON calls (state, manifest_seq);

-- The chain: manifest `seq` names the SHA-256 of manifest `seq - 1`. At most one row is
-- `writing` (the chain head being written, held by `owner` until `claimed_until`).
CREATE TABLE manifests (
    seq             BIGINT PRIMARY KEY,
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
    written_at      TEXT
);

CREATE TABLE verifications (
    id          TEXT PRIMARY KEY,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    scope       TEXT NOT NULL,
    checked     BIGINT NOT NULL DEFAULT 0,
    problems    BIGINT NOT NULL DEFAULT 0,
    summary     TEXT
);
