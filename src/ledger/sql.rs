//! The seam between the ledger's operations and its two engines. Every operation is
//! written once, in the module of its concern (`runs.rs`, `claims.rs`, ...), as SQL text
//! with typed arguments ([`Stmt`]) and a row mapping over [`Row`]; a backend only says how
//! to run a statement and read a column ([`Db`], [`Tx`]).
//!
//! Why our own thin seam rather than a query builder: the ledger's statements are tuned per
//! index (CTEs, `UNION ALL` of index walks, partial indexes, `RETURNING`), which a builder
//! such as sea-query would take as raw expressions anyway, and the two dialects already
//! agree on almost all of it: both accept `$n` placeholders, `ON CONFLICT`, `RETURNING`,
//! `NULLS LAST`. What truly differs is small and is asked of the backend:
//! - how a time is bound and read (fixed-width UTC text on SQLite, `timestamptz` cut to
//!   milliseconds on PostgreSQL): [`Arg::Time`] and [`Row::opt_time`];
//! - how an error maps to what the caller must do (each backend's `classify`);
//! - the few statements whose best form differs (an operation then writes both texts side
//!   by side, chosen by [`Db::kind`], so a reader sees the difference and nothing else);
//! - claiming, the manifest chain-head lock and counters, which stay in the backends.
//!
//! Measured on the claim path (bench/run, BENCHMARKS.md): binding through [`Arg`] costs a
//! vector of a few values per statement, lost in the statement's own round trip.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use std::sync::LazyLock;

use super::{BackendKind, LedgerError, Slice};
use crate::domain::{CallRecord, CallUuid, Origin, RecordState};

/// One value bound to a placeholder.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
    /// Bound as the backend stores times.
    Time(Option<DateTime<Utc>>),
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Self::Text(Some(v.to_owned()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Self::Text(Some(v))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Self::Text(Some(v.clone()))
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Self::Text(v.map(str::to_owned))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Self::Text(v)
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}
impl From<i32> for Arg {
    fn from(v: i32) -> Self {
        Self::Int(Some(i64::from(v)))
    }
}
impl From<u32> for Arg {
    fn from(v: u32) -> Self {
        Self::Int(Some(i64::from(v)))
    }
}
impl From<u64> for Arg {
    /// Saturating: a count or size beyond `i64::MAX` is stored as `i64::MAX`.
    fn from(v: u64) -> Self {
        Self::Int(Some(i64::try_from(v).unwrap_or(i64::MAX)))
    }
}
impl From<Option<u64>> for Arg {
    fn from(v: Option<u64>) -> Self {
        Self::Int(v.map(|v| i64::try_from(v).unwrap_or(i64::MAX)))
    }
}
impl From<DateTime<Utc>> for Arg {
    fn from(v: DateTime<Utc>) -> Self {
        Self::Time(Some(v))
    }
}
impl From<Option<DateTime<Utc>>> for Arg {
    fn from(v: Option<DateTime<Utc>>) -> Self {
        Self::Time(v)
    }
}
impl From<&CallUuid> for Arg {
    fn from(v: &CallUuid) -> Self {
        Self::Text(Some(v.as_str().to_owned()))
    }
}

/// A statement: its SQL (placeholders `$1`, `$2`, ... in both dialects), its arguments in
/// placeholder order, and what the ledger was doing, for errors.
#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    pub text: Cow<'static, str>,
    pub args: Vec<Arg>,
    pub context: &'static str,
}

impl Stmt {
    pub fn new(text: impl Into<Cow<'static, str>>, context: &'static str) -> Self {
        Self {
            text: text.into(),
            args: Vec::new(),
            context,
        }
    }

    /// Binds the next placeholder.
    pub fn bind(mut self, arg: impl Into<Arg>) -> Self {
        self.args.push(arg.into());
        self
    }
}

/// A result row, read by column name.
pub(crate) trait Row: Send + Sync {
    fn opt_text(&self, col: &str) -> Result<Option<String>, LedgerError>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, LedgerError>;
    fn opt_time(&self, col: &str) -> Result<Option<DateTime<Utc>>, LedgerError>;

    fn text(&self, col: &str) -> Result<String, LedgerError> {
        self.opt_text(col)?.ok_or_else(|| null(col))
    }
    fn int(&self, col: &str) -> Result<i64, LedgerError> {
        self.opt_int(col)?.ok_or_else(|| null(col))
    }
    fn time(&self, col: &str) -> Result<DateTime<Utc>, LedgerError> {
        self.opt_time(col)?.ok_or_else(|| null(col))
    }
    /// A non-negative count or size.
    fn count(&self, col: &str) -> Result<u64, LedgerError> {
        let n = self.int(col)?;
        u64::try_from(n).map_err(|_| LedgerError::Corrupt(format!("{col} {n}")))
    }
    fn uuid(&self, col: &str) -> Result<CallUuid, LedgerError> {
        let raw = self.text(col)?;
        CallUuid::parse(&raw).ok_or_else(|| LedgerError::Corrupt(format!("call uuid {raw:?}")))
    }
    fn state(&self, col: &str) -> Result<RecordState, LedgerError> {
        let raw = self.text(col)?;
        RecordState::parse(&raw)
            .ok_or_else(|| LedgerError::Corrupt(format!("record state {raw:?}")))
    }
}

fn null(col: &str) -> LedgerError {
    LedgerError::Corrupt(format!("{col} is NULL"))
}

/// Statements run inside one transaction; dropped without [`Tx::commit`], it rolls back.
#[async_trait]
pub(crate) trait Tx: Send {
    type Row: Row;

    /// The account of the handle that began the transaction (see [`Db::account`]).
    fn account(&self) -> &str;

    async fn execute(&mut self, stmt: Stmt) -> Result<u64, LedgerError>;
    async fn fetch_all(&mut self, stmt: Stmt) -> Result<Vec<Self::Row>, LedgerError>;
    async fn fetch_optional(&mut self, stmt: Stmt) -> Result<Option<Self::Row>, LedgerError>;
    async fn commit(self) -> Result<(), LedgerError>;

    async fn fetch_one(&mut self, stmt: Stmt) -> Result<Self::Row, LedgerError> {
        let context = stmt.context;
        self.fetch_optional(stmt)
            .await?
            .ok_or(LedgerError::Corrupt(format!(
                "no row where one was expected while {context}"
            )))
    }
}

/// A ledger engine: runs statements on its pool, each committed on its own, or in a
/// transaction.
#[async_trait]
pub(crate) trait Db: Send + Sync + 'static {
    type Row: Row;
    type Tx: Tx<Row = Self::Row>;

    fn dialect(&self) -> BackendKind;

    /// The account whose rows the operations read and write: every statement on an
    /// account's tables binds it (`account = $n`).
    fn account(&self) -> &str;

    async fn begin(&self, context: &'static str) -> Result<Self::Tx, LedgerError>;
    /// A transaction that will write what it reads: SQLite takes the write lock at once
    /// (`BEGIN IMMEDIATE`; a deferred transaction that read first could not upgrade once
    /// another writer committed, and what it read would be stale); PostgreSQL starts a plain
    /// transaction (its writers lock rows, not the database).
    async fn begin_write(&self, context: &'static str) -> Result<Self::Tx, LedgerError>;
    /// A read-only transaction that sees one snapshot of the ledger (figures that must
    /// agree with each other).
    async fn begin_snapshot(&self, context: &'static str) -> Result<Self::Tx, LedgerError>;
    async fn execute(&self, stmt: Stmt) -> Result<u64, LedgerError>;
    async fn fetch_all(&self, stmt: Stmt) -> Result<Vec<Self::Row>, LedgerError>;
    async fn fetch_optional(&self, stmt: Stmt) -> Result<Option<Self::Row>, LedgerError>;

    async fn fetch_one(&self, stmt: Stmt) -> Result<Self::Row, LedgerError> {
        let context = stmt.context;
        self.fetch_optional(stmt)
            .await?
            .ok_or(LedgerError::Corrupt(format!(
                "no row where one was expected while {context}"
            )))
    }
}

/// Running a [`Stmt`] on an engine's pool and in its transactions, the same text for both
/// backends: `$ledger` (with a `pool` field) implements [`Db`] and `$tx` (a
/// `sqlx::Transaction` of `$engine`) [`Tx`], given in the invoking module `bound(&Stmt)`
/// (the arguments bound as that engine stores them) and `.ctx(context)` (its error mapping).
/// `$($begin)*` are the ways the engine begins a transaction, which do differ.
macro_rules! engine {
    ($ledger:ty, $tx:ident, $engine:ty, $row:ty, { $($begin:tt)* }) => {
        /// A transaction (rolled back when dropped uncommitted), and the account of the
        /// handle that began it.
        pub(crate) struct $tx(
            sqlx::Transaction<'static, $engine>,
            $crate::accounts::AccountName,
        );

        #[async_trait::async_trait]
        impl $crate::ledger::sql::Tx for $tx {
            type Row = $row;

            fn account(&self) -> &str {
                self.1.as_str()
            }

            async fn execute(&mut self, stmt: Stmt) -> Result<u64, LedgerError> {
                let done = bound(&stmt).execute(&mut *self.0).await;
                Ok(done.ctx(stmt.context)?.rows_affected())
            }

            async fn fetch_all(&mut self, stmt: Stmt) -> Result<Vec<$row>, LedgerError> {
                bound(&stmt).fetch_all(&mut *self.0).await.ctx(stmt.context)
            }

            async fn fetch_optional(&mut self, stmt: Stmt) -> Result<Option<$row>, LedgerError> {
                let row = bound(&stmt).fetch_optional(&mut *self.0).await;
                row.ctx(stmt.context)
            }

            async fn commit(self) -> Result<(), LedgerError> {
                self.0.commit().await.ctx("committing to the ledger")
            }
        }

        #[async_trait::async_trait]
        impl $crate::ledger::sql::Db for $ledger {
            type Row = $row;
            type Tx = $tx;

            $($begin)*

            async fn execute(&self, stmt: Stmt) -> Result<u64, LedgerError> {
                let done = bound(&stmt).execute(&self.pool).await;
                Ok(done.ctx(stmt.context)?.rows_affected())
            }

            async fn fetch_all(&self, stmt: Stmt) -> Result<Vec<$row>, LedgerError> {
                bound(&stmt).fetch_all(&self.pool).await.ctx(stmt.context)
            }

            async fn fetch_optional(&self, stmt: Stmt) -> Result<Option<$row>, LedgerError> {
                let row = bound(&stmt).fetch_optional(&self.pool).await;
                row.ctx(stmt.context)
            }
        }
    };
}
pub(crate) use engine;

/// The SQL for each dialect, where their best forms differ.
pub(crate) fn pick(
    kind: BackendKind,
    sqlite: &'static str,
    postgres: &'static str,
) -> &'static str {
    match kind {
        BackendKind::Sqlite => sqlite,
        BackendKind::Postgres => postgres,
    }
}

/// One statement per combination of slice bounds: the conditions a slice sets are written
/// into the SQL (`$1` company, `$2` since, `$3` until, always bound by [`Stmt::slice`],
/// named only when set), so each combination is planned with its bounds as index ranges
/// instead of `($2 IS NULL OR …)`, which a generic plan (PostgreSQL) or SQLite's planner
/// cannot use as a range. Built once from static text.
pub(crate) struct SliceSql(LazyLock<[String; 8]>);

impl SliceSql {
    /// `build` gives the eight statements, usually through [`by_slice`].
    pub const fn new(build: fn() -> [String; 8]) -> Self {
        Self(LazyLock::new(build))
    }

    pub fn sql(&'static self, slice: &Slice) -> &'static str {
        let mask = usize::from(slice.company.is_some())
            | usize::from(slice.since.is_some()) << 1
            | usize::from(slice.until.is_some()) << 2;
        &self.0[mask]
    }
}

/// The eight statements `template` gives with every combination of slice conditions
/// (`template` takes the conditions as ` AND …` text).
pub(crate) fn by_slice(template: impl Fn(&str) -> String) -> [String; 8] {
    std::array::from_fn(|mask| {
        let mut filter = String::new();
        if mask & 1 != 0 {
            filter.push_str(" AND company_code = $1");
        }
        if mask & 2 != 0 {
            filter.push_str(" AND call_start >= $2");
        }
        if mask & 4 != 0 {
            filter.push_str(" AND call_start < $3");
        }
        template(&filter)
    })
}

impl Stmt {
    /// Binds a slice's `$1` company, `$2` since and `$3` until (NULL when unset), for a
    /// statement from [`SliceSql`].
    pub fn slice(self, slice: &Slice) -> Self {
        self.bind(slice.company.as_deref())
            .bind(slice.since)
            .bind(slice.until)
    }
}

/// `n` comma-separated items, each written from its index (from 0) by `each`: a list of
/// placeholders for `IN (…)`, or the rows of a multi-row `VALUES`.
pub(crate) fn listed(n: usize, each: impl Fn(usize) -> String) -> String {
    (0..n).map(each).collect::<Vec<_>>().join(", ")
}

/// How many placeholders one statement should carry at most, for lists and multi-row
/// `VALUES` built in chunks. SQLite: sqlx finds each `$n` by scanning the statement's list
/// of parameter names (`sqlite3_bind_parameter_name`), so binding costs the square of their
/// number (statements of 4,000 spent a quarter of their time there); a few hundred cost
/// little next to a statement's own round trip. PostgreSQL binds them in order (up to
/// 65,535), and each statement fewer is a round trip saved.
pub(crate) fn max_params(kind: BackendKind) -> usize {
    match kind {
        BackendKind::Sqlite => 512,
        BackendKind::Postgres => 8_192,
    }
}

/// `$first, $first+1, …`: `n` placeholders, for an `IN (…)` list.
pub(crate) fn params(first: usize, n: usize) -> String {
    let list: Vec<String> = (first..first + n).map(|i| format!("${i}")).collect();
    list.join(", ")
}

/// `($first, …), (…), …`: `rows` rows of `width` placeholders, for a multi-row `VALUES`.
pub(crate) fn value_rows(first: usize, rows: usize, width: usize) -> String {
    let list: Vec<String> = (0..rows)
        .map(|r| format!("({})", params(first + r * width, width)))
        .collect();
    list.join(", ")
}

/// Rows bound as one argument: a JSON array of arrays (one per row), read in SQL as a table
/// `j` whose row `j.value` is one array. One statement, and one placeholder, for a batch
/// of any size: multi-row `VALUES` of thousands of placeholders cost SQLite's binding the
/// square of their number (see [`max_params`]), and a statement per few hundred rows is a
/// round trip each on PostgreSQL. Only the table function and the casts differ by dialect.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JsonRows {
    kind: BackendKind,
    /// The placeholder's number.
    param: usize,
}

impl JsonRows {
    pub fn new(kind: BackendKind, param: usize) -> Self {
        Self { kind, param }
    }

    /// The table of rows, for a `FROM` clause (PostgreSQL's function names its column
    /// `value`, as SQLite's `json_each` does).
    pub fn table(self) -> String {
        let n = self.param;
        match self.kind {
            BackendKind::Sqlite => format!("json_each(${n}) AS j"),
            BackendKind::Postgres => format!("jsonb_array_elements(${n}::jsonb) AS j"),
        }
    }

    /// `column` is one of the values of a flat JSON array of strings. PostgreSQL gets an
    /// array (`= ANY`), which its planner probes an index with whatever it guesses of the
    /// list's length; `IN (SELECT …)` over the function let it hash-join a scan of every
    /// row of the account when the table's statistics were stale (mid-import).
    pub fn contains(self, column: &str) -> String {
        let n = self.param;
        match self.kind {
            BackendKind::Sqlite => format!("{column} IN (SELECT value FROM json_each(${n}))"),
            BackendKind::Postgres => {
                format!("{column} = ANY (ARRAY(SELECT jsonb_array_elements_text(${n}::jsonb)))")
            }
        }
    }

    /// Column `i` of the row as text (NULL for JSON `null`).
    pub fn text(self, i: usize) -> String {
        format!("j.value ->> {i}")
    }

    /// Column `i` as an integer.
    pub fn int(self, i: usize) -> String {
        match self.kind {
            BackendKind::Sqlite => self.text(i),
            BackendKind::Postgres => format!("(j.value ->> {i})::bigint"),
        }
    }

    /// Column `i` as a time written by [`json_time`].
    pub fn time(self, i: usize) -> String {
        match self.kind {
            BackendKind::Sqlite => self.text(i),
            BackendKind::Postgres => format!("(j.value ->> {i})::timestamptz"),
        }
    }
}

/// A time as a [`JsonRows`] column carries it: the ledger's fixed-width UTC text, which is
/// what SQLite stores and what PostgreSQL reads as a `timestamptz`.
pub(crate) fn json_time(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(crate::timefmt::to_ledger)
}

/// `rows` as the JSON argument of a [`JsonRows`] statement.
pub(crate) fn json_arg<T: serde::Serialize>(rows: &T) -> Result<String, LedgerError> {
    serde_json::to_string(rows)
        .map_err(|e| LedgerError::Corrupt(format!("statement rows as JSON: {e}")))
}

/// How many times a transaction that lost a race is run again before its caller sees the
/// [`LedgerError::Conflict`].
const RETRIES: u32 = 3;

/// Runs `op` (one whole transaction, which the failure rolled back) again while it loses to
/// another transaction by serialization failure or deadlock (PostgreSQL: SQLSTATE 40001,
/// 40P01), at most [`RETRIES`] more times, after a short randomized pause. A lock timeout
/// is returned at once: the statement already waited the busy timeout. SQLite never loses
/// such a race (one writer at a time), so there `op` runs once.
pub(crate) async fn retry_conflicts<T, F, Fut>(mut op: F) -> Result<T, LedgerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, LedgerError>>,
{
    let mut retries = 0;
    loop {
        match op().await {
            Err(err) if retries < RETRIES && lost_race(&err) => {
                retries += 1;
                tracing::debug!(error = %err, retries, "ledger transaction lost a race; running it again");
                tokio::time::sleep(pause(retries)).await;
            }
            other => return other,
        }
    }
}

/// Serialization failure or deadlock: the transaction was rolled back and may simply run again.
fn lost_race(err: &LedgerError) -> bool {
    match err {
        LedgerError::Conflict {
            source: sqlx::Error::Database(db),
            ..
        } => matches!(db.code().as_deref(), Some("40001" | "40P01")),
        _ => false,
    }
}

/// 10, 20, 40 ms, plus up to 10 ms so that the two sides of a deadlock do not meet again.
fn pause(retry: u32) -> Duration {
    let base = 10u64 << retry.saturating_sub(1).min(4);
    Duration::from_millis(base + rand::random_range(0..10u64))
}

/// The columns [`record_from_row`] reads.
pub(crate) const RECORD_COLUMNS: &str = "uuid, company_code, record_file, call_start, billsec, raw_json, bill_id, notes, origin, imported_at";

/// The call record in a row holding [`RECORD_COLUMNS`].
pub(crate) fn record_from_row(row: &impl Row) -> Result<CallRecord, LedgerError> {
    let origin = row.text("origin")?;
    Ok(CallRecord {
        uuid: row.uuid("uuid")?,
        company_code: row.text("company_code")?,
        record_file: row.text("record_file")?,
        call_start: row.opt_time("call_start")?,
        billsec: row.opt_int("billsec")?,
        raw_json: row.text("raw_json")?,
        bill_id: row.opt_text("bill_id")?,
        notes: row.opt_text("notes")?,
        origin: Origin::parse(&origin)
            .ok_or_else(|| LedgerError::Corrupt(format!("origin {origin:?}")))?,
        received_at: row.opt_time("imported_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_statements_name_only_the_bounds_set() {
        static SQL: SliceSql = SliceSql::new(|| by_slice(|f| format!("WHERE true{f}")));
        let t = chrono::DateTime::from_timestamp(1_700_000_000, 0);
        let all = Slice {
            company: Some("c".into()),
            since: t,
            until: t,
        };
        assert_eq!(SQL.sql(&Slice::default()), "WHERE true");
        assert_eq!(
            SQL.sql(&all),
            "WHERE true AND company_code = $1 AND call_start >= $2 AND call_start < $3"
        );
        let since_only = Slice {
            since: t,
            ..Slice::default()
        };
        assert_eq!(SQL.sql(&since_only), "WHERE true AND call_start >= $2");
        assert_eq!(Stmt::new("", "test").slice(&since_only).args.len(), 3);
    }

    #[test]
    fn pauses_grow_and_stay_short() {
        assert!(pause(1) < Duration::from_millis(20));
        assert!(pause(3) >= Duration::from_millis(40));
        assert!(pause(30) < Duration::from_millis(200));
    }

    #[test]
    fn placeholders_number_on_from_the_first() {
        assert_eq!(params(3, 3), "$3, $4, $5");
        assert_eq!(params(1, 1), "$1");
        assert_eq!(params(3, 2), "$3, $4");
        assert_eq!(value_rows(2, 2, 2), "($2, $3), ($4, $5)");
    }

    #[test]
    fn sizes_beyond_i64_saturate() {
        assert!(matches!(Arg::from(u64::MAX), Arg::Int(Some(i64::MAX))));
        assert!(matches!(Arg::from(7u64), Arg::Int(Some(7))));
    }
}
