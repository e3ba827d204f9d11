-- A call is identified by (account, uuid) (issue 18; docs/accounts.md): two provider
-- accounts may report the same uuid, and they are two calls. The keys and references by a
-- call's uuid take the account in; indexes lead with it, since every statement names one;
-- the per-state counts are kept per account. Rows keep the account the previous migration
-- gave them (`default` for a ledger made before accounts); from here on every statement
-- names the account, so the columns lose their default.

ALTER TABLE calls DROP CONSTRAINT calls_pkey CASCADE;
ALTER TABLE calls ADD PRIMARY KEY (account, uuid);

ALTER TABLE attempts
    ADD FOREIGN KEY (account, call_uuid) REFERENCES calls (account, uuid);
ALTER TABLE held_calls
    ADD FOREIGN KEY (account, call_uuid) REFERENCES calls (account, uuid);
ALTER TABLE tombstones DROP CONSTRAINT tombstones_pkey;
ALTER TABLE tombstones ADD PRIMARY KEY (account, call_uuid);
ALTER TABLE tombstones
    ADD FOREIGN KEY (account, call_uuid) REFERENCES calls (account, uuid);
ALTER TABLE call_terms DROP CONSTRAINT call_terms_pkey;
ALTER TABLE call_terms ADD PRIMARY KEY (account, uuid, field, term);
ALTER TABLE call_terms
    ADD FOREIGN KEY (account, uuid) REFERENCES calls (account, uuid) ON DELETE CASCADE;
ALTER TABLE call_terms_stale DROP CONSTRAINT call_terms_stale_pkey;
ALTER TABLE call_terms_stale ADD PRIMARY KEY (account, uuid);
ALTER TABLE call_takeovers DROP CONSTRAINT call_takeovers_pkey;
ALTER TABLE call_takeovers ADD PRIMARY KEY (account, from_uuid);
ALTER TABLE manifests DROP CONSTRAINT manifests_pkey;
ALTER TABLE manifests ADD PRIMARY KEY (account, seq);

ALTER TABLE calls ALTER COLUMN account DROP DEFAULT;
ALTER TABLE attempts ALTER COLUMN account DROP DEFAULT;
ALTER TABLE call_terms ALTER COLUMN account DROP DEFAULT;
ALTER TABLE call_terms_stale ALTER COLUMN account DROP DEFAULT;
ALTER TABLE call_takeovers ALTER COLUMN account DROP DEFAULT;
ALTER TABLE held_calls ALTER COLUMN account DROP DEFAULT;
ALTER TABLE tombstones ALTER COLUMN account DROP DEFAULT;
ALTER TABLE manifests ALTER COLUMN account DROP DEFAULT;

DROP INDEX calls_due;
CREATE INDEX calls_due ON calls (account, state, call_start, uuid, next_attempt_at);
DROP INDEX calls_lease;
CREATE INDEX calls_lease ON calls (account, state, lease_until);
DROP INDEX calls_manifest;
CREATE INDEX calls_manifest ON calls (account, state, manifest_seq, uuid);
DROP INDEX calls_media_flagged;
CREATE INDEX calls_media_flagged ON calls (account, state) WHERE media_note IS NOT NULL;
DROP INDEX calls_bill;
CREATE INDEX calls_bill ON calls (account, company_code, bill_id) WHERE bill_id IS NOT NULL;
DROP INDEX calls_record_file;
CREATE INDEX calls_record_file ON calls (account, record_file) WHERE record_file <> '';
DROP INDEX calls_origin;
CREATE INDEX calls_origin ON calls (account, origin) WHERE origin = 'bill';
DROP INDEX calls_start_uuid;
CREATE INDEX calls_start_uuid ON calls (account, call_start, uuid);
DROP INDEX calls_company_start;
CREATE INDEX calls_company_start ON calls (account, company_code, call_start, uuid);
DROP INDEX calls_from_bills;
CREATE INDEX calls_from_bills ON calls (account, uuid) WHERE origin = 'bill';
DROP INDEX calls_noted;
CREATE INDEX calls_noted ON calls (account, uuid) WHERE notes IS NOT NULL;
DROP INDEX attempts_call;
CREATE INDEX attempts_call ON attempts (account, call_uuid, started_at);
DROP INDEX call_terms_search;
CREATE INDEX call_terms_search ON call_terms (account, field, term, call_start, uuid);
DROP INDEX held_calls_active;
CREATE INDEX held_calls_active ON held_calls (account, call_uuid) WHERE released_at IS NULL;
DROP INDEX tombstones_unlisted;
CREATE INDEX tombstones_unlisted ON tombstones (account, manifest_seq, call_uuid);
DROP INDEX manifests_writing;
CREATE INDEX manifests_writing ON manifests (account, seq) WHERE state = 'writing';
DROP INDEX access_log_calls_uuid;
CREATE INDEX access_log_calls_uuid ON access_log_calls (account, call_uuid, entry_id);

-- The per-state counts, per account: the deltas are counted again from the calls.
DELETE FROM state_count_deltas;
ALTER TABLE state_count_deltas ADD COLUMN account text COLLATE "C" NOT NULL;
ALTER TABLE state_count_deltas DROP CONSTRAINT state_count_deltas_pkey;
ALTER TABLE state_count_deltas ADD PRIMARY KEY (slot, account, state);
INSERT INTO state_count_deltas (slot, account, state, n)
SELECT 0, account, state, count(*) FROM calls GROUP BY account, state;

CREATE OR REPLACE FUNCTION calls_count_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO state_count_deltas AS d (slot, account, state, n)
    SELECT pg_backend_pid() % 64, inserted.account, inserted.state, count(*)
    FROM new_calls AS inserted
    GROUP BY inserted.account, inserted.state
    ORDER BY inserted.account, inserted.state
    ON CONFLICT (slot, account, state) DO UPDATE SET n = d.n + EXCLUDED.n;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION calls_count_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO state_count_deltas AS d (slot, account, state, n)
    SELECT pg_backend_pid() % 64, after.account, change.state, sum(change.n)
    FROM old_calls AS before
    JOIN new_calls AS after
      ON after.account = before.account AND after.uuid = before.uuid
     AND after.state <> before.state
    CROSS JOIN LATERAL (VALUES (before.state, -1), (after.state, 1)) AS change (state, n)
    GROUP BY after.account, change.state
    HAVING sum(change.n) <> 0
    ORDER BY after.account, change.state
    ON CONFLICT (slot, account, state) DO UPDATE SET n = d.n + EXCLUDED.n;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION calls_count_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO state_count_deltas AS d (slot, account, state, n)
    SELECT pg_backend_pid() % 64, deleted.account, deleted.state, -count(*)
    FROM old_calls AS deleted
    GROUP BY deleted.account, deleted.state
    ORDER BY deleted.account, deleted.state
    ON CONFLICT (slot, account, state) DO UPDATE SET n = d.n + EXCLUDED.n;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION calls_terms_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO call_terms_stale (account, uuid)
    SELECT inserted.account, inserted.uuid FROM new_calls AS inserted
    ON CONFLICT (account, uuid) DO NOTHING;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION calls_terms_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO call_terms_stale (account, uuid)
    SELECT after.account, after.uuid
    FROM old_calls AS before
    JOIN new_calls AS after ON after.account = before.account AND after.uuid = before.uuid
    WHERE after.raw_json IS DISTINCT FROM before.raw_json
       OR after.call_start IS DISTINCT FROM before.call_start
    ON CONFLICT (account, uuid) DO NOTHING;
    RETURN NULL;
END;
$$;
