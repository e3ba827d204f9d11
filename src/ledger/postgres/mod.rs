//! The PostgreSQL ledger, for receivers and workers on several machines sharing one ledger.
//! It keeps the SQLite ledger's behaviour exactly (same tables and columns, same choices of
//! what is due and in which order, same outcomes) and changes only how writers coordinate:
//! claims take rows with `FOR UPDATE SKIP LOCKED` instead of holding a file-wide write
//! lock, the manifest chain head is claimed under a transaction-level advisory lock, and
//! per-state counts are spread over per-connection delta rows instead of one hot row.
//!
//! The pool never leaves this module. Every statement's failure goes through
//! [`error::Ctx::ctx`], the one place that says what a PostgreSQL error means for the
//! caller; transactions that lose a race (deadlock, serialization failure) are run again
//! by [`error::retry_conflicts`].
//!
//! Times are bound as `DateTime<Utc>` cut to whole milliseconds ([`at`]), the precision of
//! the SQLite ledger's text, so both backends store, compare and export the same instants.

mod claims;
mod error;
mod manifests;
mod sync;

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::migrate::Migrate;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};

use self::error::Ctx;
use super::sql::{self, Arg, Stmt};
use super::{Admin, Backend, BackendKind, LedgerError, LedgerOptions, Migration, redact_location};
use crate::accounts::AccountName;

/// A PostgreSQL ledger; see the module documentation.
#[derive(Clone)]
pub struct PgLedger {
    pool: PgPool,
    /// The account whose rows this handle reads and writes.
    account: AccountName,
}

impl fmt::Debug for PgLedger {
    /// The pool's size, never its connection options (they hold the password).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLedger")
            .field("connections", &self.pool.size())
            .field("idle", &self.pool.num_idle())
            .field("closed", &self.pool.is_closed())
            .finish()
    }
}

impl PgLedger {
    /// Connects to `location` (`postgres://…`), brings the schema up to date, and keeps a
    /// pool of at most `options.max_connections` connections.
    pub async fn open(location: &str, options: &LedgerOptions) -> Result<Self, LedgerError> {
        let connect = connect_options(location)?;
        apply_migrations(&connect, location, options).await?;
        let lock_timeout = lock_timeout(options);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.busy_timeout.max(MIN_ACQUIRE_TIMEOUT))
            .after_connect(move |conn, _meta| {
                let lock_timeout = lock_timeout.clone();
                Box::pin(async move { set_lock_timeout(conn, lock_timeout).await })
            })
            // The migration's connection just proved the server, the database and the
            // credentials; the pool connects as work needs it.
            .connect_lazy_with(connect);
        Ok(Self {
            pool,
            account: AccountName::default_account(),
        })
    }

    /// Applies the missing migrations to the ledger at `location` and lists every migration
    /// this build knows, saying which were applied by this call.
    pub async fn migrate(
        location: &str,
        options: &LedgerOptions,
    ) -> Result<Vec<Migration>, LedgerError> {
        let connect = connect_options(location)?;
        apply_migrations(&connect, location, options).await
    }
}

/// A caller waits at most the busy timeout for a pooled connection, but at least this long,
/// so that opening a connection can succeed at all.
const MIN_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// A server that cannot be reached now (refused, timed out, starting up or shutting down)
/// is [`LedgerError::Unavailable`]: worth trying again later, not a configuration error;
/// anything else (a bad URL, an unknown database, refused credentials) is
/// [`LedgerError::Open`].
fn open_error(location: &str, source: sqlx::Error) -> LedgerError {
    match error::classify("connecting to the ledger", source) {
        unavailable @ LedgerError::Unavailable { .. } => unavailable,
        LedgerError::Conflict { source, .. } | LedgerError::Query { source, .. } => {
            LedgerError::Open {
                location: redact_location(location),
                source,
            }
        }
        other => other,
    }
}

/// The connection options `location` names, with `application_name` set to `callvault`
/// unless the URL sets it (so the ledger's sessions are recognisable in `pg_stat_activity`).
/// sqlx fills in what the URL leaves out from the `PG*` environment variables and
/// `~/.pgpass`, as libpq does.
fn connect_options(location: &str) -> Result<PgConnectOptions, LedgerError> {
    let connect =
        PgConnectOptions::from_str(location).map_err(|source| open_error(location, source))?;
    Ok(if connect.get_application_name().is_none() {
        connect.application_name("callvault")
    } else {
        connect
    })
}

/// How long a statement waits for a row or advisory lock: the busy timeout (at least a
/// millisecond: zero would mean "for ever" to PostgreSQL).
fn lock_timeout(options: &LedgerOptions) -> String {
    format!("{}ms", options.busy_timeout.as_millis().max(1))
}

async fn set_lock_timeout(
    conn: &mut PgConnection,
    lock_timeout: String,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('lock_timeout', $1, false)")
        .bind(lock_timeout)
        .execute(conn)
        .await?;
    Ok(())
}

/// Where sqlx records the migrations applied.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// Applies the missing migrations on a connection of its own and reports every known one.
/// Failing to connect gives the server's own reason (refused, unknown database,
/// authentication failed), classified by [`open_error`], not a pool's timeout; connecting
/// may take at most the busy timeout (a host that never answers would otherwise hang for
/// minutes).
///
/// sqlx's migrator takes a session-level advisory lock (`pg_advisory_lock`, key derived
/// from the database name: sqlx-postgres 0.9 `migrate.rs`, `lock`/`generate_lock_id`) so
/// that processes opening the ledger at once migrate one after the other; the others wait
/// for it (at most the busy timeout, `lock_timeout`). On a pooled connection that lock
/// would outlive a failed migration (the unlock is skipped on error and the connection
/// goes back to the pool still holding it), so the migrations run on a connection of
/// their own that is closed afterwards: whatever happens, ending the session releases the
/// lock. Taking the lock ourselves around the migrator (with the migrator's own locking
/// off) also makes "applied now" exact: the list of applied migrations is read under it.
async fn apply_migrations(
    connect: &PgConnectOptions,
    location: &str,
    options: &LedgerOptions,
) -> Result<Vec<Migration>, LedgerError> {
    let timeout = options.busy_timeout.max(MIN_ACQUIRE_TIMEOUT);
    let mut conn = match tokio::time::timeout(timeout, PgConnection::connect_with(connect)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(source)) => return Err(open_error(location, source)),
        Err(_) => {
            let source = std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within the busy timeout ({timeout:?})"),
            );
            return Err(open_error(location, sqlx::Error::Io(source)));
        }
    };
    if let Err(source) = set_lock_timeout(&mut conn, lock_timeout(options)).await {
        let _ = conn.close().await;
        return Err(open_error(location, source));
    }
    let mut migrator = sqlx::migrate!("./migrations/postgres");
    migrator.set_locking(false);
    // sqlx's default name, set explicitly so that the list read below is the table the
    // migrator writes.
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    let result = async {
        conn.lock().await?;
        conn.ensure_migrations_table(MIGRATIONS_TABLE).await?;
        let before: HashSet<i64> = conn
            .list_applied_migrations(MIGRATIONS_TABLE)
            .await?
            .into_iter()
            .map(|m| m.version)
            .collect();
        migrator.run(&mut conn).await?;
        conn.unlock().await?;
        Ok::<_, sqlx::migrate::MigrateError>(
            migrator
                .iter()
                .filter(|m| !m.migration_type.is_down_migration())
                .map(|m| Migration {
                    version: m.version,
                    description: m.description.to_string(),
                    applied_now: !before.contains(&m.version),
                })
                .collect(),
        )
    }
    .await;
    // Closing ends the session, and with it any advisory lock a failure left held.
    let _ = conn.close().await;
    Ok(result?)
}

#[async_trait]
impl Admin for PgLedger {
    fn kind(&self) -> BackendKind {
        BackendKind::Postgres
    }

    /// Reads from the server and checks that it accepts writes (after a failover the URL
    /// may lead to a standby, which answers but cannot record anything).
    async fn ping(&self) -> Result<(), LedgerError> {
        let read_only: String =
            sqlx::query_scalar("SELECT current_setting('transaction_read_only')")
                .fetch_one(&self.pool)
                .await
                .ctx("checking the ledger")?;
        if read_only == "on" {
            return Err(LedgerError::Unavailable {
                context: "checking the ledger",
                source: sqlx::Error::Configuration(
                    "the PostgreSQL server accepts only reads (a standby?): point the ledger \
                     URL at the primary"
                        .into(),
                ),
            });
        }
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
        None
    }
}

/// A time as the ledger stores it: cut to whole milliseconds, like the SQLite ledger's text.
fn at(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(3)
}

/// Binds `stmt`'s arguments; times cut to milliseconds ([`at`]).
fn bound(stmt: &Stmt) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    stmt.args.iter().fold(
        sqlx::query(sqlx::AssertSqlSafe(stmt.text.as_ref())),
        |query, arg| match arg {
            Arg::Text(v) => query.bind(v.as_deref()),
            Arg::Int(v) => query.bind(*v),
            Arg::Time(v) => query.bind(v.map(at)),
        },
    )
}

impl sql::Row for PgRow {
    fn opt_text(&self, name: &str) -> Result<Option<String>, LedgerError> {
        self.try_get(name).ctx("reading a ledger row")
    }

    fn opt_int(&self, name: &str) -> Result<Option<i64>, LedgerError> {
        self.try_get(name).ctx("reading a ledger row")
    }

    fn opt_time(&self, name: &str) -> Result<Option<DateTime<Utc>>, LedgerError> {
        self.try_get(name).ctx("reading a ledger row")
    }
}

super::sql::engine!(PgLedger, PgTx, sqlx::Postgres, PgRow, {
    fn dialect(&self) -> BackendKind {
        BackendKind::Postgres
    }

    fn account(&self) -> &str {
        self.account.as_str()
    }

    async fn begin(&self, context: &'static str) -> Result<PgTx, LedgerError> {
        let tx = self.pool.begin().await.ctx(context)?;
        Ok(PgTx(tx, self.account.clone()))
    }

    async fn begin_write(&self, context: &'static str) -> Result<PgTx, LedgerError> {
        self.begin(context).await
    }

    async fn begin_snapshot(&self, context: &'static str) -> Result<PgTx, LedgerError> {
        let snapshot = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";
        let tx = self.pool.begin_with(snapshot).await.ctx(context)?;
        Ok(PgTx(tx, self.account.clone()))
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_cut_to_milliseconds() {
        let t = chrono::DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap_or_default();
        assert_eq!(at(t).timestamp_subsec_nanos(), 123_000_000);
        assert_eq!(
            crate::timefmt::to_ledger(at(t)),
            crate::timefmt::to_ledger(t)
        );
    }
}
