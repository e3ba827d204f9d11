//! SQLite: the ledger's side of auditing: archived records to read back (and what the read-back
//! found), the records that failed, and putting chosen failed records back in the queue.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::manifests::entry_from_row;
use super::{QueryContext, SqliteLedger, col, time_col, uuid_col};
use crate::domain::{CallUuid, RecordState};
use crate::ledger::{
    ArchivedEntry, Audit, FailedRecord, LedgerError, RetryOutcome, RetrySelection, Slice,
    VerifyResult,
};
use crate::timefmt::to_ledger;

/// Back to pending, due now ($1), from `failed` or from state $2.
macro_rules! requeue {
    () => {
        "UPDATE calls SET state = 'pending', attempts = 0, next_attempt_at = $1, updated_at = $1,
                lease_owner = NULL, lease_until = NULL
         WHERE state IN ('failed', $2)"
    };
}

#[async_trait]
impl Audit for SqliteLedger {
    async fn archived_page(
        &self,
        slice: &Slice,
        after: Option<&CallUuid>,
        limit: i64,
    ) -> Result<Vec<ArchivedEntry>, LedgerError> {
        let rows = sqlx::query(
            "SELECT uuid, object_key, size_bytes, sha256, archived_at FROM calls
             WHERE state = 'archived' AND ($1 IS NULL OR company_code = $1)
               AND ($2 IS NULL OR call_start >= $2) AND ($3 IS NULL OR call_start < $3)
               AND ($4 IS NULL OR uuid > $4)
             ORDER BY uuid LIMIT $5",
        )
        .bind(slice.company.as_deref())
        .bind(slice.since.map(to_ledger))
        .bind(slice.until.map(to_ledger))
        .bind(after.map(CallUuid::as_str))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .ctx("listing archived records")?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn archived_count(&self, slice: &Slice) -> Result<i64, LedgerError> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM calls
             WHERE state = 'archived' AND ($1 IS NULL OR company_code = $1)
               AND ($2 IS NULL OR call_start >= $2) AND ($3 IS NULL OR call_start < $3)",
        )
        .bind(slice.company.as_deref())
        .bind(slice.since.map(to_ledger))
        .bind(slice.until.map(to_ledger))
        .fetch_one(&self.pool)
        .await
        .ctx("counting archived records")
    }

    async fn record_verified(
        &self,
        results: &[(CallUuid, VerifyResult)],
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let now = to_ledger(now);
        let mut tx = self.pool.begin().await.ctx("starting to record a verify")?;
        for (uuid, result) in results {
            sqlx::query(
                "UPDATE calls SET last_verified_at = $1, last_verify_result = $2 WHERE uuid = $3",
            )
            .bind(&now)
            .bind(result.as_str())
            .bind(uuid.as_str())
            .execute(&mut *tx)
            .await
            .ctx("recording a verify result")?;
        }
        tx.commit().await.ctx("committing verify results")?;
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
            .bind(to_ledger(now))
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
            "UPDATE verifications SET finished_at = $1, checked = $2, problems = $3, summary = $4 WHERE id = $5",
        )
        .bind(to_ledger(now))
        .bind(i64::try_from(checked).unwrap_or(i64::MAX))
        .bind(i64::try_from(problems).unwrap_or(i64::MAX))
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
        let rows = sqlx::query(
            "SELECT uuid, state, company_code, record_file, call_start, attempts, last_error_code,
                    last_error, updated_at
             FROM calls WHERE state IN ('failed', 'expired') AND ($1 IS NULL OR last_error_code = $1)
               AND ($2 IS NULL OR uuid > $2)
             ORDER BY uuid LIMIT $3",
        )
        .bind(code)
        .bind(after.map(CallUuid::as_str))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .ctx("listing failed records")?;
        rows.iter()
            .map(|row| {
                let state: String = col(row, "state")?;
                Ok(FailedRecord {
                    uuid: uuid_col(row, "uuid")?,
                    state: RecordState::parse(&state)
                        .ok_or_else(|| LedgerError::Corrupt(format!("state {state:?}")))?,
                    company_code: col(row, "company_code")?,
                    record_file: col(row, "record_file")?,
                    call_start: time_col(row, "call_start")?,
                    attempts: col(row, "attempts")?,
                    last_error_code: col(row, "last_error_code")?,
                    last_error: col(row, "last_error")?,
                    updated_at: time_col(row, "updated_at")?,
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
        let now = to_ledger(now);
        // `state IN ('failed', 'failed')` when expired records are not wanted.
        let second = if include_expired { "expired" } else { "failed" };
        let mut tx = self.pool.begin().await.ctx("starting a retry")?;
        let mut outcome = RetryOutcome::default();
        match selection {
            RetrySelection::All => {
                outcome.requeued = sqlx::query(requeue!())
                    .bind(&now)
                    .bind(second)
                    .execute(&mut *tx)
                    .await
                    .ctx("requeueing failed records")?
                    .rows_affected();
            }
            RetrySelection::ErrorCode(code) => {
                outcome.requeued = sqlx::query(concat!(requeue!(), " AND last_error_code = $3"))
                    .bind(&now)
                    .bind(second)
                    .bind(code)
                    .execute(&mut *tx)
                    .await
                    .ctx("requeueing failed records")?
                    .rows_affected();
            }
            RetrySelection::Uuids(uuids) => {
                for uuid in uuids {
                    let n = sqlx::query(concat!(requeue!(), " AND uuid = $3"))
                        .bind(&now)
                        .bind(second)
                        .bind(uuid.as_str())
                        .execute(&mut *tx)
                        .await
                        .ctx("requeueing a failed record")?
                        .rows_affected();
                    if n == 1 {
                        outcome.requeued += 1;
                        continue;
                    }
                    let state: Option<String> =
                        sqlx::query_scalar("SELECT state FROM calls WHERE uuid = $1")
                            .bind(uuid.as_str())
                            .fetch_optional(&mut *tx)
                            .await
                            .ctx("reading a record's state")?;
                    outcome
                        .skipped
                        .push((uuid.clone(), state.as_deref().and_then(RecordState::parse)));
                }
            }
        }
        tx.commit().await.ctx("committing a retry")?;
        Ok(outcome)
    }
}
