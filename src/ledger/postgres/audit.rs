//! PostgreSQL: the ledger's side of auditing: archived records to read back (and what the
//! read-back found), the records that failed, and putting chosen failed records back in the
//! queue. Batches (verify results, named uuids to retry) are one statement over arrays, with
//! the outcome of applying them one by one, as the SQLite ledger does.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::error::{Ctx, retry_conflicts};
use super::{
    BySlice, PgLedger, at, big, bind_slice, by_slice, entry_from_row, parse_state, parse_uuid,
};
use crate::domain::{CallUuid, RecordState};
use crate::ledger::{
    ArchivedEntry, Audit, FailedRecord, LedgerError, RetryOutcome, RetrySelection, Slice,
    VerifyResult,
};

/// Archived records of a slice by uuid: `$4` limit, and with [`ARCHIVED_AFTER`] `$5` the
/// uuid to start after.
static ARCHIVED_FIRST: BySlice = BySlice::new(|| {
    by_slice(|filter| {
        format!(
            "SELECT uuid, object_key, size_bytes, sha256, archived_at FROM calls
             WHERE state = 'archived'{filter}
             ORDER BY uuid LIMIT $4"
        )
    })
});

static ARCHIVED_AFTER: BySlice = BySlice::new(|| {
    by_slice(|filter| {
        format!(
            "SELECT uuid, object_key, size_bytes, sha256, archived_at FROM calls
             WHERE state = 'archived'{filter} AND uuid > $5
             ORDER BY uuid LIMIT $4"
        )
    })
});

static ARCHIVED_COUNT: BySlice = BySlice::new(|| {
    by_slice(|filter| format!("SELECT count(*) FROM calls WHERE state = 'archived'{filter}"))
});

/// Back to pending, due now (`$1`), from `failed` or from state `$2`.
macro_rules! requeue {
    () => {
        "UPDATE calls SET state = 'pending', attempts = 0, next_attempt_at = $1, updated_at = $1,
                lease_owner = NULL, lease_until = NULL
         WHERE state IN ('failed', $2)"
    };
}

#[async_trait]
impl Audit for PgLedger {
    async fn archived_page(
        &self,
        slice: &Slice,
        after: Option<&CallUuid>,
        limit: i64,
    ) -> Result<Vec<ArchivedEntry>, LedgerError> {
        let query = match after {
            None => bind_slice(sqlx::query(ARCHIVED_FIRST.sql(slice)), slice).bind(limit.max(0)),
            Some(after) => bind_slice(sqlx::query(ARCHIVED_AFTER.sql(slice)), slice)
                .bind(limit.max(0))
                .bind(after.as_str()),
        };
        let rows = query
            .fetch_all(&self.pool)
            .await
            .ctx("listing archived records")?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn archived_count(&self, slice: &Slice) -> Result<i64, LedgerError> {
        bind_slice(sqlx::query(ARCHIVED_COUNT.sql(slice)), slice)
            .fetch_one(&self.pool)
            .await
            .ctx("counting archived records")?
            .try_get(0)
            .ctx("counting archived records")
    }

    /// One statement; a uuid named twice keeps its last result, as if recorded one by one.
    async fn record_verified(
        &self,
        results: &[(CallUuid, VerifyResult)],
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        if results.is_empty() {
            return Ok(());
        }
        let last: HashMap<&str, VerifyResult> =
            results.iter().map(|(u, r)| (u.as_str(), *r)).collect();
        let mut last: Vec<(&str, VerifyResult)> = last.into_iter().collect();
        // Rows locked in uuid order, as every batch does.
        last.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let uuids: Vec<&str> = last.iter().map(|(u, _)| *u).collect();
        let found: Vec<&str> = last.iter().map(|(_, r)| r.as_str()).collect();
        let (uuids, found, now) = (&uuids, &found, at(now));
        retry_conflicts(|| async move {
            sqlx::query(
                "UPDATE calls AS c SET last_verified_at = $1, last_verify_result = r.result
                 FROM unnest($2::text[], $3::text[]) AS r (uuid, result)
                 WHERE c.uuid = r.uuid",
            )
            .bind(now)
            .bind(uuids)
            .bind(found)
            .execute(&self.pool)
            .await
            .ctx("recording verify results")
        })
        .await?;
        Ok(())
    }

    async fn start_verification(
        &self,
        id: &str,
        scope: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        sqlx::query("INSERT INTO verifications (id, started_at, scope) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(at(now))
            .bind(scope.to_string())
            .execute(&self.pool)
            .await
            .ctx("recording the start of a verify")?;
        Ok(())
    }

    async fn finish_verification(
        &self,
        id: &str,
        checked: u64,
        problems: u64,
        summary: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        sqlx::query(
            "UPDATE verifications SET finished_at = $1, checked = $2, problems = $3, summary = $4
             WHERE id = $5",
        )
        .bind(at(now))
        .bind(big(checked))
        .bind(big(problems))
        .bind(summary.to_string())
        .bind(id)
        .execute(&self.pool)
        .await
        .ctx("recording the end of a verify")?;
        Ok(())
    }

    async fn failures_page(
        &self,
        code: Option<&str>,
        after: Option<&CallUuid>,
        limit: i64,
    ) -> Result<Vec<FailedRecord>, LedgerError> {
        const CONTEXT: &str = "listing failed records";
        let sql = match (code.is_some(), after.is_some()) {
            (false, false) => {
                "SELECT uuid, state, company_code, record_file, call_start, attempts,
                        last_error_code, last_error, updated_at
                 FROM calls WHERE state IN ('failed', 'expired')
                 ORDER BY uuid LIMIT $3"
            }
            (true, false) => {
                "SELECT uuid, state, company_code, record_file, call_start, attempts,
                        last_error_code, last_error, updated_at
                 FROM calls WHERE state IN ('failed', 'expired') AND last_error_code = $1
                 ORDER BY uuid LIMIT $3"
            }
            (false, true) => {
                "SELECT uuid, state, company_code, record_file, call_start, attempts,
                        last_error_code, last_error, updated_at
                 FROM calls WHERE state IN ('failed', 'expired') AND uuid > $2
                 ORDER BY uuid LIMIT $3"
            }
            (true, true) => {
                "SELECT uuid, state, company_code, record_file, call_start, attempts,
                        last_error_code, last_error, updated_at
                 FROM calls WHERE state IN ('failed', 'expired') AND last_error_code = $1
                   AND uuid > $2
                 ORDER BY uuid LIMIT $3"
            }
        };
        let rows = sqlx::query(sql)
            .bind(code)
            .bind(after.map(CallUuid::as_str))
            .bind(limit.max(0))
            .fetch_all(&self.pool)
            .await
            .ctx(CONTEXT)?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state").ctx(CONTEXT)?;
                let uuid: String = row.try_get("uuid").ctx(CONTEXT)?;
                Ok(FailedRecord {
                    uuid: parse_uuid(&uuid)?,
                    state: parse_state(&state)?,
                    company_code: row.try_get("company_code").ctx(CONTEXT)?,
                    record_file: row.try_get("record_file").ctx(CONTEXT)?,
                    call_start: row.try_get("call_start").ctx(CONTEXT)?,
                    attempts: row.try_get("attempts").ctx(CONTEXT)?,
                    last_error_code: row.try_get("last_error_code").ctx(CONTEXT)?,
                    last_error: row.try_get("last_error").ctx(CONTEXT)?,
                    updated_at: row.try_get("updated_at").ctx(CONTEXT)?,
                })
            })
            .collect()
    }

    async fn retry_failed(
        &self,
        selection: RetrySelection<'_>,
        include_expired: bool,
        now: DateTime<Utc>,
    ) -> Result<RetryOutcome, LedgerError> {
        retry_conflicts(|| self.retry_failed_once(selection, include_expired, now)).await
    }
}

impl PgLedger {
    async fn retry_failed_once(
        &self,
        selection: RetrySelection<'_>,
        include_expired: bool,
        now: DateTime<Utc>,
    ) -> Result<RetryOutcome, LedgerError> {
        let now = at(now);
        // `state IN ('failed', 'failed')` when expired records are not wanted.
        let second = if include_expired { "expired" } else { "failed" };
        let mut outcome = RetryOutcome::default();
        let mut tx = self.pool.begin().await.ctx("starting a retry")?;
        match selection {
            RetrySelection::All => {
                outcome.requeued = sqlx::query(requeue!())
                    .bind(now)
                    .bind(second)
                    .execute(&mut *tx)
                    .await
                    .ctx("requeueing failed records")?
                    .rows_affected();
            }
            RetrySelection::ErrorCode(code) => {
                outcome.requeued = sqlx::query(concat!(requeue!(), " AND last_error_code = $3"))
                    .bind(now)
                    .bind(second)
                    .bind(code)
                    .execute(&mut *tx)
                    .await
                    .ctx("requeueing failed records")?
                    .rows_affected();
            }
            RetrySelection::Uuids(uuids) => {
                let mut named: Vec<&str> = uuids.iter().map(CallUuid::as_str).collect();
                named.sort_unstable();
                named.dedup();
                let requeued: Vec<String> =
                    sqlx::query_scalar(concat!(requeue!(), " AND uuid = ANY($3) RETURNING uuid"))
                        .bind(now)
                        .bind(second)
                        .bind(&named)
                        .fetch_all(&mut *tx)
                        .await
                        .ctx("requeueing failed records")?;
                outcome.requeued = u64::try_from(requeued.len()).unwrap_or(u64::MAX);
                // The rest, in the order named, with the state that kept them (a uuid named
                // twice is skipped the second time: it is pending by then).
                let rows = sqlx::query("SELECT uuid, state FROM calls WHERE uuid = ANY($1)")
                    .bind(&named)
                    .fetch_all(&mut *tx)
                    .await
                    .ctx("reading records' states")?;
                let mut states: HashMap<String, RecordState> = HashMap::with_capacity(rows.len());
                for row in &rows {
                    let state: String = row.try_get("state").ctx("reading records' states")?;
                    states.insert(
                        row.try_get("uuid").ctx("reading records' states")?,
                        parse_state(&state)?,
                    );
                }
                let mut requeued: HashSet<String> = requeued.into_iter().collect();
                for uuid in uuids {
                    if requeued.remove(uuid.as_str()) {
                        continue;
                    }
                    outcome
                        .skipped
                        .push((uuid.clone(), states.get(uuid.as_str()).copied()));
                }
            }
        }
        tx.commit().await.ctx("committing a retry")?;
        Ok(outcome)
    }
}
