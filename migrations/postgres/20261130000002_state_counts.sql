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
-- Row-level triggers keep the deltas: insert (+1 for the new state), update of `state` when
-- it changes (-1 old, +1 new) and delete (-1). The two rows an update touches are written
-- in state-name order, so transactions changing states in opposite directions (a claim,
-- pending -> in_progress, and a retry, in_progress -> pending) lock them in the same order.
-- TRUNCATE, which fires no row triggers, empties the deltas.

CREATE TABLE state_count_deltas (
    slot  integer NOT NULL,
    state text NOT NULL CHECK (state IN
              ('pending', 'in_progress', 'archived', 'failed', 'expired', 'no_recording')),
    n     bigint NOT NULL,
    PRIMARY KEY (slot, state)
);

CREATE FUNCTION calls_count_states() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_slot integer := pg_backend_pid() % 64;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO state_count_deltas AS d (slot, state, n)
        VALUES (v_slot, NEW.state, 1)
        ON CONFLICT (slot, state) DO UPDATE SET n = d.n + EXCLUDED.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO state_count_deltas AS d (slot, state, n)
        VALUES (v_slot, OLD.state, -1)
        ON CONFLICT (slot, state) DO UPDATE SET n = d.n + EXCLUDED.n;
    ELSE
        INSERT INTO state_count_deltas AS d (slot, state, n)
        SELECT v_slot, change.state, change.n
        FROM (VALUES (OLD.state, -1), (NEW.state, 1)) AS change (state, n)
        ORDER BY change.state
        ON CONFLICT (slot, state) DO UPDATE SET n = d.n + EXCLUDED.n;
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION calls_count_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM state_count_deltas;
    RETURN NULL;
END;
$$;

CREATE TRIGGER calls_count_insert AFTER INSERT ON calls
    FOR EACH ROW EXECUTE FUNCTION calls_count_states();

CREATE TRIGGER calls_count_update AFTER UPDATE OF state ON calls
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION calls_count_states();

CREATE TRIGGER calls_count_delete AFTER DELETE ON calls
    FOR EACH ROW EXECUTE FUNCTION calls_count_states();

CREATE TRIGGER calls_count_truncate AFTER TRUNCATE ON calls
    FOR EACH STATEMENT EXECUTE FUNCTION calls_count_truncate();

-- Calls already present (none in a new ledger) start in slot 0.
INSERT INTO state_count_deltas (slot, state, n)
SELECT 0, state, count(*) FROM calls GROUP BY state;
