//! The words every part of callvault shares: call ids, record states, what was archived.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The provider's call `uuid`, the ledger's key. Never empty, never padded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CallUuid(String);

impl CallUuid {
    /// Accepts any non-blank id of at most 128 printable characters.
    pub fn parse(raw: &str) -> Option<Self> {
        let s = raw.trim();
        let ok = !s.is_empty() && s.len() <= 128 && s.chars().all(|c| !c.is_control());
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of a call the provider named only by its bill `id` within a company (a bill
    /// without `uuid`, or a callback whose `uuid` is missing): `bill-<company>-<id>`. A
    /// callback that later names the call's uuid takes the row over (see
    /// [`crate::ledger::Records::import`]).
    pub fn for_bill(company_code: &str, bill_id: &str) -> Option<Self> {
        Self::parse(&format!(
            "{BILL_KEY_PREFIX}{}-{}",
            company_code.trim(),
            bill_id.trim()
        ))
    }

    /// Whether this key was made by [`CallUuid::for_bill`], not given by the provider.
    pub fn is_bill_key(&self) -> bool {
        self.0.starts_with(BILL_KEY_PREFIX)
    }
}

const BILL_KEY_PREFIX: &str = "bill-";

impl std::ops::Deref for CallUuid {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for CallUuid {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for CallUuid {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for CallUuid {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl fmt::Display for CallUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a call record stands in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Waiting for an archival attempt (possibly not before `next_attempt_at`).
    Pending,
    /// Claimed by a run holding a lease.
    InProgress,
    /// In the store, verified, checksum recorded.
    Archived,
    /// Permanently failed; not retried automatically.
    Failed,
    /// The provider no longer has the file and the call is past the retention horizon.
    Expired,
    /// Unanswered call: the provider recorded nothing.
    NoRecording,
    /// Archived, then erased (`callvault erase` or `expire`): the recording and its sidecar
    /// are gone from the store, the row's personal fields blanked; a tombstone says what
    /// went, when, why and by whom.
    Erased,
}

impl RecordState {
    pub const ALL: [RecordState; 7] = [
        Self::Pending,
        Self::InProgress,
        Self::Archived,
        Self::Failed,
        Self::Expired,
        Self::NoRecording,
        Self::Erased,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InProgress => "in_progress",
            Self::Archived => "archived",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::NoRecording => "no_recording",
            Self::Erased => "erased",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for RecordState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the ledger learnt of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The provider's call-record callback (received by `serve`, or imported).
    Callback,
    /// Only the provider's bill list (`sync`): the callback never came. A callback that
    /// arrives later turns the row into a `Callback` one.
    Bill,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Callback => "callback",
            Self::Bill => "bill",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Callback, Self::Bill]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// A call record as the provider's callback (or bill) describes it, reduced to what the job
/// needs, plus the original JSON verbatim.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    pub uuid: CallUuid,
    /// Empty when the provider's was missing or unreadable (then noted).
    pub company_code: String,
    /// Empty for unanswered calls.
    pub record_file: String,
    /// Call start in UTC (the provider's zone-less time converted), when it had one.
    pub call_start: Option<DateTime<Utc>>,
    pub billsec: Option<i64>,
    /// The callback (or bill) exactly as received.
    pub raw_json: String,
    /// The provider's id of the call: the bill's `id`, the callback's `id`.
    pub bill_id: Option<String>,
    /// The fields that could not be read, each with why (`billsec: "abc" is not a whole
    /// number`); the record was stored without them.
    pub notes: Option<String>,
    pub origin: Origin,
    /// When the ledger first stored it (none before); an undated call's object key uses
    /// this day.
    pub received_at: Option<DateTime<Utc>>,
}

impl CallRecord {
    pub fn has_recording(&self) -> bool {
        !self.record_file.trim().is_empty()
    }

    /// A record with only what every record has; the rest empty (tests, tools).
    pub fn new(uuid: CallUuid, company_code: &str, record_file: &str, raw_json: &str) -> Self {
        Self {
            uuid,
            company_code: company_code.to_owned(),
            record_file: record_file.to_owned(),
            call_start: None,
            billsec: None,
            raw_json: raw_json.to_owned(),
            bill_id: None,
            notes: None,
            origin: Origin::Callback,
            received_at: None,
        }
    }

    /// The day the record is filed under: its call's start, else the day it was received.
    pub fn filing_time(&self) -> Option<DateTime<Utc>> {
        self.call_start.or(self.received_at)
    }
}

/// A record claimed by one run for one archival attempt.
#[derive(Debug, Clone)]
pub struct Claim {
    pub record: CallRecord,
    /// Attempts made before this claim (in all runs).
    pub previous_attempts: i64,
    /// The attempt the claim started (in the claim's own commit): the first of this run.
    pub attempt: AttemptId,
}

/// What the store holds for an archived record; written to the ledger only after verification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchivedObject {
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub content_type: Option<String>,
    pub etag: Option<String>,
    pub version: Option<String>,
    pub archived_at: DateTime<Utc>,
}

/// The id of one `callvault run` (or scheduled pass); also the owner of the leases and the
/// manifest claim the run holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// A fresh id: `run-<UTC time>-<8 hex digits>`, sortable by start.
    pub fn generate() -> Self {
        Self(format!(
            "run-{}-{}",
            Utc::now().format("%Y%m%dT%H%M%SZ"),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An id read back from the ledger (or given by a test).
impl From<&str> for RunId {
    fn from(raw: &str) -> Self {
        Self(raw.to_owned())
    }
}

impl From<String> for RunId {
    fn from(raw: String) -> Self {
        Self(raw)
    }
}

impl std::ops::Deref for RunId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<&str> for RunId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The ledger's id of one archival attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AttemptId(pub i64);

/// How one attempt ended, as the attempts table records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Started and not ended yet (or its process died: see `Interrupted`).
    Running,
    Archived,
    /// A passing failure; the record is tried again.
    Transient,
    Failed,
    Expired,
    /// Shutdown: the record was given back.
    Aborted,
    /// The run stopped (the provider refused the credentials); the record was given back.
    Stopped,
    /// Its run died before it ended; closed by the next claim of the record.
    Interrupted,
    /// Another run took the record over before this attempt settled it.
    LeaseLost,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 9] = [
        Self::Running,
        Self::Archived,
        Self::Transient,
        Self::Failed,
        Self::Expired,
        Self::Aborted,
        Self::Stopped,
        Self::Interrupted,
        Self::LeaseLost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Archived => "archived",
            Self::Transient => "transient",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Aborted => "aborted",
            Self::Stopped => "stopped",
            Self::Interrupted => "interrupted",
            Self::LeaseLost => "lease_lost",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run ended, as the runs table records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Completed,
    Interrupted,
    Stopped,
    CredentialsRefused,
}

impl RunStatus {
    pub const ALL: [RunStatus; 5] = [
        Self::Running,
        Self::Completed,
        Self::Interrupted,
        Self::Stopped,
        Self::CredentialsRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Interrupted => "interrupted",
            Self::Stopped => "stopped",
            Self::CredentialsRefused => "credentials_refused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
