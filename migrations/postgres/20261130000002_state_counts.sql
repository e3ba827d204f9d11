-- The number of calls in each state, for `status` and `/metrics`, without counting calls and
-- without a hot row.
--
-- SQLite keeps one row per state (`state_counts`) that every state change updates: fine with
-- one writer at a time, but on PostgreSQL every claim and settlement of every worker would
-- queue on the same six rows. Here each writer adds its changes to its own rows instead:
-- (slot, state) with slot = the server process id modulo 64. A connection runs one
-- transaction at a time, so two transactions meet on a row only when their connections'
-- process ids fall in the same slot. The count of a state is the sum of its slots: at most
-- 64 x 6 rows to read, whether the ledger holds ten thousand calls or ten million. A slot's
-- value may be negative (one connection imports a call, another settles it); only the sum
-- means anything.
--
-- The deltas are written by statement-level triggers that read the statement's transition
-- tables: one upsert per state a statement changes, in state-name order (so a claim,
-- pending -> in_progress, and a retry, in_progress -> pending, lock their rows in the same
-- order). Row-level triggers were measured and refused: every row upserts the same delta
-- row again within one transaction, and each upsert must step over the versions the earlier
-- ones left, so the cost grows with the square of the rows a statement touches (a 1,000-row
-- claim took 146 ms instead of 15; a 20,000-row import 3 s instead of 0.2; a 1,000,000-row
-- load did not finish in 13 minutes). Statement-level, both cost what they cost without
-- counting.
--
-- An update is counted by joining the old and new rows on `uuid` (the key, which nothing
-- updates); only rows whose state changed count. TRUNCATE, which has no transition tables,
-- empties the deltas.

CREATE TABLE state_count_deltas (
    slot  integer NOT NULL,
    state text NOT NULL CHECK (state IN
              ('pending', 'in_progress', 'archived', 'failed', 'expired', 'no_recording')),
    n     bigint NOT NULL,
    PRIMARY KEY (slot, state)
);

CREATE FUNCTION calls_count_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO state_count_deltas AS d (slot, state, n)
    SELECT pg_backend_pid() % 64, inserted.state, count(*)
    FROM new_calls AS inserted
    GROUP BY inserted.state
    ORDER BY inserted.state
    ON CONFLICT (slot, state) DO UPDATE SET n = d.n + EXCLUDED.n;
    RETURN NULL;
END;
$$;

CREATE FUNCTION calls_count_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO state_count_deltas AS d (slot, state, n)
    SELECT pg_backend_pid() % 64, change.state, sum(change.n)
    FROM old_calls AS before
    JOIN new_calls AS after ON after.uuid = before.uuid AND after.state <> before.state
    CROSS JOIN LATERAL (VALUES (before.state, -1), (after.state, 1)) AS change (state, n)
    GROUP BY change.state
    HAVING sum(change.n) <> 0
    ORDER BY change.state
    ON CONFLICT (slot, state) DO UPDATE SET n = d.n + EXCLUDED.n;
    RETURN NULL;
END;
$$;

CREATE FUNCTION calls_count_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO state_count_deltas AS d (slot, state, n)
    SELECT pg_backend_pid() % 64, deleted.state, -count(*)
    FROM old_calls AS deleted
    GROUP BY deleted.state
    ORDER BY deleted.state
    ON CONFLICT (slot, state) DO UPDATE SET n = d.n + EXCLUDED.n;
    RETURN NULL;
END;
$$;

CREATE FUNCTION calls_count_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM state_count_deltas;
    RETURN NULL;
END;
$$;

CREATE TRIGGER calls_count_insert AFTER INSERT ON calls
    REFERENCING NEW TABLE AS new_calls
    FOR EACH STATEMENT EXECUTE FUNCTION calls_count_inserted();

CREATE TRIGGER calls_count_update AFTER UPDATE ON calls
    REFERENCING OLD TABLE AS old_calls NEW TABLE AS new_calls
    FOR EACH STATEMENT EXECUTE FUNCTION calls_count_updated();

CREATE TRIGGER calls_count_delete AFTER DELETE ON calls
    REFERENCING OLD TABLE AS old_calls
    FOR EACH STATEMENT EXECUTE FUNCTION calls_count_deleted();

CREATE TRIGGER calls_count_truncate AFTER TRUNCATE ON calls
    FOR EACH STATEMENT EXECUTE FUNCTION calls_count_truncated();

-- Calls already present (none in a new ledger) start in slot 0.
INSERT INTO state_count_deltas (slot, state, n)
SELECT 0, state, count(*) FROM calls GROUP BY state;
