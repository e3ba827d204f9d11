//! What `callvault export` reads about the chosen calls beyond a search: each call's stored
//! object (with its version) and the manifest that lists it, and the history of the legal
//! holds that kept it (placed and released, by whom and why). Read in chunks of uuids, each
//! statement written once for both backends.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::LedgerError;
use super::sql::{Db, Row, Stmt, params};
use crate::domain::{CallUuid, RecordState};

/// Uuids per statement (well under either engine's limit on placeholders).
const CALLS_PER_STATEMENT: usize = 400;

/// One chosen call as a bundle describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportCall {
    pub uuid: CallUuid,
    pub state: RecordState,
    pub company_code: String,
    pub call_start: Option<DateTime<Utc>>,
    pub billsec: Option<i64>,
    /// The record as received; `{}` once erased.
    pub raw_json: String,
    pub object_key: Option<String>,
    pub object_version: Option<String>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub archived_at: Option<DateTime<Utc>>,
    /// The manifest that lists the call's archiving.
    pub manifest_seq: Option<i64>,
    pub last_verify_result: Option<String>,
    pub last_verified_at: Option<DateTime<Utc>>,
}

/// A call's place in one legal hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HoldEvent {
    pub call_uuid: CallUuid,
    pub hold_id: String,
    pub reason: String,
    pub placed_by: String,
    pub placed_at: DateTime<Utc>,
    /// What the store did with the object-level hold (`set`, `unsupported`, …).
    pub object_hold: String,
    pub released_at: Option<DateTime<Utc>>,
    pub released_by: Option<String>,
    pub release_reason: Option<String>,
}

#[async_trait]
pub trait ExportFacts: Send + Sync {
    /// The calls of `uuids` the ledger knows, by uuid.
    async fn export_calls(&self, uuids: &[CallUuid]) -> Result<Vec<ExportCall>, LedgerError>;

    /// Every hold that kept (or keeps) one of `uuids`, by call then placement.
    async fn hold_events(&self, uuids: &[CallUuid]) -> Result<Vec<HoldEvent>, LedgerError>;
}

fn call_from_row(row: &impl Row) -> Result<ExportCall, LedgerError> {
    Ok(ExportCall {
        uuid: row.uuid("uuid")?,
        state: row.state("state")?,
        company_code: row.text("company_code")?,
        call_start: row.opt_time("call_start")?,
        billsec: row.opt_int("billsec")?,
        raw_json: row.text("raw_json")?,
        object_key: row.opt_text("object_key")?,
        object_version: row.opt_text("object_version")?,
        size_bytes: row.opt_int("size_bytes")?,
        sha256: row.opt_text("sha256")?,
        archived_at: row.opt_time("archived_at")?,
        manifest_seq: row.opt_int("manifest_seq")?,
        last_verify_result: row.opt_text("last_verify_result")?,
        last_verified_at: row.opt_time("last_verified_at")?,
    })
}

fn hold_from_row(row: &impl Row) -> Result<HoldEvent, LedgerError> {
    Ok(HoldEvent {
        call_uuid: row.uuid("call_uuid")?,
        hold_id: row.text("hold_id")?,
        reason: row.text("reason")?,
        placed_by: row.text("placed_by")?,
        placed_at: row.time("placed_at")?,
        object_hold: row.text("object_hold")?,
        released_at: row.opt_time("released_at")?,
        released_by: row.opt_text("released_by")?,
        release_reason: row.opt_text("release_reason")?,
    })
}

/// `uuids` sorted, without repeats, so that chunks' rows come out in uuid order.
fn sorted(uuids: &[CallUuid]) -> Vec<&CallUuid> {
    let mut sorted: Vec<&CallUuid> = uuids.iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
}

#[async_trait]
impl<D: Db> ExportFacts for D {
    async fn export_calls(&self, uuids: &[CallUuid]) -> Result<Vec<ExportCall>, LedgerError> {
        let mut calls = Vec::with_capacity(uuids.len());
        for chunk in sorted(uuids).chunks(CALLS_PER_STATEMENT) {
            let sql = format!(
                "SELECT uuid, state, company_code, call_start, billsec, raw_json, object_key,
                        object_version, size_bytes, sha256, archived_at, manifest_seq,
                        last_verify_result, last_verified_at
                 FROM calls WHERE account = $1 AND uuid IN ({}) ORDER BY uuid",
                params(2, chunk.len())
            );
            let stmt = Stmt::new(sql, "reading the calls to export").bind(self.account());
            for row in self
                .fetch_all(chunk.iter().fold(stmt, |s, u| s.bind(*u)))
                .await?
            {
                calls.push(call_from_row(&row)?);
            }
        }
        Ok(calls)
    }

    async fn hold_events(&self, uuids: &[CallUuid]) -> Result<Vec<HoldEvent>, LedgerError> {
        let mut events = Vec::new();
        for chunk in sorted(uuids).chunks(CALLS_PER_STATEMENT) {
            let sql = format!(
                "SELECT hc.call_uuid, hc.hold_id, h.reason, h.placed_by, h.placed_at,
                        hc.object_hold, hc.released_at, hc.released_by, hc.release_reason
                 FROM held_calls hc JOIN holds h ON h.id = hc.hold_id
                 WHERE hc.account = $1 AND hc.call_uuid IN ({})
                 ORDER BY hc.call_uuid, h.placed_at, hc.hold_id",
                params(2, chunk.len())
            );
            let stmt =
                Stmt::new(sql, "reading the holds of the calls to export").bind(self.account());
            for row in self
                .fetch_all(chunk.iter().fold(stmt, |s, u| s.bind(*u)))
                .await?
            {
                events.push(hold_from_row(&row)?);
            }
        }
        Ok(events)
    }
}
