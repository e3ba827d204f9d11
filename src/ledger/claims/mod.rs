//! Work distribution: claiming due records under a lease, recording attempts, and settling
//! each claim with its outcome. Every change to a claimed record checks that the lease is
//! still ours, so two runs (on one machine or many) can never both settle the same record.
//!
//! Every operation is written once, here, over the seam of `sql.rs`. What a backend keeps
//! is how a batch is claimed ([`ClaimBatch`]), because that is where the engines differ in
//! mechanism: PostgreSQL serves many workers at once, so a claim is one statement in the
//! manner of River's `JobGetAvailable` that picks and locks the due rows with
//! `FOR UPDATE SKIP LOCKED` (a row another worker is claiming or settling is passed over,
//! never waited for; locking re-reads a row changed since the statement began and drops it
//! if it no longer matches, so a lapsed lease is taken over exactly once); SQLite has one
//! writer at a time, so its claim simply updates the oldest due batch under the write lock.
//! Which records are due, and in which order, is the same on both (`due.rs`).

mod attempts;
mod due;
mod settle;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub(crate) use self::due::due_candidates;
use super::sql::{Db, Row, Stmt, Tx, record_from_row, retry_conflicts};
use super::{BackendKind, LedgerError, MediaNote};
use crate::domain::{
    ArchivedObject, AttemptId, AttemptOutcome, CallRecord, CallUuid, Claim, RunId,
};

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
    /// Verified in the store, with what the media check noted (in the same commit).
    Archived(&'a ArchivedObject, &'a MediaNote),
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
    /// The run stopped (refused credentials, a store that refuses us, an outage), no fault
    /// of the record's: back to pending, due at once, and the attempt the claim counted is
    /// given back: `attempts` is set to `attempts_before`, the count before the claim (the
    /// attempts rows stay, closed as `stopped`, for the audit trail).
    Returned {
        code: &'a str,
        message: &'a str,
        attempts_before: i64,
    },
}

/// The end of one attempt, as written to the attempts table.
#[derive(Debug, Clone)]
pub struct AttemptEnd<'a> {
    pub id: AttemptId,
    pub outcome: AttemptOutcome,
    pub error_code: Option<&'a str>,
    pub message: Option<&'a str>,
    pub bytes: u64,
}

/// One settlement of a group committed together ([`Claims::settle_many`]).
#[derive(Debug, Clone)]
pub struct SettleItem<'a> {
    pub uuid: &'a CallUuid,
    pub owner: &'a RunId,
    pub settlement: Settlement<'a>,
    pub last_attempt: Option<AttemptEnd<'a>>,
}

/// What a claim asks for: whose lease, until when, and how many records at most.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub owner: &'a RunId,
    pub slice: &'a Slice,
    /// Pending records are due when their next attempt falls before this (a run passes its
    /// start, so it never takes back what it gave up on).
    pub due_by: DateTime<Utc>,
    /// Leases that ran out before this are taken over.
    pub now: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    /// At most this many records (at least one).
    pub limit: u32,
}

/// The message an attempt left running by a dead run is closed with.
pub const INTERRUPTED_MESSAGE: &str =
    "the run ended before this attempt did (killed or lease expired)";

/// The message of an attempt whose lease another run took before it settled.
pub fn lease_lost_message(would_have_been: AttemptOutcome) -> String {
    format!("lease lost before settling (would have been {would_have_been})")
}

#[async_trait]
pub trait Claims: Send + Sync {
    /// Claims up to `limit` due records in one statement, oldest call first (undated
    /// calls last, then by uuid): pending records due by `due_by`, and records whose lease
    /// ran out (their run died), which are due at once, except the claimer's own (its
    /// renewals may have failed while one of its workers still transfers the record). An
    /// attempt left `running` on a claimed record is closed as `interrupted`, and each
    /// claimed record's next attempt is started and counted ([`Claim::attempt`]), all in
    /// one commit. Empty when nothing is due.
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claim>, LedgerError>;

    /// Extends every lease `owner` holds; called periodically while transfers run.
    async fn renew_leases(
        &self,
        owner: &RunId,
        lease_until: DateTime<Utc>,
    ) -> Result<u64, LedgerError>;

    /// The records a run would claim now, oldest call first, without claiming them.
    async fn due(
        &self,
        slice: &Slice,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<CallRecord>, LedgerError>;

    /// How many records are due now (for progress and planning).
    async fn count_due(&self, slice: &Slice, now: DateTime<Utc>) -> Result<u64, LedgerError>;

    /// Starts another attempt on a claimed record (the claim started the first).
    async fn begin_attempt(
        &self,
        uuid: &CallUuid,
        run_id: &RunId,
        now: DateTime<Utc>,
    ) -> Result<AttemptId, LedgerError>;

    /// Ends an attempt that does not settle its record (it will be tried again in this run).
    async fn finish_attempt(
        &self,
        end: &AttemptEnd<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;

    /// How many ended attempts on `uuid` came back with `error_code`, and when the first of
    /// them started: whether an answer that says the recording cannot be had repeats.
    async fn answers_like(
        &self,
        uuid: &CallUuid,
        error_code: &str,
    ) -> Result<(u32, Option<DateTime<Utc>>), LedgerError>;

    /// How many ended attempts on `uuid` came back with `error_code` and exactly `message`:
    /// whether the provider served the very same odd body before (the message names its
    /// SHA-256).
    async fn answers_with(
        &self,
        uuid: &CallUuid,
        error_code: &str,
        message: &str,
    ) -> Result<u32, LedgerError>;

    /// Settles a claim and, in the same transaction, ends its last attempt. Returns `false`
    /// (and records the attempt as `lease_lost`) when `owner` no longer holds the lease.
    async fn settle(
        &self,
        uuid: &CallUuid,
        owner: &RunId,
        settlement: &Settlement<'_>,
        last_attempt: Option<&AttemptEnd<'_>>,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError>;

    /// Settles several claims (any owners) in one transaction and one commit, each as
    /// [`Claims::settle`] would: one `bool` per item, in order, `false` where the lease was
    /// lost. Either every settlement of the group is written or none is.
    async fn settle_many(
        &self,
        items: &[SettleItem<'_>],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, LedgerError>;

    /// Gives back the attempts `run` spent failing with `error_code` (a reason the run has
    /// since found to be an outage, not the records' fault) to the records it left pending
    /// for that same reason (their last error is `error_code`), in one transaction: their
    /// `attempts` lowered by that many, those attempts closed as `stopped` (kept for the
    /// audit trail, as a stopped run's are), and the records due at `now`. Returns how many
    /// records got attempts back; run again, it gives nothing more back.
    async fn give_back_attempts(
        &self,
        run: &RunId,
        error_code: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, LedgerError>;
}

/// [`Claims::give_back_attempts`]: `$1` run, `$2` error code, `$3` now. First the records:
/// pending, last left for this reason, with this run's attempts of it.
const GIVE_BACK_RECORDS: &str = "UPDATE calls SET next_attempt_at = $3, updated_at = $3,
        attempts = attempts - (SELECT COUNT(*) FROM attempts a
                               WHERE a.account = calls.account AND a.call_uuid = calls.uuid
                                 AND a.run_id = $1 AND a.error_code = $2
                                 AND a.outcome = 'transient')
     WHERE account = $4 AND state = 'pending' AND last_error_code = $2
       AND uuid IN (SELECT call_uuid FROM attempts
                    WHERE account = $4 AND run_id = $1 AND error_code = $2
                      AND outcome = 'transient')";
/// Then their attempts, which no longer count (the same records: still pending, same reason).
const GIVE_BACK_ATTEMPTS: &str = "UPDATE attempts SET outcome = 'stopped'
     WHERE account = $3 AND run_id = $1 AND error_code = $2 AND outcome = 'transient'
       AND call_uuid IN (SELECT uuid FROM calls
                         WHERE account = $3 AND state = 'pending' AND last_error_code = $2)";

async fn give_back_once<D: Db>(
    db: &D,
    run: &RunId,
    error_code: &str,
    now: DateTime<Utc>,
) -> Result<u64, LedgerError> {
    let mut tx = db.begin_write("starting to give attempts back").await?;
    let records = tx
        .execute(
            Stmt::new(GIVE_BACK_RECORDS, "giving attempts back")
                .bind(run.as_str())
                .bind(error_code)
                .bind(now)
                .bind(db.account()),
        )
        .await?;
    tx.execute(
        Stmt::new(GIVE_BACK_ATTEMPTS, "closing the attempts given back")
            .bind(run.as_str())
            .bind(error_code)
            .bind(db.account()),
    )
    .await?;
    tx.commit().await?;
    Ok(records)
}

/// How a backend claims a batch: the one part of work distribution whose mechanism differs
/// between the engines (see the module documentation).
pub(crate) trait ClaimBatch: Db {
    /// The one statement that marks the oldest due records of `slice` `in_progress` under
    /// `$7`'s lease until `$8` (updated at `$4`, each attempt counted) and returns them:
    /// `RECORD_COLUMNS` and `attempts`, the count before the claim. Parameters as in
    /// [`due_candidates`]: `$1`..`$3` the slice, `$4` now, `$5` due by, `$6` the most records;
    /// `$9` the account.
    fn claim_sql(&self, slice: &Slice) -> &'static str;

    /// Whether that statement also closes the attempts left running on the records it
    /// claims (`$10` their message) and starts each record's attempt, returning its id as
    /// `attempt`, so the claim is that one statement, committed on its own (PostgreSQL,
    /// where each statement saved is a round trip and locks held shorter); otherwise the
    /// claim's transaction starts them ([`attempts::start_claimed`]; SQLite has no
    /// data-modifying `WITH`).
    const STARTS_ATTEMPTS: bool;
}

#[async_trait]
impl<D: ClaimBatch> Claims for D {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claim>, LedgerError> {
        retry_conflicts(|| claim_once(self, request)).await
    }

    async fn renew_leases(
        &self,
        owner: &RunId,
        lease_until: DateTime<Utc>,
    ) -> Result<u64, LedgerError> {
        // Many rows in one statement, which may wait for a row a settlement holds
        // (PostgreSQL): run again if it ever loses a deadlock.
        retry_conflicts(|| {
            self.execute(
                Stmt::new(
                    "UPDATE calls SET lease_until = $1 WHERE lease_owner = $2 AND state = 'in_progress'",
                    "renewing leases",
                )
                .bind(lease_until)
                .bind(owner.as_str()),
            )
        })
        .await
    }

    async fn due(
        &self,
        slice: &Slice,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<CallRecord>, LedgerError> {
        let stmt = Stmt::new(due::due_sql(self.dialect(), slice), "listing due records")
            .slice(slice)
            .bind(now)
            .bind(now)
            .bind(limit.max(0))
            .bind(self.account());
        let rows = self.fetch_all(stmt).await?;
        rows.iter().map(record_from_row).collect()
    }

    async fn count_due(&self, slice: &Slice, now: DateTime<Utc>) -> Result<u64, LedgerError> {
        let stmt = Stmt::new(
            due::count_sql(self.dialect(), slice),
            "counting due records",
        )
        .slice(slice)
        .bind(now)
        .bind(self.account());
        self.fetch_one(stmt).await?.count("n")
    }

    async fn begin_attempt(
        &self,
        uuid: &CallUuid,
        run_id: &RunId,
        now: DateTime<Utc>,
    ) -> Result<AttemptId, LedgerError> {
        const CONTEXT: &str = "recording an attempt";
        let start = |text| {
            Stmt::new(text, CONTEXT)
                .bind(uuid)
                .bind(run_id.as_str())
                .bind(now)
                .bind(self.account())
        };
        let row = match self.dialect() {
            BackendKind::Postgres => {
                self.fetch_one(start(attempts::BEGIN_ATTEMPT_POSTGRES))
                    .await?
            }
            BackendKind::Sqlite => {
                let mut tx = self.begin("starting an attempt").await?;
                let count = Stmt::new(attempts::COUNT_ATTEMPT, "counting an attempt")
                    .bind(uuid)
                    .bind(self.account());
                tx.execute(count).await?;
                let row = tx.fetch_one(start(attempts::START_ATTEMPT)).await?;
                tx.commit().await?;
                row
            }
        };
        Ok(AttemptId(row.int("id")?))
    }

    async fn finish_attempt(
        &self,
        end: &AttemptEnd<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.execute(settle::finish_stmt(end, now)).await?;
        Ok(())
    }

    async fn answers_like(
        &self,
        uuid: &CallUuid,
        error_code: &str,
    ) -> Result<(u32, Option<DateTime<Utc>>), LedgerError> {
        let row = self
            .fetch_one(
                Stmt::new(
                    "SELECT COUNT(*) AS n, MIN(started_at) AS first FROM attempts
                     WHERE account = $3 AND call_uuid = $1 AND error_code = $2
                       AND finished_at IS NOT NULL",
                    "counting repeated answers",
                )
                .bind(uuid)
                .bind(error_code)
                .bind(self.account()),
            )
            .await?;
        Ok((small(row.count("n")?), row.opt_time("first")?))
    }

    async fn answers_with(
        &self,
        uuid: &CallUuid,
        error_code: &str,
        message: &str,
    ) -> Result<u32, LedgerError> {
        let row = self
            .fetch_one(
                Stmt::new(
                    "SELECT COUNT(*) AS n FROM attempts
                     WHERE account = $4 AND call_uuid = $1 AND error_code = $2 AND message = $3
                       AND finished_at IS NOT NULL",
                    "counting identical answers",
                )
                .bind(uuid)
                .bind(error_code)
                .bind(message)
                .bind(self.account()),
            )
            .await?;
        Ok(small(row.count("n")?))
    }

    async fn settle(
        &self,
        uuid: &CallUuid,
        owner: &RunId,
        settlement: &Settlement<'_>,
        last_attempt: Option<&AttemptEnd<'_>>,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let kind = self.dialect();
        retry_conflicts(|| async {
            let one = settle::in_one_statement(
                kind,
                self.account(),
                uuid,
                owner,
                settlement,
                last_attempt,
                now,
            );
            if let Some(stmt) = one {
                return settle::held(&self.fetch_one(stmt).await?);
            }
            let mut tx = self.begin("starting a settlement").await?;
            let held = settle::settle_in(&mut tx, kind, uuid, owner, settlement, last_attempt, now)
                .await?;
            tx.commit().await?;
            Ok(held)
        })
        .await
    }

    async fn settle_many(
        &self,
        items: &[SettleItem<'_>],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, LedgerError> {
        retry_conflicts(|| settle_many_once(self, items, now)).await
    }

    async fn give_back_attempts(
        &self,
        run: &RunId,
        error_code: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, LedgerError> {
        retry_conflicts(|| give_back_once(self, run, error_code, now)).await
    }
}

/// A count that fits the caller's `u32` (saturating).
fn small(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One attempt at a claim: the backend's batch, then each record's attempt, in one
/// transaction (or in the batch's own statement, [`ClaimBatch::STARTS_ATTEMPTS`]).
async fn claim_once<D: ClaimBatch>(
    db: &D,
    request: &ClaimRequest<'_>,
) -> Result<Vec<Claim>, LedgerError> {
    let batch = Stmt::new(db.claim_sql(request.slice), "claiming records")
        .slice(request.slice)
        .bind(request.now)
        .bind(request.due_by)
        .bind(request.limit.max(1))
        .bind(request.owner.as_str())
        .bind(request.lease_until)
        .bind(db.account());
    let mut claims = if D::STARTS_ATTEMPTS {
        let rows = db.fetch_all(batch.bind(INTERRUPTED_MESSAGE)).await?;
        rows.iter()
            .map(|row| {
                Ok(Claim {
                    record: record_from_row(row)?,
                    previous_attempts: row.int("attempts")?,
                    attempt: AttemptId(row.int("attempt")?),
                })
            })
            .collect::<Result<Vec<_>, LedgerError>>()?
    } else {
        let mut tx = db.begin("starting a claim").await?;
        let claimed = tx
            .fetch_all(batch)
            .await?
            .iter()
            .map(|row| Ok((record_from_row(row)?, row.int("attempts")?)))
            .collect::<Result<Vec<_>, LedgerError>>()?;
        let claims = attempts::start_claimed(&mut tx, claimed, request.owner, request.now).await?;
        tx.commit().await?;
        claims
    };
    sort_claims(&mut claims);
    Ok(claims)
}

/// One attempt at a group's transaction. Rows are taken in uuid order, so two processes'
/// groups cannot deadlock each other (PostgreSQL).
async fn settle_many_once<D: Db>(
    db: &D,
    items: &[SettleItem<'_>],
    now: DateTime<Utc>,
) -> Result<Vec<bool>, LedgerError> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|a, b| items[*a].uuid.cmp(items[*b].uuid));
    let mut held = vec![false; items.len()];
    let mut tx = db.begin("starting grouped settlements").await?;
    for i in order {
        let item = &items[i];
        held[i] = settle::settle_in(
            &mut tx,
            db.dialect(),
            item.uuid,
            item.owner,
            &item.settlement,
            item.last_attempt.as_ref(),
            now,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(held)
}

/// Puts claims in claim order: oldest call first, undated calls last, then by uuid (the
/// order the ledger picked them in; `RETURNING` gives no order of its own).
pub fn sort_claims(claims: &mut [Claim]) {
    claims.sort_by(|a, b| {
        let (a, b) = (&a.record, &b.record);
        match (a.call_start, b.call_start) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
        .then_with(|| a.uuid.cmp(&b.uuid))
    });
}
