//! PostgreSQL: bills matched to calls, callbacks taking over the rows sync found, the syncs
//! and the completeness report.
//!
//! A receiver and a sync (on any machines) may store the same call at once, one from its
//! callback, one from its bill, under different keys (the bill often has no uuid). Both
//! first take transaction-level advisory locks on what identifies the call besides its
//! uuid (its bill id within the company, its record file name) and on its uuid, in key
//! order, and only then look for its row: whichever comes second sees the first's row and
//! joins it. Deadlock-free (every transaction locks in the same order); a lock wait past
//! `lock_timeout` is a conflict, and the transaction is run again.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::error::{Ctx, retry_conflicts};
use super::{PgLedger, at};
use crate::domain::{CallRecord, RecordState};
use crate::ledger::BackendKind;
use crate::ledger::search::{refresh_batch, with_import};
use crate::ledger::{
    DayCompleteness, ImportOutcome, LedgerError, SyncFigures, SyncId, SyncProgress, SyncRow,
    SyncStatus, Syncs, Table,
};

/// The advisory lock keys of `records`' calls, sorted and without repeats.
fn call_lock_keys<'a>(records: impl IntoIterator<Item = &'a CallRecord>) -> Vec<i64> {
    let key = |kind: &str, value: &str| {
        let digest = Sha256::digest(format!("callvault-call\0{kind}\0{value}").as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(first)
    };
    let mut keys: Vec<i64> = records
        .into_iter()
        .flat_map(|r| {
            let bill = r
                .bill_id
                .as_deref()
                .map(|id| key("bill", &format!("{}\0{id}", r.company_code)));
            let file =
                (!r.record_file.trim().is_empty()).then(|| key("file", r.record_file.trim()));
            [Some(key("uuid", r.uuid.as_str())), bill, file]
        })
        .flatten()
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

async fn lock_calls(conn: &mut PgConnection, keys: &[i64]) -> Result<(), LedgerError> {
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT pg_advisory_xact_lock(k)
         FROM (SELECT k FROM unnest($1::bigint[]) AS u (k) ORDER BY k) AS sorted",
    )
    .bind(keys)
    .execute(&mut *conn)
    .await
    .ctx("locking the calls being stored")?;
    Ok(())
}

/// Locks `records`' calls and lets each take over the row sync found for it (see
/// [`crate::ledger::Records::import`]); returns the uuids that did.
pub(super) async fn take_over_bill_rows(
    conn: &mut PgConnection,
    records: &[&CallRecord],
    now: DateTime<Utc>,
) -> Result<HashSet<String>, LedgerError> {
    const CONTEXT: &str = "matching callbacks to calls found by sync";
    lock_calls(conn, &call_lock_keys(records.iter().copied())).await?;
    let uuids: Vec<&str> = records.iter().map(|r| r.uuid.as_str()).collect();
    let bill_ids: Vec<&str> = records
        .iter()
        .filter_map(|r| r.bill_id.as_deref())
        .collect();
    let files: Vec<&str> = records
        .iter()
        .map(|r| r.record_file.trim())
        .filter(|f| !f.is_empty())
        .collect();
    let candidates = sqlx::query(
        "SELECT uuid, company_code, bill_id, record_file FROM calls
         WHERE origin = 'bill'
           AND (uuid = ANY($1) OR bill_id = ANY($2) OR (record_file <> '' AND record_file = ANY($3)))
         ORDER BY uuid",
    )
    .bind(&uuids)
    .bind(&bill_ids)
    .bind(&files)
    .fetch_all(&mut *conn)
    .await
    .ctx(CONTEXT)?;
    let mut merged = HashSet::new();
    if candidates.is_empty() {
        return Ok(merged);
    }
    struct Candidate {
        uuid: String,
        company: String,
        bill_id: Option<String>,
        file: String,
    }
    let mut candidates = candidates
        .iter()
        .map(|row| {
            Ok(Candidate {
                uuid: row.try_get("uuid").ctx(CONTEXT)?,
                company: row.try_get("company_code").ctx(CONTEXT)?,
                bill_id: row.try_get("bill_id").ctx(CONTEXT)?,
                file: row.try_get("record_file").ctx(CONTEXT)?,
            })
        })
        .collect::<Result<Vec<_>, LedgerError>>()?;
    let existing: HashSet<String> =
        sqlx::query_scalar::<_, String>("SELECT uuid FROM calls WHERE uuid = ANY($1)")
            .bind(&uuids)
            .fetch_all(&mut *conn)
            .await
            .ctx(CONTEXT)?
            .into_iter()
            .collect();
    for rec in records {
        let own = rec.uuid.as_str();
        let pick = if existing.contains(own) {
            candidates.iter().position(|c| c.uuid == own)
        } else {
            let by_bill = rec.bill_id.as_deref().and_then(|id| {
                candidates
                    .iter()
                    .position(|c| c.company == rec.company_code && c.bill_id.as_deref() == Some(id))
            });
            let file = rec.record_file.trim();
            by_bill.or_else(|| {
                candidates
                    .iter()
                    .position(|c| !file.is_empty() && c.file == file)
            })
        };
        if let Some(index) = pick {
            let from = candidates.swap_remove(index).uuid;
            take_over(conn, &from, rec, now).await?;
            merged.insert(own.to_owned());
        }
    }
    Ok(merged)
}

/// Gives the row `from` (found by sync) `rec`'s uuid, raw record and the fields it could
/// read; the row keeps its archival state, attempts and object. The uuid moves by copying
/// the row, moving its attempts and deleting the old one, so the per-state counts (kept by
/// statement triggers joining old and new rows on uuid) stay exact.
async fn take_over(
    conn: &mut PgConnection,
    from: &str,
    rec: &CallRecord,
    now: DateTime<Utc>,
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
    .bind(rec.call_start.map(at))
    .bind(rec.billsec)
    .bind(rec.bill_id.as_deref())
    .bind(rec.notes.as_deref())
    .bind(rec.record_file.trim())
    .bind(at(now))
    .execute(&mut *conn)
    .await
    .ctx(CONTEXT)?;
    sqlx::query(
        "UPDATE calls SET state = 'pending', next_attempt_at = $2, updated_at = $2
         WHERE uuid = $1 AND state = 'no_recording' AND record_file <> ''",
    )
    .bind(rec.uuid.as_str())
    .bind(at(now))
    .execute(&mut *conn)
    .await
    .ctx(CONTEXT)?;
    Ok(())
}

/// Matches one bill and records what it tells (see [`Syncs::import_bills`]).
async fn import_bill(
    conn: &mut PgConnection,
    bill: &CallRecord,
    now: DateTime<Utc>,
) -> Result<ImportOutcome, LedgerError> {
    const CONTEXT: &str = "matching a bill to its call";
    let found: Option<(String, String)> = sqlx::query_as(
        "SELECT uuid, state FROM (
             SELECT uuid, state, 0 AS rank FROM calls WHERE uuid = $1
             UNION ALL
             SELECT uuid, state, 1 AS rank FROM calls
             WHERE $2::text IS NOT NULL AND company_code = $3 AND bill_id = $2
             UNION ALL
             SELECT uuid, state, 2 AS rank FROM calls WHERE $4 <> '' AND record_file = $4
         ) AS matches ORDER BY rank, uuid LIMIT 1",
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
        .bind(bill.call_start.map(at))
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
    .bind(bill.call_start.map(at))
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

fn sync_from_row(row: &PgRow) -> Result<SyncRow, LedgerError> {
    const CONTEXT: &str = "reading a sync";
    let status: String = row.try_get("status").ctx(CONTEXT)?;
    Ok(SyncRow {
        id: SyncId::from_ledger(row.try_get::<String, _>("id").ctx(CONTEXT)?),
        started_at: row.try_get("started_at").ctx(CONTEXT)?,
        finished_at: row.try_get("finished_at").ctx(CONTEXT)?,
        status: SyncStatus::parse(&status)
            .ok_or_else(|| LedgerError::Corrupt(format!("sync status {status:?}")))?,
        since: row.try_get("since").ctx(CONTEXT)?,
        until: row.try_get("until").ctx(CONTEXT)?,
        exit_code: row.try_get("exit_code").ctx(CONTEXT)?,
        progress: SyncProgress {
            covered_until: row.try_get("covered_until").ctx(CONTEXT)?,
            bills: row.try_get("bills").ctx(CONTEXT)?,
            found: row.try_get("found").ctx(CONTEXT)?,
            recordings_added: row.try_get("recordings_added").ctx(CONTEXT)?,
            unreadable: row.try_get("unreadable").ctx(CONTEXT)?,
            requests: row.try_get("requests").ctx(CONTEXT)?,
        },
    })
}

impl PgLedger {
    async fn import_bills_once(
        &self,
        bills: &[CallRecord],
        now: DateTime<Utc>,
    ) -> Result<Vec<ImportOutcome>, LedgerError> {
        let mut tx = self.pool.begin().await.ctx("starting to store bills")?;
        lock_calls(&mut tx, &call_lock_keys(bills)).await?;
        let mut outcomes = Vec::with_capacity(bills.len());
        for bill in bills {
            outcomes.push(import_bill(&mut tx, bill, now).await?);
        }
        let mut tx = super::PgTx(tx);
        refresh_batch(&mut tx, BackendKind::Postgres, with_import(bills.len())).await?;
        tx.0.commit().await.ctx("committing bills")?;
        Ok(outcomes)
    }
}

#[async_trait]
impl Syncs for PgLedger {
    async fn import_bills(
        &self,
        bills: &[CallRecord],
        now: DateTime<Utc>,
    ) -> Result<Vec<ImportOutcome>, LedgerError> {
        if bills.is_empty() {
            return Ok(Vec::new());
        }
        let now = at(now);
        retry_conflicts(|| self.import_bills_once(bills, now)).await
    }

    async fn start_sync(&self, sync: &SyncRow) -> Result<(), LedgerError> {
        sqlx::query(
            "INSERT INTO syncs (id, started_at, status, since, until) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(sync.id.as_str())
        .bind(at(sync.started_at))
        .bind(sync.status.as_str())
        .bind(at(sync.since))
        .bind(at(sync.until))
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
        .bind(p.covered_until.map(at))
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
            .bind(i64::from(exit_code))
            .bind(at(finished_at))
            .execute(&self.pool)
            .await
            .ctx("recording the end of a sync")?;
        Ok(())
    }

    async fn sync_checkpoint(&self) -> Result<Option<DateTime<Utc>>, LedgerError> {
        sqlx::query_scalar("SELECT max(covered_until) FROM syncs")
            .fetch_one(&self.pool)
            .await
            .ctx("reading the sync checkpoint")
    }

    async fn sync_figures(&self) -> Result<SyncFigures, LedgerError> {
        const CONTEXT: &str = "reading the sync figures";
        let last = sqlx::query("SELECT * FROM syncs ORDER BY started_at DESC, id DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .ctx(CONTEXT)?;
        let last_success_at: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT max(finished_at) FROM syncs WHERE status = 'completed'")
                .fetch_one(&self.pool)
                .await
                .ctx(CONTEXT)?;
        let found_by_sync: i64 =
            sqlx::query_scalar("SELECT count(*) FROM calls WHERE origin = 'bill'")
                .fetch_one(&self.pool)
                .await
                .ctx(CONTEXT)?;
        let noted: i64 = sqlx::query_scalar("SELECT count(*) FROM calls WHERE notes IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .ctx(CONTEXT)?;
        Ok(SyncFigures {
            last_sync: last.as_ref().map(sync_from_row).transpose()?,
            last_success_at,
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
        const CONTEXT: &str = "reading the completeness report";
        let rows = sqlx::query(
            "SELECT ((filed AT TIME ZONE 'UTC') + make_interval(secs => $3))::date AS day,
                    company_code,
                    count(*) FILTER (WHERE bill_seen_at IS NOT NULL) AS listed,
                    count(*) AS in_ledger,
                    count(*) FILTER (WHERE state = 'archived') AS archived,
                    count(*) FILTER (WHERE state IN ('pending', 'in_progress')) AS pending,
                    count(*) FILTER (WHERE state IN ('failed', 'expired')) AS failed,
                    count(*) FILTER (WHERE state = 'no_recording') AS no_recording,
                    count(*) FILTER (WHERE origin = 'bill') AS found_by_sync,
                    count(*) FILTER (WHERE state IN ('pending', 'in_progress', 'failed')
                                       AND filed < $4) AS at_risk
             FROM (SELECT COALESCE(call_start, imported_at) AS filed, company_code, state,
                          origin, bill_seen_at
                   FROM calls) AS c
             WHERE filed >= $1 AND filed < $2
             GROUP BY day, company_code ORDER BY day, company_code",
        )
        .bind(at(since))
        .bind(at(until))
        .bind(f64::from(tz.local_minus_utc()))
        .bind(at(risk_line))
        .fetch_all(&self.pool)
        .await
        .ctx(CONTEXT)?;
        rows.iter()
            .map(|row| {
                Ok(DayCompleteness {
                    day: row.try_get::<Option<NaiveDate>, _>("day").ctx(CONTEXT)?,
                    company_code: row.try_get("company_code").ctx(CONTEXT)?,
                    provider_listed: row.try_get("listed").ctx(CONTEXT)?,
                    in_ledger: row.try_get("in_ledger").ctx(CONTEXT)?,
                    archived: row.try_get("archived").ctx(CONTEXT)?,
                    pending: row.try_get("pending").ctx(CONTEXT)?,
                    failed: row.try_get("failed").ctx(CONTEXT)?,
                    no_recording: row.try_get("no_recording").ctx(CONTEXT)?,
                    found_by_sync: row.try_get("found_by_sync").ctx(CONTEXT)?,
                    at_risk: row.try_get("at_risk").ctx(CONTEXT)?,
                })
            })
            .collect()
    }
}
