//! SQLite: bills matched to calls, callbacks taking over the rows sync found, the syncs and
//! the completeness report. Every write runs under the write lock taken at `BEGIN
//! IMMEDIATE`, so the rows read to match a call are the rows written: a callback and a sync
//! of the same call, in two processes, still make one row.

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use sqlx::SqliteConnection;
use sqlx::sqlite::SqliteRow;

use super::{QueryContext, SqliteLedger, col, time_col};
use crate::domain::{CallRecord, RecordState};
use crate::ledger::BackendKind;
use crate::ledger::search::{refresh_batch, with_import};
use crate::ledger::{
    DayCompleteness, ImportOutcome, LedgerError, SyncFigures, SyncId, SyncProgress, SyncRow,
    SyncStatus, Syncs, Table,
};
use crate::timefmt::to_ledger;

/// The row known only from the bill list that `rec` (a callback) takes over: the row of its
/// uuid if that one came from a bill; else, while its uuid has no row, a bill-only row with
/// its bill id in its company, else with its record file name.
pub(super) async fn bill_row_for(
    conn: &mut SqliteConnection,
    rec: &CallRecord,
) -> Result<Option<String>, LedgerError> {
    let own: Option<String> = sqlx::query_scalar("SELECT origin FROM calls WHERE uuid = $1")
        .bind(rec.uuid.as_str())
        .fetch_optional(&mut *conn)
        .await
        .ctx("matching a callback to its call")?;
    if let Some(origin) = own {
        return Ok((origin == "bill").then(|| rec.uuid.as_str().to_owned()));
    }
    sqlx::query_scalar(
        "SELECT uuid FROM (
             SELECT uuid, 0 AS rank FROM calls
             WHERE origin = 'bill' AND $1 IS NOT NULL AND company_code = $2 AND bill_id = $1
             UNION ALL
             SELECT uuid, 1 AS rank FROM calls
             WHERE origin = 'bill' AND $3 <> '' AND record_file = $3
         ) ORDER BY rank, uuid LIMIT 1",
    )
    .bind(rec.bill_id.as_deref())
    .bind(&rec.company_code)
    .bind(rec.record_file.trim())
    .fetch_optional(&mut *conn)
    .await
    .ctx("matching a callback to a call found by sync")
}

/// Gives the row `from` (found by sync) `rec`'s uuid, raw record and the fields it could
/// read; the row keeps its archival state, attempts and object, and its recording if it had
/// one. A row without a recording that now has one becomes pending.
pub(super) async fn take_over(
    conn: &mut SqliteConnection,
    from: &str,
    rec: &CallRecord,
    now: &str,
) -> Result<(), LedgerError> {
    const CONTEXT: &str = "joining a callback to the call sync found";
    if from != rec.uuid.as_str() {
        let others = Table::Calls
            .columns()
            .iter()
            .map(|(c, _)| *c)
            .filter(|c| *c != "uuid")
            .collect::<Vec<_>>()
            .join(", ");
        let copy = format!(
            "INSERT INTO calls (uuid, {others}) SELECT $1, {others} FROM calls WHERE uuid = $2"
        );
        sqlx::query(sqlx::AssertSqlSafe(copy))
            .bind(rec.uuid.as_str())
            .bind(from)
            .execute(&mut *conn)
            .await
            .ctx(CONTEXT)?;
        sqlx::query("UPDATE attempts SET call_uuid = $1 WHERE call_uuid = $2")
            .bind(rec.uuid.as_str())
            .bind(from)
            .execute(&mut *conn)
            .await
            .ctx(CONTEXT)?;
        sqlx::query("DELETE FROM calls WHERE uuid = $1")
            .bind(from)
            .execute(&mut *conn)
            .await
            .ctx(CONTEXT)?;
    }
    sqlx::query(
        "UPDATE calls SET raw_json = $2,
                company_code = CASE WHEN $3 <> '' THEN $3 ELSE company_code END,
                call_start = COALESCE($4, call_start), billsec = COALESCE($5, billsec),
                bill_id = COALESCE($6, bill_id), notes = $7, origin = 'callback',
                record_file = CASE WHEN record_file = '' THEN $8 ELSE record_file END,
                updated_at = $9
         WHERE uuid = $1",
    )
    .bind(rec.uuid.as_str())
    .bind(&rec.raw_json)
    .bind(&rec.company_code)
    .bind(rec.call_start.map(to_ledger))
    .bind(rec.billsec)
    .bind(rec.bill_id.as_deref())
    .bind(rec.notes.as_deref())
    .bind(rec.record_file.trim())
    .bind(now)
    .execute(&mut *conn)
    .await
    .ctx(CONTEXT)?;
    sqlx::query(
        "UPDATE calls SET state = 'pending', next_attempt_at = $2, updated_at = $2
         WHERE uuid = $1 AND state = 'no_recording' AND record_file <> ''",
    )
    .bind(rec.uuid.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await
    .ctx(CONTEXT)?;
    Ok(())
}

/// Matches one bill and records what it tells.
async fn import_bill(
    conn: &mut SqliteConnection,
    bill: &CallRecord,
    now: &str,
) -> Result<ImportOutcome, LedgerError> {
    const CONTEXT: &str = "matching a bill to its call";
    let found: Option<(String, String)> = sqlx::query_as(
        "SELECT uuid, state FROM (
             SELECT uuid, state, 0 AS rank FROM calls WHERE uuid = $1
             UNION ALL
             SELECT uuid, state, 1 AS rank FROM calls
             WHERE $2 IS NOT NULL AND company_code = $3 AND bill_id = $2
             UNION ALL
             SELECT uuid, state, 2 AS rank FROM calls WHERE $4 <> '' AND record_file = $4
         ) ORDER BY rank, uuid LIMIT 1",
    )
    .bind(bill.uuid.as_str())
    .bind(bill.bill_id.as_deref())
    .bind(&bill.company_code)
    .bind(bill.record_file.trim())
    .fetch_optional(&mut *conn)
    .await
    .ctx(CONTEXT)?;
    let Some((uuid, state)) = found else {
        let state = if bill.has_recording() {
            RecordState::Pending
        } else {
            RecordState::NoRecording
        };
        sqlx::query(
            "INSERT INTO calls (uuid, company_code, record_file, call_start, billsec, raw_json, state,
                                next_attempt_at, imported_at, updated_at, bill_id, notes, origin,
                                bill_seen_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8, $9, $10, 'bill', $8)",
        )
        .bind(bill.uuid.as_str())
        .bind(&bill.company_code)
        .bind(bill.record_file.trim())
        .bind(bill.call_start.map(to_ledger))
        .bind(bill.billsec)
        .bind(&bill.raw_json)
        .bind(state.as_str())
        .bind(now)
        .bind(bill.bill_id.as_deref())
        .bind(bill.notes.as_deref())
        .execute(&mut *conn)
        .await
        .ctx("storing a call found by sync")?;
        return Ok(ImportOutcome::New);
    };
    // What the callback could not tell is filled in from the bill; nothing it told changes.
    sqlx::query(
        "UPDATE calls SET bill_seen_at = $2, bill_id = COALESCE(bill_id, $3),
                company_code = CASE WHEN company_code = '' THEN $4 ELSE company_code END,
                call_start = COALESCE(call_start, $5), billsec = COALESCE(billsec, $6)
         WHERE uuid = $1",
    )
    .bind(&uuid)
    .bind(now)
    .bind(bill.bill_id.as_deref())
    .bind(&bill.company_code)
    .bind(bill.call_start.map(to_ledger))
    .bind(bill.billsec)
    .execute(&mut *conn)
    .await
    .ctx(CONTEXT)?;
    if state == RecordState::NoRecording.as_str() && bill.has_recording() {
        sqlx::query(
            "UPDATE calls SET record_file = $2, state = 'pending', next_attempt_at = $3, updated_at = $3
             WHERE uuid = $1 AND state = 'no_recording'",
        )
        .bind(&uuid)
        .bind(bill.record_file.trim())
        .bind(now)
        .execute(&mut *conn)
        .await
        .ctx("adding a recording a bill names")?;
        return Ok(ImportOutcome::RecordingAdded);
    }
    Ok(ImportOutcome::Known)
}

fn sync_from_row(row: &SqliteRow) -> Result<SyncRow, LedgerError> {
    let status: String = col(row, "status")?;
    let required = |name: &'static str| {
        time_col(row, name)?.ok_or_else(|| LedgerError::Corrupt(format!("sync without {name}")))
    };
    Ok(SyncRow {
        id: SyncId::from_ledger(col::<String>(row, "id")?),
        started_at: required("started_at")?,
        finished_at: time_col(row, "finished_at")?,
        status: SyncStatus::parse(&status)
            .ok_or_else(|| LedgerError::Corrupt(format!("sync status {status:?}")))?,
        since: required("since")?,
        until: required("until")?,
        exit_code: col(row, "exit_code")?,
        progress: SyncProgress {
            covered_until: time_col(row, "covered_until")?,
            bills: col(row, "bills")?,
            found: col(row, "found")?,
            recordings_added: col(row, "recordings_added")?,
            unreadable: col(row, "unreadable")?,
            requests: col(row, "requests")?,
        },
    })
}

/// SQLite's date modifier for a fixed offset: `+480 minutes`.
fn offset_modifier(tz: FixedOffset) -> String {
    format!("{:+} minutes", tz.local_minus_utc() / 60)
}

#[async_trait]
impl Syncs for SqliteLedger {
    async fn import_bills(
        &self,
        bills: &[CallRecord],
        now: DateTime<Utc>,
    ) -> Result<Vec<ImportOutcome>, LedgerError> {
        let now = to_ledger(now);
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .ctx("starting to store bills")?;
        let mut outcomes = Vec::with_capacity(bills.len());
        for bill in bills {
            outcomes.push(import_bill(&mut tx, bill, &now).await?);
        }
        let mut tx = super::SqliteTx(tx);
        refresh_batch(&mut tx, BackendKind::Sqlite, with_import(bills.len())).await?;
        tx.0.commit().await.ctx("committing bills")?;
        Ok(outcomes)
    }

    async fn start_sync(&self, sync: &SyncRow) -> Result<(), LedgerError> {
        sqlx::query(
            "INSERT INTO syncs (id, started_at, status, since, until) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(sync.id.as_str())
        .bind(to_ledger(sync.started_at))
        .bind(sync.status.as_str())
        .bind(to_ledger(sync.since))
        .bind(to_ledger(sync.until))
        .execute(&self.pool)
        .await
        .ctx("recording the start of a sync")?;
        Ok(())
    }

    async fn record_sync_progress(&self, id: &SyncId, p: &SyncProgress) -> Result<(), LedgerError> {
        sqlx::query(
            "UPDATE syncs SET covered_until = $2, bills = $3, found = $4, recordings_added = $5,
                    unreadable = $6, requests = $7
             WHERE id = $1",
        )
        .bind(id.as_str())
        .bind(p.covered_until.map(to_ledger))
        .bind(p.bills)
        .bind(p.found)
        .bind(p.recordings_added)
        .bind(p.unreadable)
        .bind(p.requests)
        .execute(&self.pool)
        .await
        .ctx("recording a sync's progress")?;
        Ok(())
    }

    async fn finish_sync(
        &self,
        id: &SyncId,
        status: SyncStatus,
        p: &SyncProgress,
        exit_code: i32,
        finished_at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.record_sync_progress(id, p).await?;
        sqlx::query("UPDATE syncs SET status = $2, exit_code = $3, finished_at = $4 WHERE id = $1")
            .bind(id.as_str())
            .bind(status.as_str())
            .bind(exit_code)
            .bind(to_ledger(finished_at))
            .execute(&self.pool)
            .await
            .ctx("recording the end of a sync")?;
        Ok(())
    }

    async fn sync_checkpoint(&self) -> Result<Option<DateTime<Utc>>, LedgerError> {
        let newest: Option<String> = sqlx::query_scalar("SELECT MAX(covered_until) FROM syncs")
            .fetch_one(&self.pool)
            .await
            .ctx("reading the sync checkpoint")?;
        newest
            .map(|s| {
                crate::timefmt::from_ledger(&s)
                    .ok_or_else(|| LedgerError::Corrupt(format!("covered_until {s:?}")))
            })
            .transpose()
    }

    async fn sync_figures(&self) -> Result<SyncFigures, LedgerError> {
        const CONTEXT: &str = "reading the sync figures";
        let last = sqlx::query("SELECT * FROM syncs ORDER BY started_at DESC, id DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .ctx(CONTEXT)?;
        let last_success: Option<String> =
            sqlx::query_scalar("SELECT MAX(finished_at) FROM syncs WHERE status = 'completed'")
                .fetch_one(&self.pool)
                .await
                .ctx(CONTEXT)?;
        let found_by_sync: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM calls WHERE origin = 'bill'")
                .fetch_one(&self.pool)
                .await
                .ctx(CONTEXT)?;
        let noted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM calls WHERE notes IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .ctx(CONTEXT)?;
        Ok(SyncFigures {
            last_sync: last.as_ref().map(sync_from_row).transpose()?,
            last_success_at: last_success.and_then(|s| crate::timefmt::from_ledger(&s)),
            found_by_sync,
            noted,
        })
    }

    async fn completeness(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        tz: FixedOffset,
        risk_line: DateTime<Utc>,
    ) -> Result<Vec<DayCompleteness>, LedgerError> {
        let rows = sqlx::query(
            "SELECT date(filed, $3) AS day, company_code,
                    SUM(CASE WHEN bill_seen_at IS NOT NULL THEN 1 ELSE 0 END) AS listed,
                    COUNT(*) AS in_ledger,
                    SUM(CASE WHEN state = 'archived' THEN 1 ELSE 0 END) AS archived,
                    SUM(CASE WHEN state IN ('pending', 'in_progress') THEN 1 ELSE 0 END) AS pending,
                    SUM(CASE WHEN state IN ('failed', 'expired') THEN 1 ELSE 0 END) AS failed,
                    SUM(CASE WHEN state = 'no_recording' THEN 1 ELSE 0 END) AS no_recording,
                    SUM(CASE WHEN origin = 'bill' THEN 1 ELSE 0 END) AS found_by_sync,
                    SUM(CASE WHEN state IN ('pending', 'in_progress', 'failed') AND filed < $4
                             THEN 1 ELSE 0 END) AS at_risk
             FROM (SELECT COALESCE(call_start, imported_at) AS filed, * FROM calls)
             WHERE filed >= $1 AND filed < $2
             GROUP BY day, company_code ORDER BY day, company_code",
        )
        .bind(to_ledger(since))
        .bind(to_ledger(until))
        .bind(offset_modifier(tz))
        .bind(to_ledger(risk_line))
        .fetch_all(&self.pool)
        .await
        .ctx("reading the completeness report")?;
        rows.iter()
            .map(|row| {
                let day: Option<String> = col(row, "day")?;
                Ok(DayCompleteness {
                    day: day.and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok()),
                    company_code: col(row, "company_code")?,
                    provider_listed: col(row, "listed")?,
                    in_ledger: col(row, "in_ledger")?,
                    archived: col(row, "archived")?,
                    pending: col(row, "pending")?,
                    failed: col(row, "failed")?,
                    no_recording: col(row, "no_recording")?,
                    found_by_sync: col(row, "found_by_sync")?,
                    at_risk: col(row, "at_risk")?,
                })
            })
            .collect()
    }
}
