//! What verification reports: objects that are not what the ledger says, and a manifest
//! chain that is not as written; as JSON (tagged by `problem`) and as one line of text.

use std::fmt;

use serde::Serialize;

/// What reading one object back found, when it is not what the ledger says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum ObjectProblem {
    Missing {
        uuid: String,
        key: String,
        expected_sha256: String,
        expected_size: u64,
    },
    Changed {
        uuid: String,
        key: String,
        expected_sha256: String,
        expected_size: u64,
        found_sha256: String,
        found_size: u64,
    },
    Unreadable {
        uuid: String,
        key: String,
        error: String,
    },
    /// The object's Object Lock is missing, of another mode, or shorter than the policy
    /// asks (its bytes may be fine).
    LockShort {
        uuid: String,
        key: String,
        detail: String,
    },
}

impl ObjectProblem {
    /// As recorded on the call (`last_verify_result`).
    pub fn label(&self) -> &'static str {
        self.result().as_str()
    }

    /// What the ledger records for this problem.
    pub fn result(&self) -> crate::ledger::VerifyResult {
        use crate::ledger::VerifyResult;
        match self {
            Self::Missing { .. } => VerifyResult::Missing,
            Self::Changed { .. } => VerifyResult::Changed,
            Self::Unreadable { .. } => VerifyResult::Unreadable,
            // The read-back itself is recorded on its own; the lock is reported here.
            Self::LockShort { .. } => VerifyResult::Ok,
        }
    }
}

impl fmt::Display for ObjectProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing {
                uuid,
                key,
                expected_sha256,
                expected_size,
            } => write!(
                f,
                "missing     {uuid}  {key}  expected sha256 {expected_sha256}, {expected_size} bytes"
            ),
            Self::Changed {
                uuid,
                key,
                expected_sha256,
                expected_size,
                found_sha256,
                found_size,
            } => write!(
                f,
                "changed     {uuid}  {key}  expected sha256 {expected_sha256}, {expected_size} bytes; found sha256 {found_sha256}, {found_size} bytes"
            ),
            Self::Unreadable { uuid, key, error } => {
                write!(f, "unreadable  {uuid}  {key}  {error}")
            }
            Self::LockShort { uuid, key, detail } => {
                write!(f, "lock short  {uuid}  {key}  {detail}")
            }
        }
    }
}

/// Something about the chain that is not as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum ChainProblem {
    /// `key` names a predecessor the store does not hold.
    PreviousMissing {
        key: String,
        previous_key: String,
    },
    /// The predecessor's bytes are not those `key` names.
    PreviousChanged {
        key: String,
        previous_key: String,
        expected_sha256: String,
        found_sha256: String,
    },
    /// A link out of sequence: a gap, a wrong number, a chain not starting at 1.
    BrokenLink {
        key: String,
        reason: String,
    },
    /// The manifest's lines are not a manifest.
    Malformed {
        key: String,
        reason: String,
    },
    Unreadable {
        key: String,
        error: String,
    },
    EntryMissing {
        manifest: String,
        uuid: String,
        key: String,
    },
    EntrySizeDiffers {
        manifest: String,
        uuid: String,
        key: String,
        expected_size: u64,
        found_size: u64,
    },
    EntryUnreadable {
        manifest: String,
        uuid: String,
        key: String,
        error: String,
    },
    /// A manifest lists the erasure of an object the store still holds.
    ErasedStillPresent {
        manifest: String,
        uuid: String,
        key: String,
    },
    /// The ledger records manifest `seq` as written; the store does not have it.
    LedgerManifestMissing {
        seq: i64,
        key: String,
    },
    LedgerManifestChanged {
        seq: i64,
        key: String,
        expected_sha256: String,
        found_sha256: String,
    },
    /// The newest manifest per the ledger is not the newest in the store.
    NewestDiffers {
        ledger: Option<String>,
        store: Option<String>,
    },
    /// A manifest in the store that the ledger has no record of.
    UnknownToLedger {
        key: String,
    },
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PreviousMissing { key, previous_key } => {
                write!(f, "{key}: its previous manifest {previous_key} is missing")
            }
            Self::PreviousChanged {
                key,
                previous_key,
                expected_sha256,
                found_sha256,
            } => write!(
                f,
                "{previous_key}: changed; {key} names sha256 {expected_sha256}, found {found_sha256}"
            ),
            Self::BrokenLink { key, reason } => write!(f, "{key}: broken link: {reason}"),
            Self::Malformed { key, reason } => write!(f, "{key}: malformed: {reason}"),
            Self::Unreadable { key, error } => write!(f, "{key}: unreadable: {error}"),
            Self::EntryMissing {
                manifest,
                uuid,
                key,
            } => {
                write!(f, "{manifest}: entry {uuid}: {key} is missing")
            }
            Self::EntrySizeDiffers {
                manifest,
                uuid,
                key,
                expected_size,
                found_size,
            } => write!(
                f,
                "{manifest}: entry {uuid}: {key} has {found_size} bytes, the manifest says {expected_size}"
            ),
            Self::EntryUnreadable {
                manifest,
                uuid,
                key,
                error,
            } => write!(f, "{manifest}: entry {uuid}: {key} unreadable: {error}"),
            Self::ErasedStillPresent {
                manifest,
                uuid,
                key,
            } => write!(
                f,
                "{manifest}: erasure of {uuid}: {key} is still in the store"
            ),
            Self::LedgerManifestMissing { seq, key } => write!(
                f,
                "{key}: missing from the store (the ledger recorded manifest {seq} as written)"
            ),
            Self::LedgerManifestChanged {
                seq,
                key,
                expected_sha256,
                found_sha256,
            } => write!(
                f,
                "{key}: changed; the ledger recorded manifest {seq} with sha256 {expected_sha256}, found {found_sha256}"
            ),
            Self::NewestDiffers { ledger, store } => write!(
                f,
                "the newest manifest is {} per the ledger but {} in the store",
                ledger.as_deref().unwrap_or("none"),
                store.as_deref().unwrap_or("none")
            ),
            Self::UnknownToLedger { key } => {
                write!(f, "{key}: in the store, but the ledger has no record of it")
            }
        }
    }
}
