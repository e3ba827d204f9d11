-- `callvault accounts rename OLD NEW` moves an account's rows in one transaction: a call
-- and the rows that refer to it (attempts, held calls, tombstones, search terms) change
-- their account together, so the references to calls are checked at commit when the
-- rename asks for it (`SET CONSTRAINTS ALL DEFERRED`); every other statement still has
-- them checked at once. Changing a constraint's timing does not re-check its rows.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT conrelid::regclass AS tbl, conname
        FROM pg_constraint
        WHERE contype = 'f' AND confrelid = 'calls'::regclass
    LOOP
        EXECUTE format('ALTER TABLE %s ALTER CONSTRAINT %I DEFERRABLE INITIALLY IMMEDIATE',
                       c.tbl, c.conname);
    END LOOP;
END;
$$;
