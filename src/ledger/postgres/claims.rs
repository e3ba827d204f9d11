//! PostgreSQL's claim, for many workers at once: the due rows are picked and locked with
//! `FOR UPDATE SKIP LOCKED` (see `crate::ledger::claims`), marked `in_progress` with the
//! claimer's lease, any attempt a killed run left running closed, and each record's attempt
//! started, in one statement: one round trip and one commit, so the rows it locks are held
//! for no longer than the commit (five round trips in a transaction before, the locks held
//! across all of them; BENCHMARKS.md "the ledger alone on PostgreSQL").

use super::PgLedger;
use crate::ledger::claims::{ClaimBatch, due_candidates};
use crate::ledger::sql::{SliceSql, by_slice};
use crate::ledger::{BackendKind, Slice};

/// Both candidate sets are locked (up to twice `$6` rows, for the length of this short
/// statement) and the first `$6` of their union are claimed. Data-modifying `WITH` queries
/// all see the snapshot the statement began with: `closed` ends the attempts left running
/// before it (`$10` their message), never the ones `started` adds.
static CLAIM: SliceSql = SliceSql::new(|| {
    by_slice(|filter| {
        let filter = format!(" AND account = $9{filter}");
        format!(
            "WITH candidates AS ({}),
             picked AS (
                 SELECT uuid FROM candidates ORDER BY call_start ASC NULLS LAST, uuid LIMIT $6),
             claimed AS (
                 UPDATE calls AS c
                 SET state = 'in_progress', lease_owner = $7, lease_until = $8, updated_at = $4,
                     attempts = c.attempts + 1
                 FROM picked WHERE c.account = $9 AND c.uuid = picked.uuid
                 RETURNING c.uuid, c.company_code, c.record_file, c.call_start, c.billsec,
                           c.raw_json, c.bill_id, c.notes, c.origin, c.imported_at,
                           c.attempts - 1 AS attempts),
             closed AS (
                 UPDATE attempts SET outcome = 'interrupted', finished_at = $4, message = $10
                 WHERE account = $9 AND outcome = 'running'
                   AND call_uuid IN (SELECT uuid FROM claimed)),
             started AS (
                 INSERT INTO attempts (account, call_uuid, run_id, started_at, outcome)
                 SELECT $9, uuid, $7, $4, 'running' FROM claimed
                 RETURNING id, call_uuid)
             SELECT claimed.*, started.id AS attempt
             FROM claimed JOIN started ON started.call_uuid = claimed.uuid",
            due_candidates(
                BackendKind::Postgres,
                &filter,
                "uuid, call_start",
                " FOR UPDATE SKIP LOCKED",
                " AND lease_owner <> $7",
            )
        )
    })
});

impl ClaimBatch for PgLedger {
    const STARTS_ATTEMPTS: bool = true;

    fn claim_sql(&self, slice: &Slice) -> &'static str {
        CLAIM.sql(slice)
    }
}
