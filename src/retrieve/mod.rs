//! Getting calls back out of the archive for the people who ask for them: finding calls,
//! copying recordings out with their checksum proven, handing out a time-limited link.
//! Every one of these is written to the ledger's access log before its answer is given
//! (a search's results, a file, a URL), so the log holds every look even when the answer
//! never arrives. The command line (`src/app/retrieve.rs`) and the web page share these.

mod get;
mod link;

use std::time::Duration;

use chrono::Utc;

use crate::domain::{CallUuid, RecordState};
use crate::ledger::{
    AccessAction, AccessEntry, CallQuery, CallSummary, Ledger, LedgerError, LedgerRow,
};
use crate::store::StoreError;

pub use get::{Fetched, get_recordings};
pub use link::{Link, link};

/// Who is asking, from where, and why: what each access-log entry records about its actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// A person's name (`--actor`, `CALLVAULT_ACTOR`, the OS user, the web page's user).
    pub actor: String,
    /// `cli@HOST` for a command, the remote address for the web page.
    pub source: String,
    pub reason: Option<String>,
}

impl Requester {
    /// Someone at this machine's command line: `actor` if given, else the OS user.
    pub fn at_cli(actor: Option<String>, reason: Option<String>) -> Self {
        let actor = actor
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(os_user);
        Self {
            actor,
            source: format!("cli@{}", crate::config::hostname()),
            reason: reason
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty()),
        }
    }

    /// The access-log entry for `action` on `calls`, now.
    pub fn entry(
        &self,
        action: AccessAction,
        query: Option<String>,
        calls: Vec<CallUuid>,
    ) -> AccessEntry {
        AccessEntry {
            at: Utc::now(),
            actor: self.actor.clone(),
            action,
            source: self.source.clone(),
            reason: self.reason.clone(),
            query,
            calls,
        }
    }
}

/// The OS user running this process (the account's name, as `id -un` says), or `unknown`.
fn os_user() -> String {
    whoami::username()
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Why a call could not be given out, by what the caller must do.
#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ledger has no such call: check the uuid (`callvault find`).
    #[error("{0}: no such call in the ledger (look it up with `callvault find`)")]
    UnknownCall(CallUuid),
    /// The call has no recording in the archive (yet): see its state.
    #[error("{uuid}: not archived (state {state}): there is no recording to give out")]
    NotArchived { uuid: CallUuid, state: RecordState },
    /// The ledger says archived, the store has no object: run `callvault verify`.
    #[error("{uuid}: the store has no object at {key} (run `callvault verify`)")]
    Missing { uuid: CallUuid, key: String },
    /// The bytes read are not the bytes archived: the partial file was removed.
    #[error(
        "{uuid}: the object at {key} does not match the ledger (SHA-256 {actual}, {actual_size} bytes; \
         the ledger has {expected}, {expected_size} bytes): the partial file was removed; \
         run `callvault verify` and restore the object from a copy"
    )]
    Mismatch {
        uuid: CallUuid,
        key: String,
        expected: String,
        expected_size: u64,
        actual: String,
        actual_size: u64,
    },
    #[error("{path}: {source}")]
    File {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The store cannot sign links, or the request is out of bounds (exit 2).
    #[error("{0}")]
    Refused(String),
}

impl RetrieveError {
    /// Whether the configuration (the store, the request) must change: exit code 2.
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Refused(_) | Self::Store(StoreError::Config(_)))
    }
}

/// One page of the calls `query` selects, logged (with the calls found) before it is
/// returned.
pub async fn find(
    ledger: &Ledger,
    query: &CallQuery,
    who: &Requester,
) -> Result<Vec<CallSummary>, RetrieveError> {
    let found = ledger.find_calls(query).await?;
    let calls = found.iter().map(|c| c.uuid.clone()).collect();
    ledger
        .log_access(&who.entry(AccessAction::Find, Some(query.describe()), calls))
        .await?;
    Ok(found)
}

/// The archived object of `uuid`: its row, key, size and SHA-256.
pub(crate) struct Archived {
    pub row: LedgerRow,
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

/// The call's archived object as the ledger records it, or why there is none.
pub(crate) async fn archived(ledger: &Ledger, uuid: &CallUuid) -> Result<Archived, RetrieveError> {
    let row = ledger
        .get(uuid)
        .await?
        .ok_or_else(|| RetrieveError::UnknownCall(uuid.clone()))?;
    let not_archived = || RetrieveError::NotArchived {
        uuid: uuid.clone(),
        state: row.state,
    };
    if row.state != RecordState::Archived {
        return Err(not_archived());
    }
    let (Some(key), Some(size), Some(sha256)) =
        (row.object_key.clone(), row.size_bytes, row.sha256.clone())
    else {
        return Err(not_archived());
    };
    let size = u64::try_from(size)
        .map_err(|_| LedgerError::Corrupt(format!("size {size} of archived call {uuid}")))?;
    Ok(Archived {
        row,
        key,
        size,
        sha256: sha256.to_ascii_lowercase(),
    })
}

/// A duration for messages (`15m`).
pub(crate) fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
