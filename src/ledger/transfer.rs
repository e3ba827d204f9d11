//! Whole tables in and out of a ledger, backend-neutral, for `callvault ledger copy`: every
//! row as a map of column → JSON value, times in the ledger's fixed-width UTC text, so the
//! same table reads the same on SQLite and PostgreSQL and a checksum over it compares.

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::LedgerError;

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
    /// Who looked at which calls (append-only).
    AccessLog,
    /// The calls each access-log entry touched.
    AccessLogCalls,
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
    pub const ALL: [Table; 11] = [
        Self::Runs,
        Self::Calls,
        Self::Attempts,
        Self::Manifests,
        Self::Verifications,
        Self::Syncs,
        Self::Holds,
        Self::HeldCalls,
        Self::Tombstones,
        Self::AccessLog,
        Self::AccessLogCalls,
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
            Self::AccessLog => "access_log",
            Self::AccessLogCalls => "access_log_calls",
        }
    }

    /// The column rows are read in order of (unique), and paged by.
    pub fn key(self) -> &'static str {
        match self {
            Self::Runs
            | Self::Attempts
            | Self::Verifications
            | Self::Syncs
            | Self::Holds
            | Self::HeldCalls
            | Self::AccessLog
            | Self::AccessLogCalls => "id",
            Self::Calls => "uuid",
            Self::Tombstones => "call_uuid",
            Self::Manifests => "seq",
        }
    }

    pub fn columns(self) -> &'static [(&'static str, Kind)] {
        use Kind::{Int, Text, Time};
        match self {
            Self::Runs => &[
                ("id", Text),
                ("started_at", Time),
                ("finished_at", Time),
                ("status", Text),
                ("host", Text),
                ("pid", Int),
                ("options", Text),
                ("summary", Text),
                ("exit_code", Int),
            ],
            Self::Calls => &[
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
            ],
            Self::Attempts => &[
                ("id", Int),
                ("call_uuid", Text),
                ("run_id", Text),
                ("started_at", Time),
                ("finished_at", Time),
                ("outcome", Text),
                ("error_code", Text),
                ("message", Text),
                ("bytes", Int),
            ],
            Self::Manifests => &[
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
            ],
            Self::Verifications => &[
                ("id", Text),
                ("started_at", Time),
                ("finished_at", Time),
                ("scope", Text),
                ("checked", Int),
                ("problems", Int),
                ("summary", Text),
            ],
            Self::Syncs => &[
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
            ],
            Self::Holds => &[
                ("id", Text),
                ("reason", Text),
                ("placed_by", Text),
                ("placed_at", Time),
                ("selection", Text),
            ],
            Self::HeldCalls => &[
                ("id", Text),
                ("hold_id", Text),
                ("call_uuid", Text),
                ("object_hold", Text),
                ("released_at", Time),
                ("released_by", Text),
                ("release_reason", Text),
            ],
            Self::Tombstones => &[
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
            ],
            Self::AccessLog => &[
                ("id", Int),
                ("at", Time),
                ("actor", Text),
                ("action", Text),
                ("source", Text),
                ("reason", Text),
                ("query", Text),
                ("calls", Int),
            ],
            Self::AccessLogCalls => &[("id", Int), ("entry_id", Int), ("call_uuid", Text)],
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

#[async_trait]
pub trait Transfer: Send + Sync {
    /// How many rows `table` holds.
    async fn count_rows(&self, table: Table) -> Result<i64, LedgerError>;

    /// Up to `limit` rows of `table` whose key is greater than `after`, by key.
    async fn export_rows(
        &self,
        table: Table,
        after: Option<&Value>,
        limit: i64,
    ) -> Result<Vec<TableRow>, LedgerError>;

    /// Inserts rows read by [`Transfer::export_rows`] (from any backend) as they are, in one
    /// transaction; keeps identity sequences and derived counts right.
    async fn import_rows(&self, table: Table, rows: &[TableRow]) -> Result<(), LedgerError>;
}
