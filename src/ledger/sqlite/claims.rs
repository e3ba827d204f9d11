//! SQLite's side of work distribution: claiming due records under a lease, recording attempts, and settling
//! each claim with its outcome. Every change to a claimed record checks that the lease is
//! still ours, so two runs can never both settle the same record.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{QueryContext, SqliteLedger, col, record_from_row};
use crate::domain::{AttemptId, AttemptOutcome, CallRecord, CallUuid, Claim, RunId};
use crate::ledger::claims::{GIVE_BACK_ATTEMPTS, GIVE_BACK_RECORDS};
use crate::ledger::{
    AttemptEnd, ClaimRequest, Claims, INTERRUPTED_MESSAGE, LedgerError, SettleItem, Settlement,
    Slice, lease_lost_message, sort_claims,
};
use crate::timefmt::to_ledger;

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

/// The uuids of the $8 due records whose calls are oldest (nulls last, then by uuid), with
/// the parameters of [`due_filter`]. The same choice as `WHERE due_filter ORDER BY .. LIMIT n`,
/// written as the smallest of three disjoint candidates so that each is found through an
/// index: dated pending records by walking `calls_due` (state, call_start, next_attempt_at)
/// in call order, skipping those not due yet without reading their rows; undated pending
/// records; lapsed leases. A batch costs one short index walk however long the
/// backlog or the ledger (the single OR query sorted every due record on every claim).
macro_rules! oldest_due_batch {
    () => {
        concat!(
            "SELECT uuid FROM (
                SELECT uuid, call_start FROM (
                    SELECT uuid, call_start FROM calls
                    WHERE state = 'pending' AND call_start IS NOT NULL AND next_attempt_at <= $5 AND ",
            slice_filter!(),
            "       ORDER BY call_start, uuid LIMIT $8) dated
                UNION ALL
                SELECT uuid, call_start FROM (
                    SELECT uuid, call_start FROM calls
                    WHERE state = 'pending' AND call_start IS NULL AND next_attempt_at <= $5 AND ",
            slice_filter!(),
            "       ORDER BY uuid LIMIT $8) undated
                UNION ALL
                SELECT uuid, call_start FROM (
                    SELECT uuid, call_start FROM calls
                    WHERE state = 'in_progress' AND lease_until < $4 AND lease_owner <> $6 AND ",
            slice_filter!(),
            "       ORDER BY call_start ASC NULLS LAST, uuid LIMIT $8) lapsed
            ) candidates
            ORDER BY call_start ASC NULLS LAST, uuid LIMIT $8"
        )
    };
}

#[async_trait]
impl Claims for SqliteLedger {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claim>, LedgerError> {
        let now_text = to_ledger(request.now);
        let slice = request.slice;
        let mut tx = self.pool.begin().await.ctx("starting a claim")?;
        let rows = sqlx::query(concat!(
            "UPDATE calls SET state = 'in_progress', lease_owner = $6, lease_until = $7, updated_at = $4,
                    attempts = attempts + 1
             WHERE uuid IN (",
            oldest_due_batch!(),
            ")
             RETURNING uuid, company_code, record_file, call_start, billsec, raw_json, bill_id, notes,
                       origin, imported_at, attempts - 1 AS attempts"
        ))
        .bind(slice.company.as_deref())
        .bind(slice.since.map(to_ledger))
        .bind(slice.until.map(to_ledger))
        .bind(&now_text)
        .bind(to_ledger(request.due_by))
        .bind(request.owner.as_str())
        .bind(to_ledger(request.lease_until))
        .bind(i64::from(request.limit.max(1)))
        .fetch_all(&mut *tx)
        .await
        .ctx("claiming records")?;
        let mut claims = Vec::with_capacity(rows.len());
        for row in &rows {
            let record = record_from_row(row)?;
            // An attempt left running by a killed run ends here, honestly labelled; then
            // this claim's first attempt starts, in the same commit.
            sqlx::query(
                "UPDATE attempts SET outcome = 'interrupted', finished_at = $1, message = $3
                 WHERE call_uuid = $2 AND outcome = 'running'",
            )
            .bind(&now_text)
            .bind(record.uuid.as_str())
            .bind(INTERRUPTED_MESSAGE)
            .execute(&mut *tx)
            .await
            .ctx("closing interrupted attempts")?;
            let attempt: i64 = sqlx::query_scalar(
                "INSERT INTO attempts (call_uuid, run_id, started_at, outcome) VALUES ($1, $2, $3, 'running') RETURNING id",
            )
            .bind(record.uuid.as_str())
            .bind(request.owner.as_str())
            .bind(&now_text)
            .fetch_one(&mut *tx)
            .await
            .ctx("starting the claim's attempt")?;
            claims.push(Claim {
                record,
                previous_attempts: col(row, "attempts")?,
                attempt: AttemptId(attempt),
            });
        }
        tx.commit().await.ctx("committing a claim")?;
        sort_claims(&mut claims);
        Ok(claims)
    }

    async fn renew_leases(
        &self,
        owner: &RunId,
        lease_until: DateTime<Utc>,
    ) -> Result<u64, LedgerError> {
        Ok(sqlx::query(
            "UPDATE calls SET lease_until = $1 WHERE lease_owner = $2 AND state = 'in_progress'",
        )
        .bind(to_ledger(lease_until))
        .bind(owner.as_str())
        .execute(&self.pool)
        .await
        .ctx("renewing leases")?
        .rows_affected())
    }

    async fn due(
        &self,
        slice: &Slice,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<CallRecord>, LedgerError> {
        let rows = sqlx::query(concat!(
            "SELECT uuid, company_code, record_file, call_start, billsec, raw_json, bill_id, notes,
                    origin, imported_at FROM calls WHERE ",
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

    async fn count_due(&self, slice: &Slice, now: DateTime<Utc>) -> Result<u64, LedgerError> {
        let n: i64 = sqlx::query_scalar(concat!(
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
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn begin_attempt(
        &self,
        uuid: &CallUuid,
        run_id: &RunId,
        now: DateTime<Utc>,
    ) -> Result<AttemptId, LedgerError> {
        let mut tx = self.pool.begin().await.ctx("starting an attempt")?;
        sqlx::query("UPDATE calls SET attempts = attempts + 1 WHERE uuid = $1")
            .bind(uuid.as_str())
            .execute(&mut *tx)
            .await
            .ctx("counting an attempt")?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO attempts (call_uuid, run_id, started_at, outcome) VALUES ($1, $2, $3, 'running') RETURNING id",
        )
        .bind(uuid.as_str())
        .bind(run_id.as_str())
        .bind(to_ledger(now))
        .fetch_one(&mut *tx)
        .await
        .ctx("recording an attempt")?;
        tx.commit().await.ctx("committing an attempt")?;
        Ok(AttemptId(id))
    }

    async fn finish_attempt(
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

    async fn answers_like(
        &self,
        uuid: &CallUuid,
        error_code: &str,
    ) -> Result<(u32, Option<DateTime<Utc>>), LedgerError> {
        let (n, first): (i64, Option<String>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(started_at) FROM attempts
             WHERE call_uuid = $1 AND error_code = $2 AND finished_at IS NOT NULL",
        )
        .bind(uuid.as_str())
        .bind(error_code)
        .fetch_one(&self.pool)
        .await
        .ctx("counting repeated answers")?;
        Ok((
            u32::try_from(n).unwrap_or(u32::MAX),
            first.as_deref().and_then(crate::timefmt::from_ledger),
        ))
    }

    async fn answers_with(
        &self,
        uuid: &CallUuid,
        error_code: &str,
        message: &str,
    ) -> Result<u32, LedgerError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM attempts
             WHERE call_uuid = $1 AND error_code = $2 AND message = $3 AND finished_at IS NOT NULL",
        )
        .bind(uuid.as_str())
        .bind(error_code)
        .bind(message)
        .fetch_one(&self.pool)
        .await
        .ctx("counting identical answers")?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn settle(
        &self,
        uuid: &CallUuid,
        owner: &RunId,
        settlement: &Settlement<'_>,
        last_attempt: Option<&AttemptEnd<'_>>,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let mut tx = self.pool.begin().await.ctx("starting a settlement")?;
        let held = settle_in(&mut tx, uuid, owner, settlement, last_attempt, now).await?;
        tx.commit().await.ctx("committing a settlement")?;
        Ok(held)
    }

    async fn give_back_attempts(
        &self,
        run: &RunId,
        error_code: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, LedgerError> {
        let now = to_ledger(now);
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .ctx("starting to give attempts back")?;
        let records = sqlx::query(GIVE_BACK_RECORDS)
            .bind(run.as_str())
            .bind(error_code)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .ctx("giving attempts back")?
            .rows_affected();
        sqlx::query(GIVE_BACK_ATTEMPTS)
            .bind(run.as_str())
            .bind(error_code)
            .execute(&mut *tx)
            .await
            .ctx("closing the attempts given back")?;
        tx.commit().await.ctx("committing attempts given back")?;
        Ok(records)
    }

    async fn settle_many(
        &self,
        items: &[SettleItem<'_>],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, LedgerError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .ctx("starting grouped settlements")?;
        let mut held = Vec::with_capacity(items.len());
        for item in items {
            held.push(
                settle_in(
                    &mut tx,
                    item.uuid,
                    item.owner,
                    &item.settlement,
                    item.last_attempt.as_ref(),
                    now,
                )
                .await?,
            );
        }
        tx.commit().await.ctx("committing grouped settlements")?;
        Ok(held)
    }
}

/// One settlement inside the caller's transaction: the record's new state and, with it, the
/// end of its last attempt. `false` when `owner` no longer holds the lease.
async fn settle_in(
    conn: &mut sqlx::SqliteConnection,
    uuid: &CallUuid,
    owner: &RunId,
    settlement: &Settlement<'_>,
    last_attempt: Option<&AttemptEnd<'_>>,
    now: DateTime<Utc>,
) -> Result<bool, LedgerError> {
    let now_text = to_ledger(now);
    let base = sqlx::query(match settlement {
        Settlement::Archived(..) => {
            "UPDATE calls SET state = 'archived', lease_owner = NULL, lease_until = NULL, updated_at = $3,
                    object_key = $4, size_bytes = $5, sha256 = $6, content_type = $7, etag = $8,
                    object_version = $9, archived_at = $10, last_error_code = NULL, last_error = NULL,
                    media_duration_ms = $11, media_note = $12
             WHERE uuid = $1 AND lease_owner = $2 AND state = 'in_progress'"
        }
        Settlement::Retry { .. } | Settlement::Released { .. } => {
            "UPDATE calls SET state = 'pending', lease_owner = NULL, lease_until = NULL, updated_at = $3,
                    next_attempt_at = $4, last_error_code = $5, last_error = $6
             WHERE uuid = $1 AND lease_owner = $2 AND state = 'in_progress'"
        }
        Settlement::Returned { .. } => {
            "UPDATE calls SET state = 'pending', lease_owner = NULL, lease_until = NULL, updated_at = $3,
                    next_attempt_at = $4, last_error_code = $5, last_error = $6,
                    attempts = $7
             WHERE uuid = $1 AND lease_owner = $2 AND state = 'in_progress'"
        }
        Settlement::Failed { .. } | Settlement::Expired { .. } => {
            "UPDATE calls SET state = $4, lease_owner = NULL, lease_until = NULL, updated_at = $3,
                    last_error_code = $5, last_error = $6
             WHERE uuid = $1 AND lease_owner = $2 AND state = 'in_progress'"
        }
    })
    .bind(uuid.as_str())
    .bind(owner.as_str())
    .bind(&now_text);
    let query = match settlement {
        Settlement::Archived(obj, media) => base
            .bind(&obj.key)
            .bind(i64::try_from(obj.size).unwrap_or(i64::MAX))
            .bind(&obj.sha256)
            .bind(obj.content_type.as_deref())
            .bind(obj.etag.as_deref())
            .bind(obj.version.as_deref())
            .bind(to_ledger(obj.archived_at))
            .bind(media.duration_ms)
            .bind(media.note.as_deref()),
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
        Settlement::Returned {
            code,
            message,
            attempts_before,
        } => base
            .bind(now_text.clone())
            .bind(*code)
            .bind(*message)
            .bind(*attempts_before),
        Settlement::Failed { code, message } => base.bind("failed").bind(*code).bind(*message),
        Settlement::Expired { code, message } => base.bind("expired").bind(*code).bind(*message),
    };
    let held = query
        .execute(&mut *conn)
        .await
        .ctx("settling a record")?
        .rows_affected()
        == 1;
    match last_attempt {
        Some(end) if held => finish_attempt(conn, end, now).await?,
        // Another run holds the record now: the attempt's own outcome did not count.
        Some(end) => {
            let message = lease_lost_message(end.outcome);
            let lost = AttemptEnd {
                outcome: AttemptOutcome::LeaseLost,
                error_code: Some("lease_lost"),
                message: Some(&message),
                ..end.clone()
            };
            finish_attempt(conn, &lost, now).await?;
        }
        None => {}
    }
    Ok(held)
}

async fn finish_attempt(
    conn: &mut sqlx::SqliteConnection,
    end: &AttemptEnd<'_>,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    sqlx::query("UPDATE attempts SET finished_at = $1, outcome = $2, error_code = $3, message = $4, bytes = $5 WHERE id = $6")
        .bind(to_ledger(now))
        .bind(end.outcome.as_str())
        .bind(end.error_code)
        .bind(end.message)
        .bind(i64::try_from(end.bytes).unwrap_or(i64::MAX))
        .bind(end.id.0)
        .execute(conn)
        .await
        .ctx("ending an attempt")?;
    Ok(())
}
