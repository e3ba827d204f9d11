-- Legal holds and erasure (issue 9, points 2 and 3); the SQLite migration of the same name
-- says what each table is for.
--
-- `calls.state` (and the state counts) may be `erased`: the recording and its sidecar were
-- deleted from the store and the row's personal fields blanked; its tombstone says what
-- went, when, why and by whom.

ALTER TABLE calls DROP CONSTRAINT calls_state_check;
ALTER TABLE calls ADD CONSTRAINT calls_state_check CHECK (state IN
    ('pending', 'in_progress', 'archived', 'failed', 'expired', 'no_recording', 'erased'));
ALTER TABLE state_count_deltas DROP CONSTRAINT state_count_deltas_state_check;
ALTER TABLE state_count_deltas ADD CONSTRAINT state_count_deltas_state_check CHECK (state IN
    ('pending', 'in_progress', 'archived', 'failed', 'expired', 'no_recording', 'erased'));

CREATE TABLE holds (
    id         text COLLATE "C" PRIMARY KEY,
    reason     text NOT NULL,
    placed_by  text NOT NULL,
    placed_at  timestamptz NOT NULL,
    selection  text NOT NULL
);

CREATE TABLE held_calls (
    -- `<hold id>:<call uuid>`: one key to page by (`ledger copy`).
    id             text COLLATE "C" PRIMARY KEY,
    hold_id        text COLLATE "C" NOT NULL REFERENCES holds (id),
    call_uuid      text COLLATE "C" NOT NULL REFERENCES calls (uuid),
    object_hold    text NOT NULL CHECK (object_hold IN ('set', 'unsupported', 'not_archived', 'failed')),
    released_at    timestamptz,
    released_by    text,
    release_reason text,
    UNIQUE (hold_id, call_uuid)
);

CREATE INDEX held_calls_active ON held_calls (call_uuid) WHERE released_at IS NULL;

CREATE TABLE tombstones (
    call_uuid     text COLLATE "C" PRIMARY KEY REFERENCES calls (uuid),
    object_key    text COLLATE "C" NOT NULL,
    sidecar_key   text NOT NULL,
    sha256        text NOT NULL,
    size_bytes    bigint NOT NULL,
    archived_at   timestamptz,
    erased_at     timestamptz NOT NULL,
    reason        text NOT NULL,
    erased_by     text NOT NULL,
    versions_deleted bigint NOT NULL DEFAULT 0,
    manifest_seq  bigint
);

CREATE INDEX tombstones_unlisted ON tombstones (manifest_seq, call_uuid);
