//! Work distribution: claiming due records under a lease, recording attempts, and settling
//! each claim with its outcome. Every change to a claimed record checks that the lease is
//! still ours, so two runs can never both settle the same record.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Ledger, LedgerError, QueryContext, record_from_row};
use crate::domain::{ArchivedObject, CallRecord, Claim};
use crate::timefmt::to_ledger;

/// Which records a run may take: everything due, or a slice of it (backfills).
#[derive(Debug, Clone, Default)]
pub struct Slice {
    pub company: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// How a claim ends.
#[derive(Debug, Clone)]
pub enum Settlement<'a> {
    /// Verified in the store.
    Archived(&'a ArchivedObject),
    /// A passing problem: back to pending, not before `next_attempt_at`.
    Retry {
        next_attempt_at: DateTime<Utc>,
        code: &'a str,
        message: &'a str,
    },
    /// Will not be retried automatically.
    Failed { code: &'a str, message: &'a str },
    /// The provider no longer has the file and the call is past the retention horizon.
    Expired { code: &'a str, message: &'a str },
    /// Interrupted (shutdown): back to pending, due at once.
    Released { message: &'a str },
}

/// The end of one attempt, as written to the attempts table.
#[derive(Debug, Clone)]
pub struct AttemptEnd<'a> {
    pub id: i64,
    pub outcome: &'a str,
    pub error_code: Option<&'a str>,
    pub message: Option<&'a str>,
    pub bytes: u64,
}

/// The filter clause shared by claiming and the dry-run listing: $1 company, $2 since,
/// $3 until, $4 now (leases), $5 due-by (pending records).
macro_rules! due_filter {
    () => {
        concat!(
            slice_filter!(),
            " AND ((state = 'pending' AND next_attempt_at <= $5) OR (state = 'in_progress' AND lease_until < $4))"
        )
    };
}

/// The slice part of [`due_filter`]: $1 company, $2 since, $3 until.
macro_rules! slice_filter {
    () => {
        "(($1 IS NULL OR company_code = $1) AND ($2 IS NULL OR call_start >= $2) AND ($3 IS NULL OR call_start < $3))"
    };
}

/// The uuid of the due record whose call is oldest (nulls last, then by uuid), with the
/// parameters of [`due_filter`]. The same choice as `WHERE due_filter ORDER BY .. LIMIT 1`,
/// written as the smallest of three disjoint candidates so that each is found through an
/// index: dated pending records by walking `calls_due` (state, call_start, next_attempt_at)
/// in call order, skipping those not due yet without reading their rows; undated pending
/// records; lapsed leases. One due record costs one short index walk however long the
/// backlog or the ledger (the single OR query sorted every due record on every claim).
macro_rules! oldest_due {
    () => {
        concat!(
            "SELECT uuid FROM (
                SELECT uuid, call_start FROM (
                    SELECT uuid, call_start FROM calls
                    WHERE state = 'pending' AND call_start IS NOT NULL AND next_attempt_at <= $5 AND ",
            slice_filter!(),
            "       ORDER BY call_start, uuid LIMIT 1) dated
                UNION ALL
                SELECT uuid, call_start FROM (
                    SELECT uuid, call_start FROM calls
                    WHERE state = 'pending' AND call_start IS NULL AND next_attempt_at <= $5 AND ",
            slice_filter!(),
            "       ORDER BY uuid LIMIT 1) undated
                UNION ALL
                SELECT uuid, call_start FROM (
                    SELECT uuid, call_start FROM calls
                    WHERE state = 'in_progress' AND lease_until < $4 AND ",
            slice_filter!(),
            "       ORDER BY call_start ASC NULLS LAST, uuid LIMIT 1) lapsed
            ) candidates
            ORDER BY call_start ASC NULLS LAST, uuid LIMIT 1"
        )
    };
}

impl Ledger {
    /// Claims the due record whose call is oldest, for `owner` until `lease_until`. Pending
    /// records are due when their next attempt falls before `due_by` (a run passes its start,
    /// so it never takes back what it gave up on); a record whose lease ran out (its run
    /// died) is due at once. Returns `None` when nothing is due.
    pub async fn claim(
        &self,
        owner: &str,
        slice: &Slice,
        due_by: DateTime<Utc>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Claim>, LedgerError> {
        let now_text = to_ledger(now);
        let mut tx = self.pool.begin().await.ctx("starting a claim")?;
        let row = sqlx::query(concat!(
            "UPDATE calls SET state = 'in_progress', lease_owner = $6, lease_until = $7, updated_at = $4
             WHERE uuid = (",
            oldest_due!(),
            ")
             RETURNING uuid, company_code, record_file, call_start, billsec, raw_json, attempts"
        ))
        .bind(slice.company.as_deref())
        .bind(slice.since.map(to_ledger))
        .bind(slice.until.map(to_ledger))
        .bind(&now_text)
        .bind(to_ledger(due_by))
        .bind(owner)
        .bind(to_ledger(lease_until))
        .fetch_optional(&mut *tx)
        .await
        .ctx("claiming a record")?;
        let Some(row) = row else {
            tx.commit().await.ctx("ending an empty claim")?;
            return Ok(None);
        };
        let claim = Claim {
            record: record_from_row(&row)?,
            previous_attempts: row.get("attempts"),
        };
        // An attempt left running by a killed run ends here, honestly labelled.
        sqlx::query(
            "UPDATE attempts SET outcome = 'interrupted', finished_at = $1,
                    message = 'the run ended before this attempt did (killed or lease expired)'
             WHERE call_uuid = $2 AND outcome = 'running'",
        )
        .bind(&now_text)
        .bind(claim.record.uuid.as_str())
        .execute(&mut *tx)
        .await
        .ctx("closing interrupted attempts")?;
        tx.commit().await.ctx("committing a claim")?;
        Ok(Some(claim))
    }

    /// Extends every lease `owner` holds; called periodically while transfers run.
    pub async fn renew_leases(
        &self,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<u64, LedgerError> {
        Ok(sqlx::query(
            "UPDATE calls SET lease_until = $1 WHERE lease_owner = $2 AND state = 'in_progress'",
        )
        .bind(to_ledger(lease_until))
        .bind(owner)
        .execute(&self.pool)
        .await
        .ctx("renewing leases")?
        .rows_affected())
    }

    /// The records a run would claim now, oldest call first, without claiming them.
    pub async fn due(
        &self,
        slice: &Slice,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<CallRecord>, LedgerError> {
        let rows = sqlx::query(concat!(
            "SELECT uuid, company_code, record_file, call_start, billsec, raw_json FROM calls WHERE ",
            due_filter!(),
            " ORDER BY call_start ASC NULLS LAST, uuid LIMIT $6"
        ))
        .bind(slice.company.as_deref())
        .bind(slice.since.map(to_ledger))
        .bind(slice.until.map(to_ledger))
        .bind(to_ledger(now))
        .bind(to_ledger(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .ctx("listing due records")?;
        rows.iter().map(record_from_row).collect()
    }

    /// How many records are due now (for progress and planning).
    pub async fn count_due(&self, slice: &Slice, now: DateTime<Utc>) -> Result<u64, LedgerError> {
        let row = sqlx::query(concat!(
            "SELECT COUNT(*) AS n FROM calls WHERE ",
            due_filter!()
        ))
        .bind(slice.company.as_deref())
        .bind(slice.since.map(to_ledger))
        .bind(slice.until.map(to_ledger))
        .bind(to_ledger(now))
        .bind(to_ledger(now))
        .fetch_one(&self.pool)
        .await
        .ctx("counting due records")?;
        Ok(u64::try_from(row.get::<i64, _>("n")).unwrap_or(0))
    }

    /// Starts an attempt on a claimed record; returns the attempt's id.
    pub async fn begin_attempt(
        &self,
        uuid: &str,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, LedgerError> {
        let mut tx = self.pool.begin().await.ctx("starting an attempt")?;
        sqlx::query("UPDATE calls SET attempts = attempts + 1 WHERE uuid = $1")
            .bind(uuid)
            .execute(&mut *tx)
            .await
            .ctx("counting an attempt")?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO attempts (call_uuid, run_id, started_at, outcome) VALUES ($1, $2, $3, 'running') RETURNING id",
        )
        .bind(uuid)
        .bind(run_id)
        .bind(to_ledger(now))
        .fetch_one(&mut *tx)
        .await
        .ctx("recording an attempt")?;
        tx.commit().await.ctx("committing an attempt")?;
        Ok(id)
    }

    /// Ends an attempt that does not settle its record (it will be tried again in this run).
    pub async fn finish_attempt(
        &self,
        end: &AttemptEnd<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        finish_attempt(
            &mut *self.pool.acquire().await.ctx("finishing an attempt")?,
            end,
            now,
        )
        .await
    }

    /// Settles a claim and, in the same transaction, ends its last attempt. Returns `false`
    /// (and changes nothing) when `owner` no longer holds the lease.
    pub async fn settle(
        &self,
        uuid: &str,
        owner: &str,
        settlement: &Settlement<'_>,
        last_attempt: Option<&AttemptEnd<'_>>,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let now_text = to_ledger(now);
        let mut tx = self.pool.begin().await.ctx("starting a settlement")?;
        let base = sqlx::query(match settlement {
            Settlement::Archived(_) => {
                "UPDATE calls SET state = 'archived', lease_owner = NULL, lease_until = NULL, updated_at = $3,
                        object_key = $4, size_bytes = $5, sha256 = $6, content_type = $7, etag = $8,
                        object_version = $9, archived_at = $10, last_error_code = NULL, last_error = NULL
                 WHERE uuid = $1 AND lease_owner = $2 AND state = 'in_progress'"
            }
            Settlement::Retry { .. } | Settlement::Released { .. } => {
                "UPDATE calls SET state = 'pending', lease_owner = NULL, lease_until = NULL, updated_at = $3,
                        next_attempt_at = $4, last_error_code = $5, last_error = $6
                 WHERE uuid = $1 AND lease_owner = $2 AND state = 'in_progress'"
            }
            Settlement::Failed { .. } | Settlement::Expired { .. } => {
                "UPDATE calls SET state = $4, lease_owner = NULL, lease_until = NULL, updated_at = $3,
                        last_error_code = $5, last_error = $6
                 WHERE uuid = $1 AND lease_owner = $2 AND state = 'in_progress'"
            }
        })
        .bind(uuid)
        .bind(owner)
        .bind(&now_text);
        let query = match settlement {
            Settlement::Archived(obj) => base
                .bind(&obj.key)
                .bind(i64::try_from(obj.size).unwrap_or(i64::MAX))
                .bind(&obj.sha256)
                .bind(obj.content_type.as_deref())
                .bind(obj.etag.as_deref())
                .bind(obj.version.as_deref())
                .bind(to_ledger(obj.archived_at)),
            Settlement::Retry {
                next_attempt_at,
                code,
                message,
            } => base
                .bind(to_ledger(*next_attempt_at))
                .bind(*code)
                .bind(*message),
            Settlement::Released { message } => base
                .bind(now_text.clone())
                .bind("interrupted")
                .bind(*message),
            Settlement::Failed { code, message } => base.bind("failed").bind(*code).bind(*message),
            Settlement::Expired { code, message } => {
                base.bind("expired").bind(*code).bind(*message)
            }
        };
        let held = query
            .execute(&mut *tx)
            .await
            .ctx("settling a record")?
            .rows_affected()
            == 1;
        match last_attempt {
            Some(end) if held => finish_attempt(&mut tx, end, now).await?,
            // Another run holds the record now: the attempt's own outcome did not count.
            Some(end) => {
                let message = format!(
                    "lease lost before settling (would have been {})",
                    end.outcome
                );
                let lost = AttemptEnd {
                    outcome: "lease_lost",
                    error_code: Some("lease_lost"),
                    message: Some(&message),
                    ..end.clone()
                };
                finish_attempt(&mut tx, &lost, now).await?;
            }
            None => {}
        }
        tx.commit().await.ctx("committing a settlement")?;
        Ok(held)
    }
}

async fn finish_attempt(
    conn: &mut sqlx::SqliteConnection,
    end: &AttemptEnd<'_>,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    sqlx::query("UPDATE attempts SET finished_at = $1, outcome = $2, error_code = $3, message = $4, bytes = $5 WHERE id = $6")
        .bind(to_ledger(now))
        .bind(end.outcome)
        .bind(end.error_code)
        .bind(end.message)
        .bind(i64::try_from(end.bytes).unwrap_or(i64::MAX))
        .bind(end.id)
        .execute(conn)
        .await
        .ctx("ending an attempt")?;
    Ok(())
}
