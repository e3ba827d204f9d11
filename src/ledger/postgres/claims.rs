//! PostgreSQL's claim, for many workers at once: the due rows are picked and locked with
//! `FOR UPDATE SKIP LOCKED` (see `crate::ledger::claims`), then marked `in_progress` with
//! the claimer's lease, in one statement.

use super::PgLedger;
use crate::ledger::claims::{ClaimBatch, due_candidates};
use crate::ledger::sql::{SliceSql, by_slice};
use crate::ledger::{BackendKind, Slice};

/// Both candidate sets are locked (up to twice `$6` rows, for the length of this short
/// transaction) and the first `$6` of their union are claimed.
static CLAIM: SliceSql = SliceSql::new(|| {
    by_slice(|filter| {
        let filter = format!(" AND account = $9{filter}");
        format!(
            "WITH candidates AS ({}),
             picked AS (
                 SELECT uuid FROM candidates ORDER BY call_start ASC NULLS LAST, uuid LIMIT $6)
             UPDATE calls AS c
             SET state = 'in_progress', lease_owner = $7, lease_until = $8, updated_at = $4,
                 attempts = c.attempts + 1
             FROM picked WHERE c.account = $9 AND c.uuid = picked.uuid
             RETURNING c.uuid, c.company_code, c.record_file, c.call_start, c.billsec,
                       c.raw_json, c.bill_id, c.notes, c.origin, c.imported_at,
                       c.attempts - 1 AS attempts",
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
    fn claim_sql(&self, slice: &Slice) -> &'static str {
        CLAIM.sql(slice)
    }
}
