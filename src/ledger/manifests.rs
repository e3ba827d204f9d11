//! The manifest chain as the ledger keeps it: which archived records are in no manifest
//! yet, who holds the chain head while a manifest is written, and what was written. The
//! head is claimed under the ledger's own lock (SQLite's write lock, a PostgreSQL advisory
//! lock), so two runs never write it at once, and a head left by a dead run is finished by
//! the next one.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::LedgerError;
use crate::domain::{CallUuid, RunId};

/// One archived object as a manifest (and `verify`) lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchivedEntry {
    pub uuid: CallUuid,
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub archived_at: DateTime<Utc>,
}

/// The manifest a new one names as its predecessor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestLink {
    pub seq: i64,
    pub key: String,
    pub sha256: String,
}

/// The chain head, claimed by one run to be written.
#[derive(Debug, Clone)]
pub struct ManifestClaim {
    pub seq: i64,
    pub key: String,
    /// The run that first claimed it (written into the manifest: a rewrite is identical).
    pub run_id: RunId,
    pub created_at: DateTime<Utc>,
    pub previous: Option<ManifestLink>,
    pub entries: u64,
    /// Claimed by a run that died (or failed) before writing it; taken over.
    pub taken_over: bool,
}

/// What claiming the chain head found.
#[derive(Debug, Clone)]
pub enum ChainClaim {
    Claimed(ManifestClaim),
    /// Another run is writing manifest `seq`; records it does not list wait for the next.
    Busy {
        seq: i64,
        owner: Option<RunId>,
    },
    /// Every archived record is already in a manifest.
    NothingNew,
}

/// A manifest the ledger knows.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestRow {
    pub seq: i64,
    pub key: String,
    pub written: bool,
    pub sha256: Option<String>,
    pub entries: i64,
}

/// Names the object of manifest `seq`.
pub type ManifestKeyFn<'a> = &'a (dyn Fn(i64) -> String + Send + Sync);

#[async_trait]
pub trait Manifests: Send + Sync {
    /// Claims the chain head for `owner` until `until`: a head left unwritten by a dead run
    /// first, else a new manifest listing every archived record in none yet.
    async fn claim_manifest(
        &self,
        owner: &RunId,
        key_for: ManifestKeyFn<'_>,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<ChainClaim, LedgerError>;

    /// Up to `limit` entries of manifest `seq` after uuid `after`, by uuid.
    async fn manifest_entries(
        &self,
        seq: i64,
        after: Option<&CallUuid>,
        limit: i64,
    ) -> Result<Vec<ArchivedEntry>, LedgerError>;

    /// Records manifest `seq` as written, if `owner` still holds it.
    async fn manifest_written(
        &self,
        seq: i64,
        owner: &RunId,
        sha256: &str,
        size: u64,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError>;

    /// Keeps `owner`'s claim on manifest `seq` alive while it is written.
    async fn renew_manifest(
        &self,
        seq: i64,
        owner: &RunId,
        until: DateTime<Utc>,
    ) -> Result<(), LedgerError>;

    /// Gives the chain head back unwritten: the next run takes it over at once.
    async fn release_manifest(&self, seq: i64, owner: &RunId) -> Result<(), LedgerError>;

    /// Every manifest the ledger knows, oldest first.
    async fn manifests(&self) -> Result<Vec<ManifestRow>, LedgerError>;

    /// How many archived records are in no manifest yet.
    async fn unlisted_archived(&self) -> Result<i64, LedgerError>;
}
