//! The ledger: what callvault knows about every call record, attempt, run and manifest, and
//! the only coordinator between processes. One interface in domain types (the traits below,
//! by concern), two backends behind it, chosen by the URL's scheme:
//! - `sqlite://path` (or a bare path, or `sqlite::memory:`): the embedded default, for one
//!   machine (WAL, busy timeout);
//! - `postgres://…` / `postgresql://…`: for several receivers and workers on many machines
//!   (claims with `FOR UPDATE SKIP LOCKED`, the chain head under an advisory lock).
//!
//! Each operation is written once, in the module of its concern, over the seam in
//! [`sql`]: its SQL text, its arguments and its row mapping exist in one place, and where
//! the engines' best statements differ both texts stand side by side in that one function.
//! We chose a thin seam of our own over a query builder (sea-query) or `sqlx::Any`: the
//! statements are tuned per index (CTEs, `UNION ALL` index walks, partial indexes,
//! `RETURNING`), and both dialects already accept the same placeholders and clauses; what
//! differs is how a time is stored, how an error maps, and a few mechanisms. sea-query 1.0.2
//! was tried on two real operations (the claim candidates, and matching a bill then
//! updating its call), both dialects, each statement run on PostgreSQL 15 and SQLite: it
//! expressed them, but in 4 to 8 times the lines, with the SQL no longer readable in the
//! source; it cannot reuse a parameter (`$2` used twice is bound twice, and the fixed
//! numbering the claim statements share is lost); its SQLite builder silently drops
//! `FOR UPDATE`; the per-engine shapes (the dated/undated split SQLite's NULL ordering
//! needs) still had to be written twice; and a statement took 2 to 12 µs to build against
//! 0.1 µs here (small next to a round trip, but for nothing gained). Those stay in the backends (`sqlite/`, `postgres/`),
//! each behind a narrow trait the shared code calls: claiming a batch (`ClaimBatch`), the
//! manifest chain head, which erasures take too (`ChainHead`), locking calls being stored
//! (`StoreCalls`), beginning transactions, and the commit counter. Each backend keeps its own
//! migrations (`migrations/sqlite/`, `migrations/postgres/`), applied on open under a lock.
//! No pool or row type leaves its backend module.

mod access;
mod accounts;
mod audit;
mod claims;
mod copy;
mod export;
mod holds;
mod log;
mod manifests;
mod media;
mod postgres;
mod records;
mod runs;
mod search;
mod sessions;
mod sql;
mod sqlite;
mod sync;
mod takeovers;
mod transfer;

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::accounts::AccountName;

pub use access::{AccessAction, AccessEntry, AccessLog, AccessQuery, LoggedAccess};
pub use accounts::{AccountRows, Renamed};
pub use audit::{Audit, FailedRecord, RetryOutcome, RetrySelection, VerifyResult};
pub use claims::{
    AttemptEnd, ClaimRequest, Claims, INTERRUPTED_MESSAGE, SettleItem, Settlement, Slice,
    lease_lost_message, sort_claims,
};
pub use copy::{CopyError, CopyReport, TableCheck, copy_ledger, table_checksum};
pub use export::{ExportCall, ExportFacts, HoldEvent};
pub use holds::{
    CallFacts, EraseRecorded, HoldId, HoldSummary, Holds, NewHold, ObjectHold, Released, Tombstone,
};
pub use log::{CheckpointRow, NewCheckpoint, ProofFigures, ProofLog, StampRow, UnloggedManifest};
pub use manifests::{
    ArchivedEntry, ChainClaim, ManifestClaim, ManifestKeyFn, ManifestLink, ManifestRow, Manifests,
};
pub use media::{Media, MediaNote};
pub use records::{ImportOutcome, LedgerRow, Records};
pub use runs::{LastRun, LedgerFigures, RunRecord, Runs, StatusReport, risk_line};
pub use search::{
    AttemptView, CallCursor, CallDetail, CallParties, CallQuery, CallSummary, MAX_PAGE,
    ManifestRef, PhoneNumber, Search, TermField,
};
pub use sessions::{Sessions, UiSession};
pub use sync::{DayCompleteness, SyncFigures, SyncId, SyncProgress, SyncRow, SyncStatus, Syncs};
pub use transfer::{Kind, Table, TableRow, Transfer};

/// What went wrong with the ledger, by what the caller must do.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The ledger cannot be opened: a configuration problem (exit 2).
    #[error("cannot open the ledger at {location}: {source}")]
    Open {
        location: String,
        #[source]
        source: sqlx::Error,
    },
    /// The location names no ledger callvault knows how to open (exit 2).
    #[error("{0}")]
    BadLocation(String),
    #[error("cannot bring the ledger's schema up to date: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed for a reason retrying will not fix: stop the run.
    #[error("ledger query failed while {context}: {source}")]
    Query {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("the ledger holds a value callvault cannot read: {0}")]
    Corrupt(String),
    /// Another process held the ledger's write lock for longer than the busy timeout.
    #[error(
        "the ledger is locked by another process (still locked after the busy timeout) while {context}"
    )]
    Locked { context: &'static str },
    /// Lost to another transaction (serialization failure, deadlock, lock timeout): the same
    /// statement may be tried again at once.
    #[error("the ledger gave way to another transaction while {context}: {source}")]
    Conflict {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// The ledger cannot be reached (connection lost, server restarting): stop claiming;
    /// leases held run out and the records are taken over.
    #[error("the ledger cannot be reached while {context}: {source}")]
    Unavailable {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

impl LedgerError {
    /// Whether the same call may simply be made again.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// Whether the ledger could not be reached at all (a pass stops claiming; a command
    /// that could not start is worth running again later).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// Which engine holds a ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        })
    }
}

impl BackendKind {
    /// The backend a ledger location names: `postgres://` and `postgresql://` are
    /// PostgreSQL; `sqlite:` URLs and bare paths are SQLite; any other scheme is refused.
    pub fn of(location: &str) -> Result<Self, LedgerError> {
        let lower = location.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return Ok(Self::Postgres);
        }
        if lower.starts_with("sqlite:") {
            return Ok(Self::Sqlite);
        }
        match lower.split_once("://") {
            Some((scheme, _)) => Err(LedgerError::BadLocation(format!(
                "ledger URL scheme {scheme:?} is not supported: use sqlite://PATH or postgres://USER@HOST/DB"
            ))),
            None => Ok(Self::Sqlite),
        }
    }
}

/// How to open a ledger.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// SQLite: how long a writer waits for another process's write lock. PostgreSQL: how
    /// long a statement waits for a row or advisory lock, and for a pooled connection.
    pub busy_timeout: Duration,
    /// PostgreSQL connections at most (SQLite keeps its own small pool).
    pub max_connections: u32,
}

/// How long a writer waits, by default, for another process's write lock before giving up.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for LedgerOptions {
    fn default() -> Self {
        Self {
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            max_connections: 16,
        }
    }
}

/// Opening, probing and closing, whichever the backend.
#[async_trait]
pub trait Admin: Send + Sync {
    fn kind(&self) -> BackendKind;

    /// The same ledger seen as `account`'s: every operation reads and writes that
    /// account's rows only. Cheap (the connections are shared).
    fn for_account(&self, account: &AccountName) -> Arc<dyn Backend>;

    /// The account this handle's operations are scoped to (`default` unless
    /// [`Admin::for_account`] chose another).
    fn account(&self) -> &AccountName;

    /// Answers when the ledger can be read and written (for readiness checks).
    async fn ping(&self) -> Result<(), LedgerError>;

    async fn close(&self);

    /// Write transactions this process has committed on the ledger since it was opened
    /// (SQLite: counted by a commit hook on every connection, whichever statement made it),
    /// for the pass's report and the benchmarks; `None` where the backend does not count
    /// them (PostgreSQL).
    fn commits(&self) -> Option<u64>;
}

/// The whole interface a backend implements.
pub trait Backend:
    Admin
    + Records
    + Claims
    + Runs
    + Manifests
    + Audit
    + Media
    + Transfer
    + Syncs
    + Sessions
    + Search
    + AccessLog
    + Holds
    + AccountRows
    + ProofLog
    + ExportFacts
    + fmt::Debug
{
}

impl<T> Backend for T where
    T: Admin
        + Records
        + Claims
        + Runs
        + Manifests
        + Audit
        + Media
        + Transfer
        + Syncs
        + Holds
        + Search
        + AccessLog
        + Sessions
        + AccountRows
        + ProofLog
        + ExportFacts
        + fmt::Debug
{
}

/// A handle on the ledger; cheap to clone. Its methods are those of [`Backend`]'s traits
/// (callable without importing them, as on any trait object).
#[derive(Clone)]
pub struct Ledger(Arc<dyn Backend>);

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Deref for Ledger {
    type Target = dyn Backend;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl Ledger {
    /// Opens (creating a SQLite file if missing) the ledger at `location` with the default
    /// options, and brings its schema up to date.
    pub async fn open(location: &str) -> Result<Self, LedgerError> {
        Self::open_with(location, &LedgerOptions::default()).await
    }

    /// Opens the ledger at `location` and applies pending migrations (under the backend's
    /// lock, so several processes starting at once migrate once).
    pub async fn open_with(location: &str, options: &LedgerOptions) -> Result<Self, LedgerError> {
        Ok(match BackendKind::of(location)? {
            BackendKind::Sqlite => Self(Arc::new(
                sqlite::SqliteLedger::open(location, options).await?,
            )),
            BackendKind::Postgres => {
                Self(Arc::new(postgres::PgLedger::open(location, options).await?))
            }
        })
    }

    /// The same ledger, scoped to `account`'s rows (see [`Admin::for_account`]).
    pub fn scoped(&self, account: &AccountName) -> Self {
        Self(self.0.for_account(account))
    }

    /// The migrations each backend knows, and which of them the ledger at `location` has
    /// applied, after applying the missing ones (for `callvault migrate`).
    pub async fn migrate(
        location: &str,
        options: &LedgerOptions,
    ) -> Result<Vec<Migration>, LedgerError> {
        match BackendKind::of(location)? {
            BackendKind::Sqlite => sqlite::SqliteLedger::migrate(location, options).await,
            BackendKind::Postgres => postgres::PgLedger::migrate(location, options).await,
        }
    }
}

/// One schema migration as `callvault migrate` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Migration {
    pub version: i64,
    pub description: String,
    /// Applied by this call (it was missing before).
    pub applied_now: bool,
}

/// A location with its password (if any) hidden, for messages and logs.
pub fn redact_location(location: &str) -> String {
    match url::Url::parse(location) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => location.to_owned(),
    }
}
