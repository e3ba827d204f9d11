//! A callback whose call sync already stored (a bill-only row) takes that row over: the row
//! gets the callback's uuid and record and keeps its state, attempts and object
//! ([`super::sync::take_over`]). While a pass holds the bill's row (`in_progress`), the row
//! is not renamed under it: the pass would store the recording under the bill's key and then
//! find no row of that uuid to settle, leaving the call `in_progress` with an object the
//! ledger no longer names, to be archived again under the callback's key once the lease
//! lapsed. Instead the callback waits here, in `call_takeovers`, and is applied once no pass
//! holds the row: at the end of every pass, and before every sync. Each call then has one row
//! and one recording object whatever the order of callback, sync and pass.

use chrono::{DateTime, Utc};

use super::LedgerError;
use super::sql::{Row, Stmt, Tx, pick, record_from_row};
use super::sync::{StoreCalls, take_over};
use crate::domain::CallRecord;

/// Keeps `rec` to take over the bill's row `from` once no pass holds it; a later callback
/// for the same row replaces an earlier one (the provider repeats callbacks).
pub(crate) async fn defer<T: Tx>(
    tx: &mut T,
    from: &str,
    rec: &CallRecord,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    tx.execute(
        Stmt::new(
            "INSERT INTO call_takeovers (from_uuid, uuid, company_code, record_file, call_start,
                                         billsec, raw_json, bill_id, notes, origin, imported_at,
                                         account)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'callback', $10, $11)
             ON CONFLICT (account, from_uuid) DO UPDATE SET
                 uuid = excluded.uuid, company_code = excluded.company_code,
                 record_file = excluded.record_file, call_start = excluded.call_start,
                 billsec = excluded.billsec, raw_json = excluded.raw_json,
                 bill_id = excluded.bill_id, notes = excluded.notes,
                 imported_at = excluded.imported_at",
            "keeping a callback for the call a pass holds",
        )
        .bind(from)
        .bind(&rec.uuid)
        .bind(rec.company_code.as_str())
        .bind(rec.record_file.trim())
        .bind(rec.call_start)
        .bind(rec.billsec)
        .bind(rec.raw_json.as_str())
        .bind(rec.bill_id.as_deref())
        .bind(rec.notes.as_deref())
        .bind(now)
        .bind(tx.account().to_owned()),
    )
    .await?;
    Ok(())
}

/// The kept callbacks whose bill row no pass holds now: (the bill row's uuid, the callback).
const READY: &str = "SELECT t.from_uuid, t.uuid, t.company_code, t.record_file, t.call_start,
            t.billsec, t.raw_json, t.bill_id, t.notes, t.origin, t.imported_at
     FROM call_takeovers AS t
     JOIN calls AS c ON c.account = t.account AND c.uuid = t.from_uuid
     WHERE t.account = $1 AND c.state <> 'in_progress'
     ORDER BY t.from_uuid";

/// The bill row's state, locked against claims on PostgreSQL (a claim skips locked rows).
const STATE_SQLITE: &str = "SELECT state FROM calls WHERE account = $2 AND uuid = $1";
const STATE_POSTGRES: &str = "SELECT state FROM calls WHERE account = $2 AND uuid = $1 FOR UPDATE";

/// Whether a pass holds the call `uuid` (or it is gone); on PostgreSQL the row is locked
/// from here to the commit (a claim skips locked rows), so none can claim it in between.
/// A no-op update locks it on both engines without a dialect's `FOR UPDATE`.
pub(crate) async fn held<T: Tx>(tx: &mut T, uuid: &str) -> Result<bool, LedgerError> {
    let account = tx.account().to_owned();
    let row = tx
        .fetch_optional(
            Stmt::new(
                "UPDATE calls SET state = state WHERE account = $2 AND uuid = $1 RETURNING state",
                "locking a call sync found",
            )
            .bind(uuid)
            .bind(account),
        )
        .await?;
    Ok(row.is_none_or(|r| r.text("state").is_ok_and(|s| s == "in_progress")))
}

/// Applies every kept callback whose bill row no pass holds; how many it applied. Costs one
/// indexed read when none is kept.
pub(crate) async fn apply<D: StoreCalls>(db: &D, now: DateTime<Utc>) -> Result<u64, LedgerError> {
    let rows = db
        .fetch_all(
            Stmt::new(READY, "finding callbacks kept for calls a pass held").bind(db.account()),
        )
        .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut ready = Vec::with_capacity(rows.len());
    for row in &rows {
        ready.push((row.text("from_uuid")?, record_from_row(row)?));
    }
    let records: Vec<&CallRecord> = ready.iter().map(|(_, rec)| rec).collect();
    let mut tx = db.begin_storing(&records).await?;
    let mut applied = 0;
    for (from, rec) in &ready {
        let state = tx
            .fetch_optional(
                Stmt::new(
                    pick(db.dialect(), STATE_SQLITE, STATE_POSTGRES),
                    "locking a call sync found",
                )
                .bind(from.as_str())
                .bind(db.account()),
            )
            .await?;
        // Claimed again since (a retry): wait for that pass to end too.
        if state.is_none_or(|s| s.text("state").is_ok_and(|s| s == "in_progress")) {
            continue;
        }
        take_over(&mut tx, from, rec, now).await?;
        tx.execute(
            Stmt::new(
                "DELETE FROM call_takeovers WHERE account = $2 AND from_uuid = $1",
                "applying a kept callback",
            )
            .bind(from.as_str())
            .bind(db.account()),
        )
        .await?;
        applied += 1;
    }
    tx.commit().await?;
    Ok(applied)
}
