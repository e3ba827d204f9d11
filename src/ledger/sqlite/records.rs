//! Call records coming in (import, upsert by uuid) and being looked at (one row, due work).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{Ledger, LedgerError, QueryContext, record_from_row};
use crate::domain::{CallRecord, RecordState};
use crate::timefmt::{from_ledger, to_ledger};

/// What importing one record did to the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    New,
    /// The uuid was known; nothing changed.
    Known,
    /// The uuid was known without a recording and now has one: it became pending.
    RecordingAdded,
}

/// Everything the ledger holds for one call, for inspection and tests.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerRow {
    #[serde(skip)]
    pub record: CallRecord,
    pub state: RecordState,
    pub attempts: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
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
}

impl Ledger {
    /// Upserts records by uuid in one transaction. A record already known is left alone,
    /// except that a late recording for a call known as unanswered makes it pending.
    pub async fn import(
        &self,
        records: &[CallRecord],
        now: DateTime<Utc>,
    ) -> Result<Vec<ImportOutcome>, LedgerError> {
        let now_text = to_ledger(now);
        let mut tx = self.pool.begin().await.ctx("starting an import")?;
        let mut outcomes = Vec::with_capacity(records.len());
        for rec in records {
            let state = if rec.has_recording() {
                RecordState::Pending
            } else {
                RecordState::NoRecording
            };
            let inserted = sqlx::query(
                "INSERT INTO calls (uuid, company_code, record_file, call_start, billsec, raw_json, state,
                                    next_attempt_at, imported_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8)
                 ON CONFLICT (uuid) DO NOTHING",
            )
            .bind(rec.uuid.as_str())
            .bind(&rec.company_code)
            .bind(rec.record_file.trim())
            .bind(rec.call_start.map(to_ledger))
            .bind(rec.billsec)
            .bind(&rec.raw_json)
            .bind(state.as_str())
            .bind(&now_text)
            .execute(&mut *tx)
            .await
            .ctx("importing a call record")?
            .rows_affected();
            let outcome = if inserted == 1 {
                ImportOutcome::New
            } else if rec.has_recording() {
                let updated = sqlx::query(
                    "UPDATE calls SET record_file = $1, raw_json = $2, state = 'pending', next_attempt_at = $3,
                            updated_at = $3
                     WHERE uuid = $4 AND state = 'no_recording'",
                )
                .bind(rec.record_file.trim())
                .bind(&rec.raw_json)
                .bind(&now_text)
                .bind(rec.uuid.as_str())
                .execute(&mut *tx)
                .await
                .ctx("adding a late recording")?
                .rows_affected();
                if updated == 1 {
                    ImportOutcome::RecordingAdded
                } else {
                    ImportOutcome::Known
                }
            } else {
                ImportOutcome::Known
            };
            outcomes.push(outcome);
        }
        tx.commit().await.ctx("committing an import")?;
        Ok(outcomes)
    }

    /// One call's full row.
    pub async fn get(&self, uuid: &str) -> Result<Option<LedgerRow>, LedgerError> {
        let row = sqlx::query(
            "SELECT uuid, company_code, record_file, call_start, billsec, raw_json, state, attempts, next_attempt_at,
                    lease_owner, object_key, size_bytes, sha256, content_type, etag, archived_at,
                    last_error_code, last_error, manifest_seq, last_verify_result
             FROM calls WHERE uuid = $1",
        )
        .bind(uuid)
        .fetch_optional(&self.pool)
        .await
        .ctx("reading a call record")?;
        let Some(row) = row else { return Ok(None) };
        let state: String = row.get("state");
        let time = |col: &str| {
            row.get::<Option<String>, _>(col)
                .and_then(|s| from_ledger(&s))
        };
        Ok(Some(LedgerRow {
            record: record_from_row(&row)?,
            state: RecordState::parse(&state)
                .ok_or_else(|| LedgerError::Corrupt(format!("state {state:?}")))?,
            attempts: row.get("attempts"),
            next_attempt_at: time("next_attempt_at"),
            lease_owner: row.get("lease_owner"),
            object_key: row.get("object_key"),
            size_bytes: row.get("size_bytes"),
            sha256: row.get("sha256"),
            content_type: row.get("content_type"),
            etag: row.get("etag"),
            archived_at: time("archived_at"),
            last_error_code: row.get("last_error_code"),
            last_error: row.get("last_error"),
            manifest_seq: row.get("manifest_seq"),
            last_verify_result: row.get("last_verify_result"),
        }))
    }

    /// The uuids of every record in `state`, oldest call first.
    pub async fn uuids_in_state(&self, state: RecordState) -> Result<Vec<String>, LedgerError> {
        sqlx::query_scalar("SELECT uuid FROM calls WHERE state = $1 ORDER BY call_start, uuid")
            .bind(state.as_str())
            .fetch_all(&self.pool)
            .await
            .ctx("listing records by state")
    }
}
