-- The archive's Merkle log (issue 19; see src/proof/ and docs/proof-format.md).
--
-- 1. `log_nodes`: the hash (hex) of every perfect subtree of each account's log: `level` 0
--    is a leaf (a manifest line), node (level, idx) covers leaves idx << level onwards. A
--    node never changes once written; every proof is folded from a few of them.
-- 2. Each written manifest, once logged, has the log's size before and after its lines, the
--    root after them, and the checkpoint written beside it in the store, as written (the
--    signed note's text) and who signed it (NULL: written without a key).
-- 3. `checkpoint_stamps`: RFC 3161 time-stamp tokens over each checkpoint, one per
--    time-stamping authority, the DER response base64-encoded, as kept beside the checkpoint.
-- Existing manifests are logged by the next pass, read back from the store, in order.
CREATE TABLE log_nodes (
    account TEXT NOT NULL,
    level   BIGINT NOT NULL,
    idx     BIGINT NOT NULL,
    hash    TEXT NOT NULL,
    PRIMARY KEY (account, level, idx)
) WITHOUT ROWID;

ALTER TABLE manifests ADD COLUMN log_start BIGINT;
ALTER TABLE manifests ADD COLUMN log_size BIGINT;
ALTER TABLE manifests ADD COLUMN log_root TEXT;
ALTER TABLE manifests ADD COLUMN checkpoint_key TEXT;
ALTER TABLE manifests ADD COLUMN checkpoint TEXT;
ALTER TABLE manifests ADD COLUMN checkpoint_signer TEXT;
ALTER TABLE manifests ADD COLUMN logged_at TEXT;

CREATE TABLE checkpoint_stamps (
    account    TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    tsa        TEXT NOT NULL,
    object_key TEXT NOT NULL,
    token      TEXT NOT NULL,
    gen_time   TEXT NOT NULL,
    stamped_at TEXT NOT NULL,
    PRIMARY KEY (account, seq, tsa)
);
