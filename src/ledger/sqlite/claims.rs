//! SQLite's claim: one writer at a time holds the ledger's write lock, so a claim simply
//! updates the oldest due batch (`crate::ledger::claims`, `due.rs`) in one statement.

use super::SqliteLedger;
use crate::ledger::claims::{ClaimBatch, due_candidates};
use crate::ledger::sql::{RECORD_COLUMNS, SliceSql, by_slice};
use crate::ledger::{BackendKind, Slice};

static CLAIM: SliceSql = SliceSql::new(|| {
    by_slice(|filter| {
        let filter = format!(" AND account = $9{filter}");
        format!(
            "UPDATE calls SET state = 'in_progress', lease_owner = $7, lease_until = $8, updated_at = $4,
                    attempts = attempts + 1
             WHERE account = $9 AND uuid IN (
                 SELECT uuid FROM ({}) AS candidates
                 ORDER BY call_start ASC NULLS LAST, uuid LIMIT $6)
             RETURNING {RECORD_COLUMNS}, attempts - 1 AS attempts",
            due_candidates(
                BackendKind::Sqlite,
                &filter,
                "uuid, call_start",
                "",
                " AND lease_owner <> $7"
            )
        )
    })
});

impl ClaimBatch for SqliteLedger {
    const STARTS_ATTEMPTS: bool = false;

    fn claim_sql(&self, slice: &Slice) -> &'static str {
        CLAIM.sql(slice)
    }
}
