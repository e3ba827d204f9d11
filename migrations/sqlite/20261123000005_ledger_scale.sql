-- Keeps claiming and `status` as fast with millions of calls as with thousands (measured in
-- BENCHMARKS.md, "Ledger growth").
--
-- 1. Claiming walks the pending calls oldest first and skips the ones not due yet without
--    reading their rows: (state, call_start, next_attempt_at) replaces (state, call_start),
--    which it extends for every query that used it.
-- 2. The number of calls in each state is kept in `state_counts` by triggers, so `status`
--    reads six rows instead of counting every call. The table and what reads it are
--    portable SQL; the triggers are SQLite's syntax (a PostgreSQL ledger writes the three
--    as one row-level trigger function, as it writes the attempts key as an identity column).
-- 3. The last successful run is found through an index, not by reading every run, and the
--    recordings the media check flagged through a partial index that holds only them.

CREATE INDEX calls_due ON calls (state, call_start, next_attempt_at);
DROP INDEX calls_state_start;

CREATE INDEX runs_exit_finished ON runs (exit_code, finished_at);
CREATE INDEX calls_media_flagged ON calls (state) WHERE media_note IS NOT NULL;

CREATE TABLE state_counts (
    state TEXT PRIMARY KEY,
    n     BIGINT NOT NULL
);

INSERT INTO state_counts (state, n) VALUES
    ('pending', 0), ('in_progress', 0), ('archived', 0),
    ('failed', 0), ('expired', 0), ('no_recording', 0);

UPDATE state_counts SET n = (SELECT COUNT(*) FROM calls WHERE calls.state = state_counts.state);

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
