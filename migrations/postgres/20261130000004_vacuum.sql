-- Claims and settlements update every call several times on its way to `archived`, and
-- each update leaves a dead entry in the indexes a claim walks (`calls_due`,
-- `calls_lease`). With PostgreSQL's default autovacuum thresholds (20% of the table) a
-- table of a million calls waits for some 200,000 dead rows before it is vacuumed, and
-- every claim meanwhile reads past them (measured in BENCHMARKS.md: hundreds of buffers per
-- claimed record instead of a handful). Vacuum and analyze `calls` after a fixed number of
-- changes instead, whatever the table's size, so a long backfill keeps its indexes lean.
ALTER TABLE calls SET (
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 20000,
    autovacuum_analyze_scale_factor = 0.0,
    autovacuum_analyze_threshold = 20000,
    autovacuum_vacuum_cost_delay = 0
);

-- Attempts are only ever inserted (and ended once): analyze them on the same footing.
ALTER TABLE attempts SET (
    autovacuum_vacuum_insert_scale_factor = 0.0,
    autovacuum_vacuum_insert_threshold = 20000,
    autovacuum_analyze_scale_factor = 0.0,
    autovacuum_analyze_threshold = 20000
);
