//! Legal holds and erasures as the ledger keeps them: which calls a hold (a case) keeps,
//! who placed and released it and why; and for each erased call a tombstone (what went,
//! when, why, by whom; none of the call's personal data), listed by the next manifest so
//! the chain stays whole. The ledger is where "on hold" is decided: a store without Object
//! Lock has no object-level hold, yet callvault never erases a held call.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{ArchivedEntry, LedgerError};
use crate::domain::{CallUuid, RecordState};

/// The id of one legal hold: `hold-<UTC time>-<8 hex digits>`, sortable by placement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct HoldId(String);

impl HoldId {
    pub fn generate() -> Self {
        Self(format!(
            "hold-{}-{}",
            Utc::now().format("%Y%m%dT%H%M%SZ"),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ))
    }

    /// A hold id as an operator types it (`--hold`), or as the ledger holds it.
    pub fn parse(raw: &str) -> Option<Self> {
        let s = raw.trim();
        (s.starts_with("hold-") && s.len() <= 64 && s.chars().all(|c| c.is_ascii_graphic()))
            .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HoldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the store did with a held call's object-level legal hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectHold {
    /// S3 legal hold set on the recording and its sidecar.
    Set,
    /// The store has no Object Lock API (a local directory, s3s-fs): the ledger hold alone
    /// applies, which stops callvault, not someone with the bucket's credentials.
    Unsupported,
    /// The call has no object yet (not archived): the ledger hold alone applies.
    NotArchived,
    /// The store did not answer: the ledger hold applies; run `hold` again.
    Failed,
}

impl ObjectHold {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Set => "set",
            Self::Unsupported => "unsupported",
            Self::NotArchived => "not_archived",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Set,
            Self::Unsupported,
            Self::NotArchived,
            Self::Failed,
        ]
        .into_iter()
        .find(|h| h.as_str() == s)
    }
}

/// A chosen call with what hold, erase and expire decide on.
#[derive(Debug, Clone, Serialize)]
pub struct CallFacts {
    pub uuid: CallUuid,
    pub state: RecordState,
    pub company_code: String,
    pub call_start: Option<DateTime<Utc>>,
    /// The record as received; `{}` once erased.
    #[serde(skip)]
    pub raw_json: String,
    /// The archived object, when the call is archived.
    pub object: Option<ArchivedEntry>,
    /// The holds that keep it now.
    pub holds: Vec<HoldId>,
    /// The manifest that lists (or is being written to list) the call, if any; and whether
    /// that manifest is written.
    pub manifest_seq: Option<i64>,
    pub manifest_written: bool,
}

/// A hold being placed.
#[derive(Debug, Clone)]
pub struct NewHold<'a> {
    pub id: &'a HoldId,
    pub reason: &'a str,
    pub placed_by: &'a str,
    pub placed_at: DateTime<Utc>,
    /// The selection it was placed with (JSON), for the record.
    pub selection: &'a serde_json::Value,
}

/// One hold as `callvault holds` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct HoldSummary {
    pub id: HoldId,
    pub reason: String,
    pub placed_by: String,
    pub placed_at: DateTime<Utc>,
    pub selection: serde_json::Value,
    /// Calls it keeps now.
    pub calls_held: i64,
    /// Calls released from it.
    pub calls_released: i64,
    /// Held calls whose object-level hold could not be set (unsupported store, failed, no
    /// object yet): the ledger hold alone keeps them.
    pub ledger_only: i64,
}

/// A call released from a hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Released {
    pub uuid: CallUuid,
    pub hold: HoldId,
    /// Whether another hold still keeps the call (then its object-level hold stays).
    pub still_held: bool,
}

/// What stays of an erased call: what went, when, why and by whom; no personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tombstone {
    pub uuid: CallUuid,
    pub key: String,
    pub sidecar_key: String,
    pub sha256: String,
    pub size: u64,
    pub archived_at: Option<DateTime<Utc>>,
    pub erased_at: DateTime<Utc>,
    pub reason: String,
    pub erased_by: String,
    /// Object versions deleted (recording and sidecar, every version the bucket kept).
    pub versions_deleted: u64,
    /// The manifest that lists the erasure (`None` until the next one is written).
    pub manifest_seq: Option<i64>,
}

/// What recording an erasure in the ledger found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum EraseRecorded {
    Erased,
    /// A hold was placed meanwhile: the ledger row is left as it was.
    OnHold {
        holds: Vec<HoldId>,
    },
    /// Not archived (any more): nothing recorded.
    NotArchived {
        state: Option<RecordState>,
    },
    /// The manifest listing it is being written: try again once it is.
    ManifestBeingWritten {
        seq: i64,
    },
}

#[async_trait]
pub trait Holds: Send + Sync {
    /// What hold, erase and expire decide on for each of `uuids` (chosen by a
    /// [`super::CallQuery`]), by uuid; unknown uuids are left out.
    async fn call_facts(&self, uuids: &[CallUuid]) -> Result<Vec<CallFacts>, LedgerError>;

    /// Records a new hold (its calls are added by [`Holds::add_held_calls`]).
    async fn create_hold(&self, hold: &NewHold<'_>) -> Result<(), LedgerError>;

    /// Adds calls to a hold (a call already in it is left as it was).
    async fn add_held_calls(
        &self,
        hold: &HoldId,
        calls: &[(CallUuid, ObjectHold)],
    ) -> Result<(), LedgerError>;

    /// Releases `calls` from every hold that keeps them (or only from `hold`); says, for
    /// each released pair, whether another hold still keeps the call.
    async fn release_calls(
        &self,
        calls: &[CallUuid],
        hold: Option<&HoldId>,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Released>, LedgerError>;

    /// Holds, newest first: only those keeping a call now, or all.
    async fn holds(&self, include_released: bool) -> Result<Vec<HoldSummary>, LedgerError>;

    /// In one transaction: if the call is still archived, on no hold and in no manifest
    /// being written, writes its tombstone, blanks its personal fields and marks it erased.
    async fn record_erasure(&self, tombstone: &Tombstone) -> Result<EraseRecorded, LedgerError>;

    /// The tombstone of an erased call.
    async fn tombstone(&self, uuid: &CallUuid) -> Result<Option<Tombstone>, LedgerError>;

    /// Up to `limit` erasures manifest `seq` lists, after uuid `after`, by uuid.
    async fn manifest_erasures(
        &self,
        seq: i64,
        after: Option<&CallUuid>,
        limit: i64,
    ) -> Result<Vec<Tombstone>, LedgerError>;

    /// How many calls were erased, and how many erasures are in no manifest yet.
    async fn erasure_counts(&self) -> Result<(i64, i64), LedgerError>;
}
