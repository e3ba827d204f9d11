-- What `status` and each pass read, by index, whatever the ledger's age (issue 20: `status`
-- at a million calls took 2.6 times as long as at ten thousand).
--
-- 1. The runs and the syncs of one account: the last one, the last successful one, and how
--    far sync has covered. The indexes from before accounts (issue 18) led with the time or
--    the exit code, so the last run was a scan of every run and a sort.
-- 2. The Merkle log's figures (issue 19), from partial indexes read alone: the logged
--    manifests (the log's size, the checkpoints, those written without a key), the written
--    ones not logged yet (what the next pass logs, a few at most), and the checkpoints
--    without a time-stamp. Before, each figure read every manifest of the account,
--    checkpoint text and all, and the last one looked up the tokens of every checkpoint.
--    `stamped_at` is when a checkpoint's first token was recorded (set with the token).
-- 3. The archived records no manifest lists yet (each pass puts them in its manifest). The
--    planner cannot know that nearly every archived record has a manifest (it multiplies
--    the share of archived rows by the share without one, 172,000 of a million), so it
--    read the whole table for them (0.3-0.7 s a pass at a million calls). This index holds
--    just those records; SQLite reads them as a range of `calls_manifest`.
DROP INDEX runs_started;
CREATE INDEX runs_started ON runs (account, started_at, id);
DROP INDEX runs_exit_finished;
CREATE INDEX runs_succeeded ON runs (account, finished_at) WHERE exit_code = 0;
DROP INDEX syncs_started;
CREATE INDEX syncs_started ON syncs (account, started_at, id);
DROP INDEX syncs_covered;
CREATE INDEX syncs_covered ON syncs (account, covered_until);
CREATE INDEX syncs_completed ON syncs (account, finished_at) WHERE status = 'completed';

CREATE INDEX manifests_logged ON manifests (account, log_size, checkpoint_signer)
    WHERE log_size IS NOT NULL;
CREATE INDEX manifests_unlogged ON manifests (account, seq)
    WHERE state = 'written' AND log_size IS NULL;

ALTER TABLE manifests ADD COLUMN stamped_at TIMESTAMPTZ;
UPDATE manifests SET stamped_at = (
    SELECT min(s.stamped_at) FROM checkpoint_stamps s
    WHERE s.account = manifests.account AND s.seq = manifests.seq);
CREATE INDEX manifests_unstamped ON manifests (account, log_size, logged_at)
    WHERE log_size IS NOT NULL AND stamped_at IS NULL;

CREATE INDEX calls_unlisted ON calls (account, uuid) WHERE state = 'archived' AND manifest_seq IS NULL;
