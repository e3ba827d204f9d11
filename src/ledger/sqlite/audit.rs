//! The ledger's side of auditing: archived records to read back (and what the read-back
//! found), the records that failed, and putting chosen failed records back in the queue.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::manifests::{ArchivedEntry, entry_from_row};
use super::{Ledger, LedgerError, QueryContext, Slice};
use crate::domain::RecordState;
use crate::timefmt::{from_ledger, to_ledger};

/// A failed or expired record, with why.
#[derive(Debug, Clone, Serialize)]
pub struct FailedRecord {
    pub uuid: String,
    pub state: RecordState,
    pub company_code: String,
    pub record_file: String,
    pub call_start: Option<DateTime<Utc>>,
    pub attempts: i64,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Which failed records `retry` puts back.
#[derive(Debug, Clone, Copy)]
pub enum RetrySelection<'a> {
    Uuids(&'a [String]),
    ErrorCode(&'a str),
    All,
}

/// What `retry` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetryOutcome {
    pub requeued: u64,
    /// Named uuids left alone: unknown (`None`) or not in a state retry may touch.
    pub skipped: Vec<(String, Option<RecordState>)>,
}

/// Back to pending, due now ($1), from `failed` or from state $2.
macro_rules! requeue {
    () => {
        "UPDATE calls SET state = 'pending', attempts = 0, next_attempt_at = $1, updated_at = $1,
                lease_owner = NULL, lease_until = NULL
         WHERE state IN ('failed', $2)"
    };
}

impl Ledger {
    /// Up to `limit` archived records of `slice` after uuid `after`, by uuid.
    pub async fn archived_page(
        &self,
        slice: &Slice,
        after: Option<&str>,
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
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .ctx("listing archived records")?;
        rows.iter().map(entry_from_row).collect()
    }

    /// How many archived records `slice` holds.
    pub async fn archived_count(&self, slice: &Slice) -> Result<i64, LedgerError> {
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

    /// Records what reading objects back found (`ok`, `missing`, `changed`, `unreadable`).
    pub async fn record_verified(
        &self,
        results: &[(String, &'static str)],
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let now = to_ledger(now);
        let mut tx = self.pool.begin().await.ctx("starting to record a verify")?;
        for (uuid, result) in results {
            sqlx::query(
                "UPDATE calls SET last_verified_at = $1, last_verify_result = $2 WHERE uuid = $3",
            )
            .bind(&now)
            .bind(*result)
            .bind(uuid)
            .execute(&mut *tx)
            .await
            .ctx("recording a verify result")?;
        }
        tx.commit().await.ctx("committing verify results")?;
        Ok(())
    }

    /// Starts a `verify` in the audit trail.
    pub async fn start_verification(
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

    pub async fn finish_verification(
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

    /// Up to `limit` failed and expired records after uuid `after` (by uuid), optionally
    /// only those whose last error has `code`.
    pub async fn failures_page(
        &self,
        code: Option<&str>,
        after: Option<&str>,
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
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .ctx("listing failed records")?;
        rows.iter()
            .map(|row| {
                let state: String = row.get("state");
                let time = |col: &str| {
                    row.get::<Option<String>, _>(col)
                        .and_then(|s| from_ledger(&s))
                };
                Ok(FailedRecord {
                    uuid: row.get("uuid"),
                    state: RecordState::parse(&state)
                        .ok_or_else(|| LedgerError::Corrupt(format!("state {state:?}")))?,
                    company_code: row.get("company_code"),
                    record_file: row.get("record_file"),
                    call_start: time("call_start"),
                    attempts: row.get("attempts"),
                    last_error_code: row.get("last_error_code"),
                    last_error: row.get("last_error"),
                    updated_at: time("updated_at"),
                })
            })
            .collect()
    }

    /// Puts the chosen failed (and, with `include_expired`, expired) records back to
    /// `pending`, due now, with their attempt count reset (the attempts table keeps the
    /// history). Never touches records in any other state.
    pub async fn retry_failed(
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
                        .bind(uuid)
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
                            .bind(uuid)
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
