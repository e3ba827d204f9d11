//! Work distribution: claiming due records under a lease, recording attempts, and settling
//! each claim with its outcome. Every change to a claimed record checks that the lease is
//! still ours, so two runs (on one machine or many) can never both settle the same record.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{LedgerError, MediaNote};
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

/// [`Claims::give_back_attempts`] on both backends: `$1` run, `$2` error code, `$3` now.
/// First the records: pending, last left for this reason, with this run's attempts of it.
pub(super) const GIVE_BACK_RECORDS: &str = "UPDATE calls SET next_attempt_at = $3, updated_at = $3,
        attempts = attempts - (SELECT COUNT(*) FROM attempts a
                               WHERE a.call_uuid = calls.uuid AND a.run_id = $1
                                 AND a.error_code = $2 AND a.outcome = 'transient')
     WHERE state = 'pending' AND last_error_code = $2
       AND uuid IN (SELECT call_uuid FROM attempts
                    WHERE run_id = $1 AND error_code = $2 AND outcome = 'transient')";
/// Then their attempts, which no longer count (the same records: still pending, same reason).
pub(super) const GIVE_BACK_ATTEMPTS: &str = "UPDATE attempts SET outcome = 'stopped'
     WHERE run_id = $1 AND error_code = $2 AND outcome = 'transient'
       AND call_uuid IN (SELECT uuid FROM calls WHERE state = 'pending' AND last_error_code = $2)";

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

    /// Settles several claims (any owners) in one transaction and one commit, each as
    /// [`Claims::settle`] would: one `bool` per item, in order, `false` where the lease was
    /// lost. Either every settlement of the group is written or none is.
    async fn settle_many(
        &self,
        items: &[SettleItem<'_>],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, LedgerError>;
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
