//! The SQLite backend: the embedded default for one machine (`demo`, a VM, a single pod).
//! WAL, `synchronous=FULL`, a busy timeout for the write lock other processes hold, and
//! migrations from `migrations/sqlite/` on open. Times are fixed-width UTC text, which
//! sorts and compares as text.

mod claims;
mod manifests;
mod sync;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use super::sql::{Arg, Row, Stmt};
use super::{Admin, Backend, BackendKind, LedgerError, LedgerOptions, Migration};
use crate::accounts::AccountName;
use crate::timefmt::{from_ledger, to_ledger};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A SQLite ledger; cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteLedger {
    pool: SqlitePool,
    /// Write transactions committed through `pool` (every connection's commit hook).
    commits: Arc<AtomicU64>,
    /// The account whose rows this handle reads and writes.
    account: AccountName,
}

trait QueryContext<T> {
    fn ctx(self, context: &'static str) -> Result<T, LedgerError>;
}

impl<T> QueryContext<T> for Result<T, sqlx::Error> {
    fn ctx(self, context: &'static str) -> Result<T, LedgerError> {
        self.map_err(|source| classify(source, context))
    }
}

/// SQLite's errors by what the caller must do: SQLITE_BUSY (and its extended codes) means
/// the busy timeout ran out behind another process's lock; anything else stops the run.
fn classify(source: sqlx::Error, context: &'static str) -> LedgerError {
    let busy = match &source {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| code & 0xff == 5),
        _ => false,
    };
    if busy {
        LedgerError::Locked { context }
    } else {
        LedgerError::Query { context, source }
    }
}

impl SqliteLedger {
    async fn connect(
        location: &str,
        options: &LedgerOptions,
        commits: &Arc<AtomicU64>,
    ) -> Result<SqlitePool, LedgerError> {
        let open_err = |source| LedgerError::Open {
            location: location.to_owned(),
            source,
        };
        let url = if location.starts_with("sqlite:") {
            location.to_owned()
        } else {
            format!("sqlite://{location}")
        };
        let connect = SqliteConnectOptions::from_str(&url)
            .map_err(open_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout);
        let in_memory = url.contains(":memory:");
        let counter = Arc::clone(commits);
        SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { 4 })
            .after_connect(move |conn, _| {
                let counter = Arc::clone(&counter);
                Box::pin(async move {
                    // SQLite calls the hook for each transaction that wrote (read-only ones
                    // do not commit anything); it only counts, never vetoes.
                    conn.lock_handle().await?.set_commit_hook(move || {
                        counter.fetch_add(1, Ordering::Relaxed);
                        true
                    });
                    Ok(())
                })
            })
            .acquire_timeout(options.busy_timeout + Duration::from_secs(5))
            .connect_with(connect)
            .await
            .map_err(open_err)
    }

    /// Opens (creating if missing) the ledger at `location` and runs pending migrations
    /// (inside SQLite's write lock, so two processes opening at once migrate once).
    pub async fn open(location: &str, options: &LedgerOptions) -> Result<Self, LedgerError> {
        let commits = Arc::new(AtomicU64::new(0));
        let pool = Self::connect(location, options, &commits).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            commits,
            account: AccountName::default_account(),
        })
    }

    pub async fn migrate(
        location: &str,
        options: &LedgerOptions,
    ) -> Result<Vec<Migration>, LedgerError> {
        let pool = Self::connect(location, options, &Arc::new(AtomicU64::new(0))).await?;
        let before = applied(&pool).await;
        MIGRATOR.run(&pool).await?;
        pool.close().await;
        Ok(MIGRATOR
            .iter()
            .map(|m| Migration {
                version: m.version,
                description: m.description.to_string(),
                applied_now: !before.contains(&m.version),
            })
            .collect())
    }
}

/// The versions already applied (none on a new ledger).
async fn applied(pool: &SqlitePool) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await
        .unwrap_or_default()
}

#[async_trait]
impl Admin for SqliteLedger {
    fn kind(&self) -> BackendKind {
        BackendKind::Sqlite
    }

    async fn ping(&self) -> Result<(), LedgerError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .ctx("checking the ledger")?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn for_account(&self, account: &AccountName) -> Arc<dyn Backend> {
        Arc::new(Self {
            account: account.clone(),
            ..self.clone()
        })
    }

    fn account(&self) -> &AccountName {
        &self.account
    }

    fn commits(&self) -> Option<u64> {
        Some(self.commits.load(Ordering::Relaxed))
    }
}

/// The steps of SQLite's plan for `stmt` (each step's `detail`), for the tests that hold a
/// statement to its indexes.
#[cfg(test)]
pub(crate) async fn query_plan(ledger: &SqliteLedger, stmt: Stmt) -> Vec<String> {
    use crate::ledger::sql::Db;
    let explain = Stmt {
        text: format!("EXPLAIN QUERY PLAN {}", stmt.text).into(),
        ..stmt
    };
    ledger
        .fetch_all(explain)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|row| row.text("detail").unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// Binds `stmt`'s arguments; times as the ledger's fixed-width UTC text.
fn bound(stmt: &Stmt) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    stmt.args.iter().fold(
        sqlx::query(sqlx::AssertSqlSafe(stmt.text.as_ref())),
        |query, arg| match arg {
            Arg::Text(v) => query.bind(v.as_deref()),
            Arg::Int(v) => query.bind(*v),
            Arg::Time(v) => query.bind(v.map(to_ledger)),
        },
    )
}

impl Row for SqliteRow {
    fn opt_text(&self, name: &str) -> Result<Option<String>, LedgerError> {
        self.try_get(name).ctx("reading a ledger row")
    }

    fn opt_int(&self, name: &str) -> Result<Option<i64>, LedgerError> {
        self.try_get(name).ctx("reading a ledger row")
    }

    fn opt_time(&self, name: &str) -> Result<Option<DateTime<Utc>>, LedgerError> {
        self.try_get::<Option<String>, _>(name)
            .ctx("reading a ledger row")?
            .map(|s| from_ledger(&s).ok_or_else(|| LedgerError::Corrupt(format!("{name} {s:?}"))))
            .transpose()
    }
}

super::sql::engine!(SqliteLedger, SqliteTx, sqlx::Sqlite, SqliteRow, {
    fn dialect(&self) -> BackendKind {
        BackendKind::Sqlite
    }

    fn account(&self) -> &str {
        self.account.as_str()
    }

    async fn begin(&self, context: &'static str) -> Result<SqliteTx, LedgerError> {
        let tx = self.pool.begin().await.ctx(context)?;
        Ok(SqliteTx(tx, self.account.clone()))
    }

    async fn begin_write(&self, context: &'static str) -> Result<SqliteTx, LedgerError> {
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await;
        Ok(SqliteTx(tx.ctx(context)?, self.account.clone()))
    }

    /// A deferred transaction: its snapshot is taken at its first read (WAL).
    async fn begin_snapshot(&self, context: &'static str) -> Result<SqliteTx, LedgerError> {
        self.begin(context).await
    }
});
