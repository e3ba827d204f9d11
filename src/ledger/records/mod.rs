//! Call records coming in (import, upsert by uuid, taking over the row of a call first
//! found in the bill list) and being looked at (one row, by state).
//!
//! An import is a few statements whatever the batch size (a CSV batch is a thousand
//! records): the rows sync found for the batch's calls are taken over first (see
//! [`take_over_bill_rows`]; while a pass holds such a row, the callback waits for it, see
//! `super::takeovers`), then one `INSERT … SELECT … ON CONFLICT (account, uuid) DO NOTHING`
//! inserts the first occurrence of each uuid, and one `UPDATE` adds late recordings, each
//! with the batch's rows as one JSON argument ([`JsonRows`]). The outcomes are
//! those of importing the records one by one ([`ImportPlan`]). Two receivers importing the
//! same record at once give one row and one `New`: on SQLite the import holds the write
//! lock from its start; on PostgreSQL the second insert waits for the first transaction and
//! then does nothing. Rows are inserted in uuid order, so two overlapping batches take
//! their row locks in the same order.

mod plan;

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use self::plan::ImportPlan;
use super::sql::{
    JsonRows, RECORD_COLUMNS, Row, Stmt, Tx, json_arg, json_time, record_from_row, retry_conflicts,
};
use super::sync::{StoreCalls, take_over_bill_rows};
use super::{BackendKind, LedgerError};
use crate::domain::{CallRecord, CallUuid, RecordState, RunId};

/// What importing one record did to the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    New,
    /// The uuid was known; nothing changed.
    Known,
    /// The uuid was known without a recording and now has one: it became pending.
    RecordingAdded,
    /// The call was known from the provider's bill list only (`sync` found it): this
    /// callback took the row over, with its uuid and its record.
    MatchedBill,
}

impl ImportOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Known => "already_known",
            Self::RecordingAdded => "recording_added",
            Self::MatchedBill => "matched_bill",
        }
    }
}

/// Everything the ledger holds for one call, for inspection and tests.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerRow {
    #[serde(skip)]
    pub record: CallRecord,
    pub state: RecordState,
    pub attempts: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<RunId>,
    pub object_key: Option<String>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub content_type: Option<String>,
    pub etag: Option<String>,
    pub archived_at: Option<DateTime<Utc>>,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
    /// The manifest that lists this record, once one does.
    pub manifest_seq: Option<i64>,
    /// What `verify` last found (`ok`, `missing`, `changed`, `unreadable`).
    pub last_verify_result: Option<String>,
    /// When a sync last saw the call in the provider's bill list.
    pub bill_seen_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait Records: Send + Sync {
    /// Upserts records by uuid in one transaction. A record already known is left alone,
    /// except that a late recording for a call known as unanswered makes it pending. A call
    /// known only from the bill list (by the same uuid, else by bill id within the company,
    /// else by record file name) is taken over: the row gets the record's uuid, its raw
    /// record and fields, and keeps its archival state and attempts (`MatchedBill`). Safe
    /// when several receivers, or a receiver and a sync, import the same call at once: one
    /// row, one `New`.
    async fn import(
        &self,
        records: &[CallRecord],
        now: DateTime<Utc>,
    ) -> Result<Vec<ImportOutcome>, LedgerError>;

    /// One call's full row.
    async fn get(&self, uuid: &CallUuid) -> Result<Option<LedgerRow>, LedgerError>;

    /// The uuids of every record in `state`, oldest call first.
    async fn uuids_in_state(&self, state: RecordState) -> Result<Vec<CallUuid>, LedgerError>;
}

#[async_trait]
impl<D: StoreCalls> Records for D {
    async fn import(
        &self,
        records: &[CallRecord],
        now: DateTime<Utc>,
    ) -> Result<Vec<ImportOutcome>, LedgerError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let plan = ImportPlan::new(records);
        let (inserted, added, merged) =
            retry_conflicts(|| import_once(self, records, &plan, now)).await?;
        let mut outcomes = plan.outcomes(records, &inserted, &added);
        for &i in &plan.firsts {
            if merged.contains(records[i].uuid.as_str()) {
                outcomes[i] = ImportOutcome::MatchedBill;
            }
        }
        Ok(outcomes)
    }

    async fn get(&self, uuid: &CallUuid) -> Result<Option<LedgerRow>, LedgerError> {
        let stmt = Stmt::new(
            format!(
                "SELECT {RECORD_COLUMNS}, state, attempts, next_attempt_at, lease_owner,
                        object_key, size_bytes, sha256, content_type, etag, archived_at,
                        last_error_code, last_error, manifest_seq, last_verify_result,
                        bill_seen_at
                 FROM calls WHERE account = $1 AND uuid = $2"
            ),
            "reading a call record",
        );
        let stmt = stmt.bind(self.account()).bind(uuid);
        let Some(row) = self.fetch_optional(stmt).await? else {
            return Ok(None);
        };
        Ok(Some(LedgerRow {
            record: record_from_row(&row)?,
            state: row.state("state")?,
            attempts: row.int("attempts")?,
            next_attempt_at: row.opt_time("next_attempt_at")?,
            lease_owner: row.opt_text("lease_owner")?.map(RunId::from),
            object_key: row.opt_text("object_key")?,
            size_bytes: row.opt_int("size_bytes")?,
            sha256: row.opt_text("sha256")?,
            content_type: row.opt_text("content_type")?,
            etag: row.opt_text("etag")?,
            archived_at: row.opt_time("archived_at")?,
            last_error_code: row.opt_text("last_error_code")?,
            last_error: row.opt_text("last_error")?,
            manifest_seq: row.opt_int("manifest_seq")?,
            last_verify_result: row.opt_text("last_verify_result")?,
            bill_seen_at: row.opt_time("bill_seen_at")?,
        }))
    }

    /// Oldest call first, undated calls first of all (NULL sorts lowest, as SQLite's index
    /// order has it).
    async fn uuids_in_state(&self, state: RecordState) -> Result<Vec<CallUuid>, LedgerError> {
        let rows = self
            .fetch_all(
                Stmt::new(
                    "SELECT uuid FROM calls WHERE account = $1 AND state = $2
                     ORDER BY call_start ASC NULLS FIRST, uuid",
                    "listing records by state",
                )
                .bind(self.account())
                .bind(state.as_str()),
            )
            .await?;
        rows.iter().map(|row| row.uuid("uuid")).collect()
    }
}

/// The uuids an import inserted, those whose late recording it added, and those that took
/// over a row found by sync.
type Imported = (HashSet<String>, HashSet<String>, HashSet<String>);

/// One attempt at the import's transaction.
async fn import_once<D: StoreCalls>(
    db: &D,
    records: &[CallRecord],
    plan: &ImportPlan,
    now: DateTime<Utc>,
) -> Result<Imported, LedgerError> {
    let kind = db.dialect();
    let firsts: Vec<&CallRecord> = plan.firsts.iter().map(|&i| &records[i]).collect();
    // The calls locked first (see `StoreCalls::begin_storing`): the rows read to match a
    // call are the rows written.
    let mut tx = db.begin_storing(&firsts).await?;
    let merged = take_over_bill_rows(&mut tx, kind, &firsts, now).await?;
    // A callback that joined a bill's row (or waits to, while a pass holds it) has its row.
    let new: Vec<&CallRecord> = firsts
        .iter()
        .copied()
        .filter(|r| !merged.contains(r.uuid.as_str()))
        .collect();
    let mut inserted = HashSet::new();
    if !new.is_empty() {
        for row in tx
            .fetch_all(insert_stmt(kind, db.account(), &new, now)?)
            .await?
        {
            inserted.insert(row.text("uuid")?);
        }
    }
    let mut late: Vec<&CallRecord> = plan.late_records(records, &inserted).collect();
    late.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    let mut added = HashSet::new();
    if !late.is_empty() {
        let stmt = late_recordings_stmt(kind, db.account(), &late, now)?;
        for row in tx.fetch_all(stmt).await? {
            added.insert(row.text("uuid")?);
        }
    }
    db.index_for_search(&mut tx, records.len()).await?;
    tx.commit().await?;
    Ok((inserted, added, merged))
}

/// Inserts the records whose uuid the ledger does not know yet, in the order given; returns
/// their uuids. The rows are one JSON argument ([`JsonRows`]).
fn insert_stmt(
    kind: BackendKind,
    account: &str,
    records: &[&CallRecord],
    now: DateTime<Utc>,
) -> Result<Stmt, LedgerError> {
    let j = JsonRows::new(kind, 3);
    let sql = format!(
        "INSERT INTO calls (account, uuid, company_code, record_file, call_start, billsec, raw_json,
                            state, bill_id, notes, next_attempt_at, imported_at, updated_at,
                            origin)
         SELECT $2, {}, {}, {}, {}, {}, {}, {}, {}, {}, $1, $1, $1, 'callback'
         FROM {} WHERE true
         ON CONFLICT (account, uuid) DO NOTHING
         RETURNING uuid",
        j.text(0),
        j.text(1),
        j.text(2),
        j.time(3),
        j.int(4),
        j.text(5),
        j.text(6),
        j.text(7),
        j.text(8),
        j.table(),
    );
    let rows: Vec<_> = records
        .iter()
        .map(|r| {
            let state = if r.has_recording() {
                RecordState::Pending
            } else {
                RecordState::NoRecording
            };
            (
                r.uuid.as_str(),
                r.company_code.as_str(),
                r.record_file.trim(),
                json_time(r.call_start),
                r.billsec,
                r.raw_json.as_str(),
                state.as_str(),
                r.bill_id.as_deref(),
                r.notes.as_deref(),
            )
        })
        .collect();
    Ok(Stmt::new(sql, "importing call records")
        .bind(now)
        .bind(account)
        .bind(json_arg(&rows)?))
}

/// Gives known calls without a recording the one `records` bring: they become pending.
/// Returns the uuids that did.
fn late_recordings_stmt(
    kind: BackendKind,
    account: &str,
    records: &[&CallRecord],
    now: DateTime<Utc>,
) -> Result<Stmt, LedgerError> {
    let j = JsonRows::new(kind, 3);
    let sql = format!(
        "WITH late (late_uuid, late_file, late_json) AS (
             SELECT {}, {}, {} FROM {}
         )
         UPDATE calls
         SET record_file = late.late_file, raw_json = late.late_json, state = 'pending',
             next_attempt_at = $1, updated_at = $1
         FROM late
         WHERE calls.account = $2 AND calls.uuid = late.late_uuid
           AND calls.state = 'no_recording'
         RETURNING uuid",
        j.text(0),
        j.text(1),
        j.text(2),
        j.table(),
    );
    let rows: Vec<_> = records
        .iter()
        .map(|r| (r.uuid.as_str(), r.record_file.trim(), r.raw_json.as_str()))
        .collect();
    Ok(Stmt::new(sql, "adding late recordings")
        .bind(now)
        .bind(account)
        .bind(json_arg(&rows)?))
}
