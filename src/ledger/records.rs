//! Call records coming in (import, upsert by uuid, taking over the row of a call first
//! found in the bill list) and being looked at (one row, by state).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::LedgerError;
use crate::domain::{CallRecord, CallUuid, RecordState, RunId};

/// What importing one record did to the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    New,
    /// The uuid was known; nothing changed.
    Known,
    /// The uuid was known without a recording and now has one: it became pending.
    RecordingAdded,
    /// The call was known from the provider's bill list only (`sync` found it): this
    /// callback took the row over, with its uuid and its record.
    MatchedBill,
}

impl ImportOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Known => "already_known",
            Self::RecordingAdded => "recording_added",
            Self::MatchedBill => "matched_bill",
        }
    }
}

/// Everything the ledger holds for one call, for inspection and tests.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerRow {
    #[serde(skip)]
    pub record: CallRecord,
    pub state: RecordState,
    pub attempts: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<RunId>,
    pub object_key: Option<String>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub content_type: Option<String>,
    pub etag: Option<String>,
    pub archived_at: Option<DateTime<Utc>>,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
    /// The manifest that lists this record, once one does.
    pub manifest_seq: Option<i64>,
    /// What `verify` last found (`ok`, `missing`, `changed`, `unreadable`).
    pub last_verify_result: Option<String>,
    /// When a sync last saw the call in the provider's bill list.
    pub bill_seen_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait Records: Send + Sync {
    /// Upserts records by uuid in one transaction. A record already known is left alone,
    /// except that a late recording for a call known as unanswered makes it pending. A call
    /// known only from the bill list (by the same uuid, else by bill id within the company,
    /// else by record file name) is taken over: the row gets the record's uuid, its raw
    /// record and fields, and keeps its archival state and attempts (`MatchedBill`). Safe
    /// when several receivers, or a receiver and a sync, import the same call at once: one
    /// row, one `New`.
    async fn import(
        &self,
        records: &[CallRecord],
        now: DateTime<Utc>,
    ) -> Result<Vec<ImportOutcome>, LedgerError>;

    /// One call's full row.
    async fn get(&self, uuid: &CallUuid) -> Result<Option<LedgerRow>, LedgerError>;

    /// The uuids of every record in `state`, oldest call first.
    async fn uuids_in_state(&self, state: RecordState) -> Result<Vec<CallUuid>, LedgerError>;
}
