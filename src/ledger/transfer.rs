//! Whole tables in and out of a ledger, backend-neutral, for `callvault ledger copy`: every
//! row as a map of column → JSON value, times in the ledger's fixed-width UTC text, so the
//! same table reads the same on SQLite and PostgreSQL and a checksum over it compares.
//!
//! A page of rows is imported as multi-row `INSERT`s in one transaction. The triggers count
//! the imported calls per state as for any insert; on PostgreSQL, after rows with an
//! identity column are imported, its sequence is moved past the largest id, so the next row
//! recorded there gets a fresh one (SQLite's rowid already follows the largest).

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::sql::{Arg, Db, Row, Stmt, Tx, max_params, params, retry_conflicts, value_rows};
use super::{BackendKind, LedgerError};
use crate::timefmt::{from_ledger, to_ledger};

/// The tables a ledger holds, in an order that satisfies their references (runs before the
/// attempts that name them, calls before attempts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Runs,
    Calls,
    Attempts,
    Manifests,
    Verifications,
    Syncs,
    Holds,
    HeldCalls,
    Tombstones,
    UiSessions,
    /// Who looked at which calls (append-only).
    AccessLog,
    /// The calls each access-log entry touched.
    AccessLogCalls,
    /// The Merkle log's nodes.
    LogNodes,
    /// Time-stamp tokens over checkpoints.
    CheckpointStamps,
}

/// How a column's values travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    /// A UTC time: text in SQLite, `timestamptz` in PostgreSQL, [`crate::timefmt::to_ledger`]
    /// text in a [`TableRow`].
    Time,
}

/// One row: column → value (`null`, a string, or an integer).
pub type TableRow = Map<String, Value>;

impl Table {
    pub const ALL: [Table; 14] = [
        Self::Runs,
        Self::Calls,
        Self::Attempts,
        Self::Manifests,
        Self::Verifications,
        Self::Syncs,
        Self::Holds,
        Self::HeldCalls,
        Self::Tombstones,
        Self::UiSessions,
        Self::AccessLog,
        Self::AccessLogCalls,
        Self::LogNodes,
        Self::CheckpointStamps,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Runs => "runs",
            Self::Calls => "calls",
            Self::Attempts => "attempts",
            Self::Manifests => "manifests",
            Self::Verifications => "verifications",
            Self::Syncs => "syncs",
            Self::Holds => "holds",
            Self::HeldCalls => "held_calls",
            Self::Tombstones => "tombstones",
            Self::UiSessions => "ui_sessions",
            Self::AccessLog => "access_log",
            Self::AccessLogCalls => "access_log_calls",
            Self::LogNodes => "log_nodes",
            Self::CheckpointStamps => "checkpoint_stamps",
        }
    }

    /// The columns rows are read in order of (unique together), and paged by.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            Self::Calls => &["account", "uuid"],
            Self::Tombstones => &["account", "call_uuid"],
            Self::Manifests => &["account", "seq"],
            Self::LogNodes => &["account", "level", "idx"],
            Self::CheckpointStamps => &["account", "seq", "tsa"],
            Self::Runs
            | Self::Attempts
            | Self::Verifications
            | Self::Syncs
            | Self::Holds
            | Self::HeldCalls
            | Self::AccessLog
            | Self::AccessLogCalls => &["id"],
            Self::UiSessions => &["token_sha256"],
        }
    }

    /// The key column that names a row within its account (the last of [`Table::keys`]).
    pub fn key(self) -> &'static str {
        let keys = self.keys();
        keys[keys.len() - 1]
    }

    pub fn columns(self) -> &'static [(&'static str, Kind)] {
        match self {
            Self::Runs => columns::RUNS,
            Self::Calls => columns::CALLS,
            Self::Attempts => columns::ATTEMPTS,
            Self::Manifests => columns::MANIFESTS,
            Self::Verifications => columns::VERIFICATIONS,
            Self::Syncs => columns::SYNCS,
            Self::Holds => columns::HOLDS,
            Self::HeldCalls => columns::HELD_CALLS,
            Self::Tombstones => columns::TOMBSTONES,
            Self::UiSessions => columns::UI_SESSIONS,
            Self::AccessLog => columns::ACCESS_LOG,
            Self::AccessLogCalls => columns::ACCESS_LOG_CALLS,
            Self::LogNodes => columns::LOG_NODES,
            Self::CheckpointStamps => columns::CHECKPOINT_STAMPS,
        }
    }

    /// `SELECT` list of every column, in [`Table::columns`] order.
    pub fn column_list(self) -> String {
        self.columns()
            .iter()
            .map(|(c, _)| *c)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Each table's columns, in the order they are read and written.
mod columns {
    use super::Kind::{self, Int, Text, Time};

    pub(super) const RUNS: &[(&str, Kind)] = &[
        ("id", Text),
        ("started_at", Time),
        ("finished_at", Time),
        ("status", Text),
        ("host", Text),
        ("pid", Int),
        ("options", Text),
        ("summary", Text),
        ("exit_code", Int),
        ("account", Text),
    ];

    pub(super) const CALLS: &[(&str, Kind)] = &[
        ("uuid", Text),
        ("company_code", Text),
        ("record_file", Text),
        ("call_start", Time),
        ("billsec", Int),
        ("raw_json", Text),
        ("state", Text),
        ("attempts", Int),
        ("next_attempt_at", Time),
        ("lease_owner", Text),
        ("lease_until", Time),
        ("object_key", Text),
        ("size_bytes", Int),
        ("sha256", Text),
        ("content_type", Text),
        ("etag", Text),
        ("object_version", Text),
        ("archived_at", Time),
        ("last_error_code", Text),
        ("last_error", Text),
        ("imported_at", Time),
        ("updated_at", Time),
        ("manifest_seq", Int),
        ("last_verified_at", Time),
        ("last_verify_result", Text),
        ("media_duration_ms", Int),
        ("media_note", Text),
        ("bill_id", Text),
        ("origin", Text),
        ("bill_seen_at", Time),
        ("notes", Text),
        ("account", Text),
    ];

    pub(super) const ATTEMPTS: &[(&str, Kind)] = &[
        ("id", Int),
        ("call_uuid", Text),
        ("run_id", Text),
        ("started_at", Time),
        ("finished_at", Time),
        ("outcome", Text),
        ("error_code", Text),
        ("message", Text),
        ("bytes", Int),
        ("account", Text),
    ];

    pub(super) const MANIFESTS: &[(&str, Kind)] = &[
        ("seq", Int),
        ("object_key", Text),
        ("state", Text),
        ("run_id", Text),
        ("owner", Text),
        ("claimed_until", Time),
        ("previous_key", Text),
        ("previous_sha256", Text),
        ("entries", Int),
        ("sha256", Text),
        ("size_bytes", Int),
        ("created_at", Time),
        ("written_at", Time),
        ("account", Text),
        ("log_start", Int),
        ("log_size", Int),
        ("log_root", Text),
        ("checkpoint_key", Text),
        ("checkpoint", Text),
        ("checkpoint_signer", Text),
        ("logged_at", Time),
        ("stamped_at", Time),
    ];

    pub(super) const LOG_NODES: &[(&str, Kind)] = &[
        ("account", Text),
        ("level", Int),
        ("idx", Int),
        ("hash", Text),
    ];

    pub(super) const CHECKPOINT_STAMPS: &[(&str, Kind)] = &[
        ("account", Text),
        ("seq", Int),
        ("tsa", Text),
        ("object_key", Text),
        ("token", Text),
        ("gen_time", Time),
        ("stamped_at", Time),
    ];

    pub(super) const VERIFICATIONS: &[(&str, Kind)] = &[
        ("id", Text),
        ("started_at", Time),
        ("finished_at", Time),
        ("scope", Text),
        ("checked", Int),
        ("problems", Int),
        ("summary", Text),
        ("account", Text),
    ];

    pub(super) const SYNCS: &[(&str, Kind)] = &[
        ("id", Text),
        ("started_at", Time),
        ("finished_at", Time),
        ("status", Text),
        ("since", Time),
        ("until", Time),
        ("covered_until", Time),
        ("bills", Int),
        ("found", Int),
        ("recordings_added", Int),
        ("unreadable", Int),
        ("requests", Int),
        ("exit_code", Int),
        ("summary", Text),
        ("account", Text),
    ];

    pub(super) const HOLDS: &[(&str, Kind)] = &[
        ("id", Text),
        ("reason", Text),
        ("placed_by", Text),
        ("placed_at", Time),
        ("selection", Text),
        ("account", Text),
    ];

    pub(super) const HELD_CALLS: &[(&str, Kind)] = &[
        ("id", Text),
        ("hold_id", Text),
        ("call_uuid", Text),
        ("object_hold", Text),
        ("released_at", Time),
        ("released_by", Text),
        ("release_reason", Text),
        ("account", Text),
    ];

    pub(super) const TOMBSTONES: &[(&str, Kind)] = &[
        ("call_uuid", Text),
        ("object_key", Text),
        ("sidecar_key", Text),
        ("sha256", Text),
        ("size_bytes", Int),
        ("archived_at", Time),
        ("erased_at", Time),
        ("reason", Text),
        ("erased_by", Text),
        ("versions_deleted", Int),
        ("manifest_seq", Int),
        ("account", Text),
    ];

    pub(super) const UI_SESSIONS: &[(&str, Kind)] = &[
        ("token_sha256", Text),
        ("username", Text),
        ("created_at", Time),
        ("expires_at", Time),
    ];

    pub(super) const ACCESS_LOG: &[(&str, Kind)] = &[
        ("id", Int),
        ("at", Time),
        ("actor", Text),
        ("action", Text),
        ("source", Text),
        ("reason", Text),
        ("query", Text),
        ("calls", Int),
        ("account", Text),
    ];

    pub(super) const ACCESS_LOG_CALLS: &[(&str, Kind)] = &[
        ("id", Int),
        ("entry_id", Int),
        ("call_uuid", Text),
        ("account", Text),
    ];
}

#[async_trait]
pub trait Transfer: Send + Sync {
    /// How many rows `table` holds.
    async fn count_rows(&self, table: Table) -> Result<i64, LedgerError>;

    /// The number of this handle's account's rows in `table` (one with an `account`
    /// column).
    async fn count_account_rows(&self, table: Table) -> Result<i64, LedgerError>;

    /// Up to `limit` rows of `table` whose key ([`Table::keys`]) is greater than the row
    /// `after`'s, by key.
    async fn export_rows(
        &self,
        table: Table,
        after: Option<&TableRow>,
        limit: i64,
    ) -> Result<Vec<TableRow>, LedgerError>;

    /// Inserts rows read by [`Transfer::export_rows`] (from any backend) as they are, in one
    /// transaction; keeps identity sequences and derived counts right. A row that names no
    /// account (one rebuilt from a bucket) is this handle's account's.
    async fn import_rows(&self, table: Table, rows: &[TableRow]) -> Result<(), LedgerError>;
}

impl Table {
    fn kind_of(self, column: &str) -> Kind {
        self.columns()
            .iter()
            .find(|(name, _)| *name == column)
            .map_or(Kind::Text, |(_, kind)| *kind)
    }

    /// Whether its `id` is an identity column, numbered by a sequence on PostgreSQL.
    fn has_identity(self) -> bool {
        matches!(
            self,
            Self::Attempts | Self::AccessLog | Self::AccessLogCalls
        )
    }
}

fn not_a(table: Table, name: &str, kind: Kind, value: &Value) -> LedgerError {
    LedgerError::Corrupt(format!(
        "column {}.{name}: {value} is not a {kind:?} value",
        table.name()
    ))
}

/// A cell of a [`TableRow`] as the argument its column takes.
fn arg_of(table: Table, name: &str, kind: Kind, value: Option<&Value>) -> Result<Arg, LedgerError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(match kind {
            Kind::Text => Arg::Text(None),
            Kind::Int => Arg::Int(None),
            Kind::Time => Arg::Time(None),
        });
    };
    let bad = || not_a(table, name, kind, value);
    Ok(match kind {
        Kind::Text => value.as_str().ok_or_else(bad)?.into(),
        Kind::Int => value.as_i64().ok_or_else(bad)?.into(),
        Kind::Time => value.as_str().and_then(from_ledger).ok_or_else(bad)?.into(),
    })
}

/// A column of a row read from the ledger as a [`TableRow`] value.
fn value_of(row: &impl Row, name: &str, kind: Kind) -> Result<Value, LedgerError> {
    Ok(match kind {
        Kind::Text => row.opt_text(name)?.map_or(Value::Null, Value::String),
        Kind::Int => row.opt_int(name)?.map_or(Value::Null, Value::from),
        Kind::Time => row
            .opt_time(name)?
            .map_or(Value::Null, |t| Value::String(to_ledger(t))),
    })
}

#[async_trait]
impl<D: Db> Transfer for D {
    async fn count_rows(&self, table: Table) -> Result<i64, LedgerError> {
        let sql = format!("SELECT count(*) AS n FROM {}", table.name());
        self.fetch_one(Stmt::new(sql, "counting a table's rows"))
            .await?
            .int("n")
    }

    async fn count_account_rows(&self, table: Table) -> Result<i64, LedgerError> {
        let sql = format!(
            "SELECT count(*) AS n FROM {} WHERE account = $1",
            table.name()
        );
        self.fetch_one(Stmt::new(sql, "counting an account's rows").bind(self.account()))
            .await?
            .int("n")
    }

    async fn export_rows(
        &self,
        table: Table,
        after: Option<&TableRow>,
        limit: i64,
    ) -> Result<Vec<TableRow>, LedgerError> {
        let (name, keys, columns) = (table.name(), table.keys().join(", "), table.column_list());
        let filter = if after.is_some() {
            format!(" WHERE ({keys}) > ({})", params(2, table.keys().len()))
        } else {
            String::new()
        };
        let mut stmt = Stmt::new(
            format!("SELECT {columns} FROM {name}{filter} ORDER BY {keys} LIMIT $1"),
            "reading a table's rows",
        )
        .bind(limit.max(0));
        if let Some(after) = after {
            for key in table.keys() {
                stmt = stmt.bind(arg_of(table, key, table.kind_of(key), after.get(*key))?);
            }
        }
        let rows = self.fetch_all(stmt).await?;
        rows.iter()
            .map(|row| {
                table
                    .columns()
                    .iter()
                    .map(|(name, kind)| Ok(((*name).to_owned(), value_of(row, name, *kind)?)))
                    .collect()
            })
            .collect()
    }

    async fn import_rows(&self, table: Table, rows: &[TableRow]) -> Result<(), LedgerError> {
        if rows.is_empty() {
            return Ok(());
        }
        let inserts = inserts(table, rows, self.account(), max_params(self.dialect()))?;
        let inserts = &inserts;
        let kind = self.dialect();
        retry_conflicts(|| async move {
            let mut tx = self.begin("starting a table import").await?;
            for insert in inserts {
                tx.execute(insert.clone()).await?;
            }
            if kind == BackendKind::Postgres && table.has_identity() {
                // The next row recorded here numbers after the copied ones.
                let name = table.name();
                tx.execute(Stmt::new(
                    format!(
                        "SELECT setval(pg_get_serial_sequence('{name}', 'id'),
                                       GREATEST(max(id), 1), max(id) IS NOT NULL)
                         FROM {name}"
                    ),
                    "moving an identity sequence past the copied ids",
                ))
                .await?;
            }
            tx.commit().await
        })
        .await
    }
}

/// The multi-row `INSERT`s that write `rows` into `table` as they are (in `account` where a
/// row names none), each with at most `max_params` values.
fn inserts(
    table: Table,
    rows: &[TableRow],
    account: &str,
    max_params: usize,
) -> Result<Vec<Stmt>, LedgerError> {
    let default_account = Value::String(account.to_owned());
    let columns = table.columns();
    let per_insert = (max_params / columns.len()).max(1);
    rows.chunks(per_insert)
        .map(|chunk| {
            let sql = format!(
                "INSERT INTO {} ({}) VALUES {}",
                table.name(),
                table.column_list(),
                value_rows(1, chunk.len(), columns.len())
            );
            let mut stmt = Stmt::new(sql, "writing copied rows");
            for row in chunk {
                for (name, kind) in columns {
                    let value = match row.get(*name) {
                        None | Some(Value::Null) if *name == "account" => Some(&default_account),
                        value => value,
                    };
                    stmt = stmt.bind(arg_of(table, name, *kind, value)?);
                }
            }
            Ok(stmt)
        })
        .collect()
}
