//! PostgreSQL's side of work distribution: claiming due records under a lease, recording
//! attempts, and settling each claim with its outcome, for many workers at once.
//!
//! A claim is one statement in the manner of River's `JobGetAvailable`: the due rows are
//! picked and locked with `FOR UPDATE SKIP LOCKED` (a row another worker is claiming or
//! settling is passed over, never waited for), then marked `in_progress` with our lease.
//! Locking re-reads a row changed since the statement began and drops it if it no longer
//! matches, so a lapsed lease is taken over exactly once. Every later change to a claimed
//! record checks that the lease is still ours.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgConnection;

use super::error::{Ctx, retry_conflicts};
use super::{BySlice, PgLedger, at, big, bind_slice, by_slice, record_from_row};
use crate::domain::{AttemptId, AttemptOutcome, CallRecord, CallUuid, Claim, RunId};
use crate::ledger::claims::{GIVE_BACK_ATTEMPTS, GIVE_BACK_RECORDS};
use crate::ledger::{
    AttemptEnd, ClaimRequest, Claims, INTERRUPTED_MESSAGE, LedgerError, SettleItem, Settlement,
    Slice, lease_lost_message, sort_claims,
};

/// The due records in claim order (oldest call first, undated last, then uuid), as the
/// union of two disjoint candidate sets, each read through its own index and cut at `$6`:
///
/// - pending records due by `$5`: `calls_due` (state, call_start, uuid, next_attempt_at)
///   holds them in exactly the claim order (`NULLS LAST` is the index's own order), so the
///   scan stops after `$6` due rows, and `next_attempt_at <= $5` is checked on the index
///   entry, so records not due yet cost no row read;
/// - records whose lease ran out before `$4`: `calls_lease` (state, lease_until), sorted
///   (only records in progress, a few per worker).
///
/// `$1`..`$3` are the slice's bounds (see [`BySlice`]); `lock` is `FOR UPDATE SKIP LOCKED`
/// when claiming, empty when only looking.
/// `not_owner` excludes the claimer's own lapsed leases (a claim passes
/// ` AND lease_owner <> $7`): a run whose renewals failed for a while must not take back a
/// record one of its own workers is still transferring.
fn due_candidates(filter: &str, columns: &str, lock: &str, not_owner: &str) -> String {
    format!(
        "SELECT {columns} FROM (
             SELECT {columns} FROM calls
             WHERE state = 'pending' AND next_attempt_at <= $5{filter}
             ORDER BY call_start ASC NULLS LAST, uuid LIMIT $6{lock}) AS due
         UNION ALL
         SELECT {columns} FROM (
             SELECT {columns} FROM calls
             WHERE state = 'in_progress' AND lease_until < $4{not_owner}{filter}
             ORDER BY call_start ASC NULLS LAST, uuid LIMIT $6{lock}) AS lapsed"
    )
}

const RECORD_COLUMNS: &str = "uuid, company_code, record_file, call_start, billsec, raw_json, bill_id, notes, origin, imported_at";

/// Claims the first `$6` due records for `$7` until `$8` (updated at `$4`). Both candidate
/// sets are locked (up to twice `$6` rows, for the length of this short transaction) and
/// the first `$6` of their union are claimed.
static CLAIM: BySlice = BySlice::new(|| {
    by_slice(|filter| {
        format!(
            "WITH candidates AS ({}),
             picked AS (
                 SELECT uuid FROM candidates ORDER BY call_start ASC NULLS LAST, uuid LIMIT $6)
             UPDATE calls AS c
             SET state = 'in_progress', lease_owner = $7, lease_until = $8, updated_at = $4,
                 attempts = c.attempts + 1
             FROM picked WHERE c.uuid = picked.uuid
             RETURNING c.uuid, c.company_code, c.record_file, c.call_start, c.billsec,
                       c.raw_json, c.bill_id, c.notes, c.origin, c.imported_at,
                       c.attempts - 1 AS attempts",
            due_candidates(
                filter,
                "uuid, call_start",
                " FOR UPDATE SKIP LOCKED",
                " AND lease_owner <> $7",
            )
        )
    })
});

/// The records a claim would take now (`$4` = `$5` = now), without taking them.
static DUE: BySlice = BySlice::new(|| {
    by_slice(|filter| {
        format!(
            "SELECT {RECORD_COLUMNS} FROM ({}) AS candidates
             ORDER BY call_start ASC NULLS LAST, uuid LIMIT $6",
            due_candidates(filter, RECORD_COLUMNS, "", "")
        )
    })
});

/// How many records are due at `$4`: the two candidate sets counted through their indexes.
static COUNT_DUE: BySlice = BySlice::new(|| {
    by_slice(|filter| {
        format!(
            "SELECT (SELECT count(*) FROM calls
                     WHERE state = 'pending' AND next_attempt_at <= $4{filter})
                  + (SELECT count(*) FROM calls
                     WHERE state = 'in_progress' AND lease_until < $4{filter})"
        )
    })
});

#[async_trait]
impl Claims for PgLedger {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claim>, LedgerError> {
        retry_conflicts(|| self.claim_once(request)).await
    }

    async fn renew_leases(
        &self,
        owner: &RunId,
        lease_until: DateTime<Utc>,
    ) -> Result<u64, LedgerError> {
        // Many rows in one statement, which may wait for a row a settlement holds: run again
        // if it ever loses a deadlock.
        let lease_until = at(lease_until);
        retry_conflicts(|| async move {
            Ok(sqlx::query(
                "UPDATE calls SET lease_until = $1 WHERE lease_owner = $2 AND state = 'in_progress'",
            )
            .bind(lease_until)
            .bind(owner.as_str())
            .execute(&self.pool)
            .await
            .ctx("renewing leases")?
            .rows_affected())
        })
        .await
    }

    async fn due(
        &self,
        slice: &Slice,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<CallRecord>, LedgerError> {
        let now = at(now);
        let rows = bind_slice(sqlx::query(DUE.sql(slice)), slice)
            .bind(now)
            .bind(now)
            .bind(limit.max(0))
            .fetch_all(&self.pool)
            .await
            .ctx("listing due records")?;
        rows.iter().map(record_from_row).collect()
    }

    async fn count_due(&self, slice: &Slice, now: DateTime<Utc>) -> Result<u64, LedgerError> {
        let n: i64 = bind_slice(sqlx::query(COUNT_DUE.sql(slice)), slice)
            .bind(at(now))
            .fetch_one(&self.pool)
            .await
            .ctx("counting due records")?
            .try_get(0)
            .ctx("counting due records")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// One statement: the attempt is counted on the record and recorded as `running`.
    async fn begin_attempt(
        &self,
        uuid: &CallUuid,
        run_id: &RunId,
        now: DateTime<Utc>,
    ) -> Result<AttemptId, LedgerError> {
        let id: i64 = sqlx::query_scalar(
            "WITH counted AS (UPDATE calls SET attempts = attempts + 1 WHERE uuid = $1)
             INSERT INTO attempts (call_uuid, run_id, started_at, outcome)
             VALUES ($1, $2, $3, 'running')
             RETURNING id",
        )
        .bind(uuid.as_str())
        .bind(run_id.as_str())
        .bind(at(now))
        .fetch_one(&self.pool)
        .await
        .ctx("recording an attempt")?;
        Ok(AttemptId(id))
    }

    async fn finish_attempt(
        &self,
        end: &AttemptEnd<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let mut conn = self.pool.acquire().await.ctx("finishing an attempt")?;
        finish_attempt(&mut conn, end, now).await
    }

    async fn answers_like(
        &self,
        uuid: &CallUuid,
        error_code: &str,
    ) -> Result<(u32, Option<DateTime<Utc>>), LedgerError> {
        let (n, first): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(started_at) FROM attempts
             WHERE call_uuid = $1 AND error_code = $2 AND finished_at IS NOT NULL",
        )
        .bind(uuid.as_str())
        .bind(error_code)
        .fetch_one(&self.pool)
        .await
        .ctx("counting repeated answers")?;
        Ok((u32::try_from(n).unwrap_or(u32::MAX), first))
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
        retry_conflicts(|| self.settle_once(uuid, owner, settlement, last_attempt, now)).await
    }

    async fn settle_many(
        &self,
        items: &[SettleItem<'_>],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, LedgerError> {
        retry_conflicts(|| self.settle_many_once(items, now)).await
    }

    async fn give_back_attempts(
        &self,
        run: &RunId,
        error_code: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, LedgerError> {
        let now = at(now);
        retry_conflicts(|| async move {
            let mut tx = self
                .pool
                .begin()
                .await
                .ctx("starting to give attempts back")?;
            let records = sqlx::query(GIVE_BACK_RECORDS)
                .bind(run.as_str())
                .bind(error_code)
                .bind(now)
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
        })
        .await
    }
}

impl PgLedger {
    async fn claim_once(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claim>, LedgerError> {
        let now = at(request.now);
        let mut tx = self.pool.begin().await.ctx("starting a claim")?;
        let rows = bind_slice(sqlx::query(CLAIM.sql(request.slice)), request.slice)
            .bind(now)
            .bind(at(request.due_by))
            .bind(i64::from(request.limit.max(1)))
            .bind(request.owner.as_str())
            .bind(at(request.lease_until))
            .fetch_all(&mut *tx)
            .await
            .ctx("claiming records")?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let previous: i64 = row.try_get("attempts").ctx("reading a claim")?;
            claimed.push((record_from_row(row)?, previous));
        }
        let mut claims = Vec::with_capacity(claimed.len());
        if !claimed.is_empty() {
            // An attempt left running by a killed run ends here, honestly labelled; then
            // each record's first attempt of this claim starts, in the same commit.
            let uuids: Vec<&str> = claimed.iter().map(|(r, _)| r.uuid.as_str()).collect();
            sqlx::query(
                "UPDATE attempts SET outcome = 'interrupted', finished_at = $1, message = $2
                 WHERE call_uuid = ANY($3) AND outcome = 'running'",
            )
            .bind(now)
            .bind(INTERRUPTED_MESSAGE)
            .bind(&uuids)
            .execute(&mut *tx)
            .await
            .ctx("closing interrupted attempts")?;
            let started = sqlx::query(
                "INSERT INTO attempts (call_uuid, run_id, started_at, outcome)
                 SELECT u, $2, $3, 'running' FROM unnest($1::text[]) AS u
                 RETURNING id, call_uuid",
            )
            .bind(&uuids)
            .bind(request.owner.as_str())
            .bind(now)
            .fetch_all(&mut *tx)
            .await
            .ctx("starting the claims' attempts")?;
            let mut ids = std::collections::HashMap::with_capacity(started.len());
            for row in &started {
                let uuid: String = row.try_get("call_uuid").ctx("reading a started attempt")?;
                let id: i64 = row.try_get("id").ctx("reading a started attempt")?;
                ids.insert(uuid, id);
            }
            for (record, previous_attempts) in claimed {
                let id = ids.get(record.uuid.as_str()).copied().ok_or_else(|| {
                    LedgerError::Corrupt(format!(
                        "no attempt started for claimed call {}",
                        record.uuid
                    ))
                })?;
                claims.push(Claim {
                    record,
                    previous_attempts,
                    attempt: AttemptId(id),
                });
            }
        }
        tx.commit().await.ctx("committing a claim")?;
        sort_claims(&mut claims);
        Ok(claims)
    }

    async fn settle_once(
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

    async fn settle_many_once(
        &self,
        items: &[SettleItem<'_>],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, LedgerError> {
        // Rows are taken in uuid order, so two processes' groups cannot deadlock each other.
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by(|a, b| items[*a].uuid.cmp(items[*b].uuid));
        let mut held = vec![false; items.len()];
        let mut tx = self
            .pool
            .begin()
            .await
            .ctx("starting grouped settlements")?;
        for i in order {
            let item = &items[i];
            held[i] = settle_in(
                &mut tx,
                item.uuid,
                item.owner,
                &item.settlement,
                item.last_attempt.as_ref(),
                now,
            )
            .await?;
        }
        tx.commit().await.ctx("committing grouped settlements")?;
        Ok(held)
    }
}

/// One settlement inside the caller's transaction: the record's new state and, with it, the
/// end of its last attempt. `false` when `owner` no longer holds the lease.
async fn settle_in(
    conn: &mut PgConnection,
    uuid: &CallUuid,
    owner: &RunId,
    settlement: &Settlement<'_>,
    last_attempt: Option<&AttemptEnd<'_>>,
    now: DateTime<Utc>,
) -> Result<bool, LedgerError> {
    let now_at = at(now);
    let base = sqlx::query(match settlement {
        Settlement::Archived(..) => {
            "UPDATE calls SET state = 'archived', lease_owner = NULL, lease_until = NULL, updated_at = $3,
                    object_key = $4, size_bytes = $5, sha256 = $6, content_type = $7, etag = $8,
                    object_version = $9, archived_at = $10, last_error_code = NULL, last_error = NULL,
                    media_duration_ms = $11, media_note = $12
             WHERE uuid = $1 AND (lease_owner, state) IS NOT DISTINCT FROM ($2, 'in_progress')"
        }
        Settlement::Retry { .. } | Settlement::Released { .. } => {
            "UPDATE calls SET state = 'pending', lease_owner = NULL, lease_until = NULL, updated_at = $3,
                    next_attempt_at = $4, last_error_code = $5, last_error = $6
             WHERE uuid = $1 AND (lease_owner, state) IS NOT DISTINCT FROM ($2, 'in_progress')"
        }
        Settlement::Returned { .. } => {
            "UPDATE calls SET state = 'pending', lease_owner = NULL, lease_until = NULL, updated_at = $3,
                    next_attempt_at = $4, last_error_code = $5, last_error = $6,
                    attempts = $7
             WHERE uuid = $1 AND (lease_owner, state) IS NOT DISTINCT FROM ($2, 'in_progress')"
        }
        Settlement::Failed { .. } | Settlement::Expired { .. } => {
            "UPDATE calls SET state = $4, lease_owner = NULL, lease_until = NULL, updated_at = $3,
                    last_error_code = $5, last_error = $6
             WHERE uuid = $1 AND (lease_owner, state) IS NOT DISTINCT FROM ($2, 'in_progress')"
        }
    })
    .bind(uuid.as_str())
    .bind(owner.as_str())
    .bind(now_at);
    let query = match settlement {
        Settlement::Archived(obj, media) => base
            .bind(obj.key.as_str())
            .bind(big(obj.size))
            .bind(obj.sha256.as_str())
            .bind(obj.content_type.as_deref())
            .bind(obj.etag.as_deref())
            .bind(obj.version.as_deref())
            .bind(at(obj.archived_at))
            .bind(media.duration_ms)
            .bind(media.note.as_deref()),
        Settlement::Retry {
            next_attempt_at,
            code,
            message,
        } => base.bind(at(*next_attempt_at)).bind(*code).bind(*message),
        Settlement::Released { message } => base.bind(now_at).bind("interrupted").bind(*message),
        Settlement::Returned {
            code,
            message,
            attempts_before,
        } => base
            .bind(now_at)
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
    conn: &mut PgConnection,
    end: &AttemptEnd<'_>,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    sqlx::query(
        "UPDATE attempts SET finished_at = $1, outcome = $2, error_code = $3, message = $4, bytes = $5
         WHERE id = $6",
    )
    .bind(at(now))
    .bind(end.outcome.as_str())
    .bind(end.error_code)
    .bind(end.message)
    .bind(big(end.bytes))
    .bind(end.id.0)
    .execute(conn)
    .await
    .ctx("ending an attempt")?;
    Ok(())
}
