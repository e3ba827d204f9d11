-- `status` counts the calls a sync found and the calls imported with notes (its sync
-- figures): partial indexes make both counts read only those rows, not every call.
CREATE INDEX IF NOT EXISTS calls_from_bills ON calls (uuid) WHERE origin = 'bill';
CREATE INDEX IF NOT EXISTS calls_noted ON calls (uuid) WHERE notes IS NOT NULL;
