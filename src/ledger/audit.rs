//! The ledger's side of auditing: archived records to read back (and what the read-back
//! found), the records that failed, and putting chosen failed records back in the queue.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{ArchivedEntry, LedgerError, Slice};
use crate::domain::{CallUuid, RecordState};

/// A failed or expired record, with why.
#[derive(Debug, Clone, Serialize)]
pub struct FailedRecord {
    pub uuid: CallUuid,
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
    Uuids(&'a [CallUuid]),
    ErrorCode(&'a str),
    All,
}

/// What `retry` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetryOutcome {
    pub requeued: u64,
    /// Named uuids left alone: unknown (`None`) or not in a state retry may touch.
    pub skipped: Vec<(CallUuid, Option<RecordState>)>,
}

/// What reading one object back found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyResult {
    Ok,
    Missing,
    Changed,
    Unreadable,
}

impl VerifyResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Missing => "missing",
            Self::Changed => "changed",
            Self::Unreadable => "unreadable",
        }
    }
}

#[async_trait]
pub trait Audit: Send + Sync {
    /// Up to `limit` archived records of `slice` after uuid `after`, by uuid.
    async fn archived_page(
        &self,
        slice: &Slice,
        after: Option<&CallUuid>,
        limit: i64,
    ) -> Result<Vec<ArchivedEntry>, LedgerError>;

    /// How many archived records `slice` holds.
    async fn archived_count(&self, slice: &Slice) -> Result<i64, LedgerError>;

    /// Records what reading objects back found.
    async fn record_verified(
        &self,
        results: &[(CallUuid, VerifyResult)],
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;

    /// Starts a `verify` in the audit trail.
    async fn start_verification(
        &self,
        id: &str,
        scope: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;

    async fn finish_verification(
        &self,
        id: &str,
        checked: u64,
        problems: u64,
        summary: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;

    /// Up to `limit` failed and expired records after uuid `after` (by uuid), optionally
    /// only those whose last error has `code`.
    async fn failures_page(
        &self,
        code: Option<&str>,
        after: Option<&CallUuid>,
        limit: i64,
    ) -> Result<Vec<FailedRecord>, LedgerError>;

    /// Puts the chosen failed (and, with `include_expired`, expired) records back to
    /// `pending`, due now, with their attempt count reset (the attempts table keeps the
    /// history). Never touches records in any other state.
    async fn retry_failed(
        &self,
        selection: RetrySelection<'_>,
        include_expired: bool,
        now: DateTime<Utc>,
    ) -> Result<RetryOutcome, LedgerError>;
}
