//! Letting recordings go, and keeping them when they must stay: legal holds (`hold`,
//! `release`, `holds`), erasure of chosen calls (`erase`, the GDPR case) and of calls past
//! their retention (`expire`). The ledger decides what is on hold; the bucket's Object Lock
//! decides what S3 will let go; callvault never asks S3 to bypass a lock.
//!
//! Erasure is all or nothing per call: both objects' versions (recording and sidecar) are
//! checked for a running lock or legal hold before either is touched; then the recording's
//! versions go (oldest first, the current one last), then the sidecar's, then the ledger
//! writes the tombstone and blanks the row in one transaction. A refusal or a crash part way
//! leaves the call archived in the ledger; running the erasure again finishes it (what is
//! already gone is not looked for again), and until then `verify` reports the missing
//! object, as it must.

mod erase;
mod hold;
mod select;

pub use erase::{EraseMode, EraseReport, Erased, Kept, KeptReason, erase};
pub use hold::{HoldReport, Refusal, ReleaseReport, place_hold, release};
pub use select::{Pages, Selection, retention_cutoff};

use crate::ledger::LedgerError;
use crate::store::StoreError;

/// Who acts: `--actor`, else `CALLVAULT_ACTOR`, else the operating system's user (read at
/// the edge and passed in).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Actor(String);

impl Actor {
    pub fn new(name: &str) -> Option<Self> {
        let s = name.trim();
        (!s.is_empty() && s.len() <= 200 && !s.chars().any(char::is_control))
            .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What stops a hold, a release or an erasure as a whole (one call's trouble is reported
/// in the command's report instead).
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The store refused our credentials: fix the configuration.
    #[error(transparent)]
    Store(#[from] StoreError),
}
