//! The ledger: what callvault knows about every call record, attempt and run. SQLite today
//! (WAL, busy timeout, migrations on open); the SQL stays portable for a PostgreSQL ledger.

mod audit;
mod claims;
mod manifests;
mod media;
mod records;
mod runs;

use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use crate::domain::{CallRecord, CallUuid};
use crate::timefmt::from_ledger;

pub use audit::{FailedRecord, RetryOutcome, RetrySelection};
pub use claims::{AttemptEnd, Settlement, Slice};
pub use manifests::{ArchivedEntry, ChainClaim, ManifestClaim, ManifestLink, ManifestRow};
pub use media::MediaNote;
pub use records::{ImportOutcome, LedgerRow};
pub use runs::{LastRun, RunRecord, StatusReport};

/// What went wrong with the ledger. Every variant stops the run: records already claimed
/// keep their lease and are picked up again once it runs out.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open the ledger at {location}: {source}")]
    Open {
        location: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot bring the ledger's schema up to date: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
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
}

trait QueryContext<T> {
    fn ctx(self, context: &'static str) -> Result<T, LedgerError>;
}

impl<T> QueryContext<T> for Result<T, sqlx::Error> {
    fn ctx(self, context: &'static str) -> Result<T, LedgerError> {
        self.map_err(|source| {
            if is_busy(&source) {
                LedgerError::Locked { context }
            } else {
                LedgerError::Query { context, source }
            }
        })
    }
}

/// SQLITE_BUSY (and its extended codes): the busy timeout ran out.
fn is_busy(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else {
        return false;
    };
    db.code()
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == 5)
}

/// A handle on the ledger; cheap to clone.
#[derive(Debug, Clone)]
pub struct Ledger {
    pool: SqlitePool,
}

/// How long a writer waits, by default, for another process's write lock before giving up.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

impl Ledger {
    /// Opens (creating if missing) the ledger at `location`: `sqlite://path/to/ledger.db`,
    /// `sqlite::memory:` or a bare file path. Runs pending migrations.
    pub async fn open(location: &str) -> Result<Self, LedgerError> {
        Self::open_with(location, DEFAULT_BUSY_TIMEOUT).await
    }

    /// Like [`Ledger::open`]; a write waits at most `busy_timeout` for another process's
    /// lock, then fails with [`LedgerError::Locked`].
    pub async fn open_with(location: &str, busy_timeout: Duration) -> Result<Self, LedgerError> {
        let open_err = |source| LedgerError::Open {
            location: location.to_owned(),
            source,
        };
        let url = if location.starts_with("sqlite:") {
            location.to_owned()
        } else {
            format!("sqlite://{location}")
        };
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(open_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(busy_timeout);
        let in_memory = url.contains(":memory:");
        let pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { 4 })
            .acquire_timeout(busy_timeout + Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(open_err)?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Answers when the ledger can be read (for readiness checks).
    pub async fn ping(&self) -> Result<(), LedgerError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .ctx("checking the ledger")?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn record_from_row(row: &SqliteRow) -> Result<CallRecord, LedgerError> {
    let uuid: String = row.get("uuid");
    let call_start: Option<String> = row.get("call_start");
    Ok(CallRecord {
        uuid: CallUuid::parse(&uuid)
            .ok_or_else(|| LedgerError::Corrupt(format!("call uuid {uuid:?}")))?,
        company_code: row.get("company_code"),
        record_file: row.get("record_file"),
        call_start: call_start
            .map(|s| {
                from_ledger(&s)
                    .ok_or_else(|| LedgerError::Corrupt(format!("call_start {s:?} of {uuid}")))
            })
            .transpose()?,
        billsec: row.get("billsec"),
        raw_json: row.get("raw_json"),
    })
}
