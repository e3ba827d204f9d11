//! Reconciliation with the provider's bill list: the bills `sync` reads, matched to the calls
//! the ledger already holds (by uuid, else by bill id within the company, else by record
//! file name) so that no call is ever stored twice; the syncs themselves (window, progress,
//! findings) with the checkpoint the next sync continues from; and the completeness report
//! built from both.

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde::Serialize;

use super::{ImportOutcome, LedgerError};
use crate::domain::CallRecord;

/// The id of one `callvault sync` (or scheduled sync).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct SyncId(String);

impl SyncId {
    /// A fresh id: `sync-<UTC time>-<8 hex digits>`, sortable by start.
    pub fn generate() -> Self {
        Self(format!(
            "sync-{}-{}",
            Utc::now().format("%Y%m%dT%H%M%SZ"),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ))
    }

    pub fn from_ledger(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SyncId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    /// Still running, or its process died (its `covered_until` still counts).
    Running,
    /// Read every bill of its window.
    Completed,
    /// Stopped by a provider or ledger problem; what it covered counts.
    Failed,
    /// The provider refused the credentials.
    CredentialsRefused,
}

impl SyncStatus {
    pub const ALL: [SyncStatus; 4] = [
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::CredentialsRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::CredentialsRefused => "credentials_refused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// What a sync has done so far; written after every window, so a sync that dies keeps what
/// it covered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncProgress {
    /// Every bill of a call that started before this has been read and matched.
    pub covered_until: Option<DateTime<Utc>>,
    /// Bills read (after de-duplication within the sync).
    pub bills: i64,
    /// Calls the ledger did not know: their callback never came.
    pub found: i64,
    /// Calls known without a recording that the bill gave one.
    pub recordings_added: i64,
    /// Bills that named no call (neither uuid nor id) and could not be matched.
    pub unreadable: i64,
    /// Requests made to the provider (pages, logins).
    pub requests: i64,
}

/// One sync as the ledger keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct SyncRow {
    pub id: SyncId,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: SyncStatus,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub exit_code: Option<i64>,
    #[serde(flatten)]
    pub progress: SyncProgress,
}

/// What `status` and `/metrics` show of the syncs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncFigures {
    pub last_sync: Option<SyncRow>,
    /// When the last sync that read its whole window finished.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Calls known only from the bill list: their callback never came.
    pub found_by_sync: i64,
    /// Calls stored with fields that could not be read (see their `notes`).
    pub noted: i64,
}

/// One day (in the provider's zone) of one company in the completeness report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DayCompleteness {
    pub day: Option<NaiveDate>,
    pub company_code: String,
    /// Calls a sync saw in the provider's bill list.
    pub provider_listed: i64,
    /// Calls in the ledger.
    pub in_ledger: i64,
    pub archived: i64,
    /// Pending or in progress.
    pub pending: i64,
    /// Failed or expired.
    pub failed: i64,
    pub no_recording: i64,
    /// Known only from the bill list: the callback never came.
    pub found_by_sync: i64,
    /// Not archived (and with a recording) and within 14 days of the provider's deletion.
    pub at_risk: i64,
}

impl DayCompleteness {
    /// Every call of the day is either archived or has no recording, and the ledger holds
    /// at least every call the provider listed.
    pub fn complete(&self) -> bool {
        self.archived + self.no_recording == self.in_ledger
            && self.in_ledger >= self.provider_listed
    }
}

#[async_trait]
pub trait Syncs: Send + Sync {
    /// Matches each bill to the call the ledger holds (by uuid, else bill id within the
    /// company, else record file name) and notes that the provider listed it; a call the
    /// ledger lacks is stored (`New`: pending with a recording, else `no_recording`), one
    /// known without a recording gets the bill's (`RecordingAdded`); a call's callback data
    /// is never replaced by its bill's. Safe against callbacks of the same calls arriving at
    /// once (one row per call).
    async fn import_bills(
        &self,
        bills: &[CallRecord],
        now: DateTime<Utc>,
    ) -> Result<Vec<ImportOutcome>, LedgerError>;

    async fn start_sync(&self, sync: &SyncRow) -> Result<(), LedgerError>;

    async fn record_sync_progress(
        &self,
        id: &SyncId,
        progress: &SyncProgress,
    ) -> Result<(), LedgerError>;

    async fn finish_sync(
        &self,
        id: &SyncId,
        status: SyncStatus,
        progress: &SyncProgress,
        exit_code: i32,
        finished_at: DateTime<Utc>,
    ) -> Result<(), LedgerError>;

    /// Where the bill list has been read up to: the newest `covered_until` of any sync.
    async fn sync_checkpoint(&self) -> Result<Option<DateTime<Utc>>, LedgerError>;

    async fn sync_figures(&self) -> Result<SyncFigures, LedgerError>;

    /// Per day (calls by start in `tz`; undated calls by the day they were received) and
    /// company, for calls in `[since, until)`; `risk_line` as in `status`.
    async fn completeness(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        tz: FixedOffset,
        risk_line: DateTime<Utc>,
    ) -> Result<Vec<DayCompleteness>, LedgerError>;
}
