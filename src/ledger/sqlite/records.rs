//! SQLite: call records coming in (import, upsert by uuid, taking over rows found by sync)
//! and being looked at (one row, due work).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{QueryContext, SqliteLedger, col, record_from_row, sync, time_col, uuid_col};
use crate::domain::{CallRecord, CallUuid, RecordState, RunId};
use crate::ledger::BackendKind;
use crate::ledger::search::{refresh_batch, with_import};
use crate::ledger::{ImportOutcome, LedgerError, LedgerRow, Records};
use crate::timefmt::to_ledger;

#[async_trait]
impl Records for SqliteLedger {
    async fn import(
        &self,
        records: &[CallRecord],
        now: DateTime<Utc>,
    ) -> Result<Vec<ImportOutcome>, LedgerError> {
        let now_text = to_ledger(now);
        // The write lock from the start: the rows read to match a call are the rows written.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .ctx("starting an import")?;
        let mut outcomes = Vec::with_capacity(records.len());
        for rec in records {
            if let Some(bill_row) = sync::bill_row_for(&mut tx, rec).await? {
                sync::take_over(&mut tx, &bill_row, rec, &now_text).await?;
                outcomes.push(ImportOutcome::MatchedBill);
                continue;
            }
            let state = if rec.has_recording() {
                RecordState::Pending
            } else {
                RecordState::NoRecording
            };
            let inserted = sqlx::query(
                "INSERT INTO calls (uuid, company_code, record_file, call_start, billsec, raw_json, state,
                                    next_attempt_at, imported_at, updated_at, bill_id, notes, origin)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8, $9, $10, 'callback')
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
            .bind(rec.bill_id.as_deref())
            .bind(rec.notes.as_deref())
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
        let mut tx = super::SqliteTx(tx);
        refresh_batch(&mut tx, BackendKind::Sqlite, with_import(records.len())).await?;
        tx.0.commit().await.ctx("committing an import")?;
        Ok(outcomes)
    }

    async fn get(&self, uuid: &CallUuid) -> Result<Option<LedgerRow>, LedgerError> {
        let row = sqlx::query(
            "SELECT uuid, company_code, record_file, call_start, billsec, raw_json, bill_id, notes, origin,
                    imported_at, state, attempts, next_attempt_at,
                    lease_owner, object_key, size_bytes, sha256, content_type, etag, archived_at,
                    last_error_code, last_error, manifest_seq, last_verify_result, bill_seen_at
             FROM calls WHERE uuid = $1",
        )
        .bind(uuid.as_str())
        .fetch_optional(&self.pool)
        .await
        .ctx("reading a call record")?;
        let Some(row) = row else { return Ok(None) };
        let state: String = col(&row, "state")?;
        Ok(Some(LedgerRow {
            record: record_from_row(&row)?,
            state: RecordState::parse(&state)
                .ok_or_else(|| LedgerError::Corrupt(format!("state {state:?}")))?,
            attempts: col(&row, "attempts")?,
            next_attempt_at: time_col(&row, "next_attempt_at")?,
            lease_owner: col::<Option<String>>(&row, "lease_owner")?.map(RunId::from),
            object_key: col(&row, "object_key")?,
            size_bytes: col(&row, "size_bytes")?,
            sha256: col(&row, "sha256")?,
            content_type: col(&row, "content_type")?,
            etag: col(&row, "etag")?,
            archived_at: time_col(&row, "archived_at")?,
            last_error_code: col(&row, "last_error_code")?,
            last_error: col(&row, "last_error")?,
            manifest_seq: col(&row, "manifest_seq")?,
            last_verify_result: col(&row, "last_verify_result")?,
            bill_seen_at: time_col(&row, "bill_seen_at")?,
        }))
    }

    async fn uuids_in_state(&self, state: RecordState) -> Result<Vec<CallUuid>, LedgerError> {
        let rows = sqlx::query("SELECT uuid FROM calls WHERE state = $1 ORDER BY call_start, uuid")
            .bind(state.as_str())
            .fetch_all(&self.pool)
            .await
            .ctx("listing records by state")?;
        rows.iter().map(|row| uuid_col(row, "uuid")).collect()
    }
}
