//! PostgreSQL: legal holds and erasure tombstones (see `ledger::holds`). The erasure is
//! recorded under the chain head's advisory lock with the call's row locked, so neither a
//! manifest claim nor another erasure slips between its checks and its writes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::error::{Ctx, retry_conflicts};
use super::manifests::CHAIN_HEAD_LOCK;
use super::{PgLedger, at, big, parse_state, parse_uuid};
use crate::domain::{CallUuid, RecordState};
use crate::ledger::{
    ArchivedEntry, CallFacts, EraseRecorded, HoldId, HoldSummary, Holds, LedgerError, NewHold,
    ObjectHold, Released, Tombstone,
};

macro_rules! tombstone_columns {
    () => {
        "call_uuid, object_key, sidecar_key, sha256, size_bytes, archived_at, erased_at, reason, erased_by, versions_deleted, manifest_seq"
    };
}

/// The personal fields of an erased call blanked ($1 now, $2 uuid); the SQLite backend's
/// `BLANK_ERASED` says what is kept and why.
const BLANK_ERASED: &str =
    "UPDATE calls SET state = 'erased', raw_json = '{}', record_file = '', bill_id = NULL,
            notes = NULL, last_error = NULL, last_error_code = NULL, media_note = NULL,
            lease_owner = NULL, lease_until = NULL, updated_at = $1
     WHERE uuid = $2";

#[async_trait]
impl Holds for PgLedger {
    async fn call_facts(&self, uuids: &[CallUuid]) -> Result<Vec<CallFacts>, LedgerError> {
        let list: Vec<&str> = uuids.iter().map(CallUuid::as_str).collect();
        let rows = sqlx::query(
            "SELECT c.uuid, c.state, c.company_code, c.call_start, c.raw_json, c.object_key,
                    c.size_bytes, c.sha256, c.archived_at, c.manifest_seq,
                    m.state AS manifest_state,
                    (SELECT string_agg(h.hold_id, ' ') FROM held_calls h
                     WHERE h.call_uuid = c.uuid AND h.released_at IS NULL) AS holds
             FROM calls c LEFT JOIN manifests m ON m.seq = c.manifest_seq
             WHERE c.uuid = ANY($1)
             ORDER BY c.uuid",
        )
        .bind(&list)
        .fetch_all(&self.pool)
        .await
        .ctx("reading chosen calls")?;
        rows.iter().map(facts_from_row).collect()
    }

    async fn create_hold(&self, hold: &NewHold<'_>) -> Result<(), LedgerError> {
        sqlx::query(
            "INSERT INTO holds (id, reason, placed_by, placed_at, selection) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hold.id.as_str())
        .bind(hold.reason)
        .bind(hold.placed_by)
        .bind(at(hold.placed_at))
        .bind(hold.selection.to_string())
        .execute(&self.pool)
        .await
        .ctx("recording a hold")?;
        Ok(())
    }

    async fn add_held_calls(
        &self,
        hold: &HoldId,
        calls: &[(CallUuid, ObjectHold)],
    ) -> Result<(), LedgerError> {
        let ids: Vec<String> = calls.iter().map(|(u, _)| format!("{hold}:{u}")).collect();
        let uuids: Vec<&str> = calls.iter().map(|(u, _)| u.as_str()).collect();
        let object_holds: Vec<&str> = calls.iter().map(|(_, h)| h.as_str()).collect();
        sqlx::query(
            "INSERT INTO held_calls (id, hold_id, call_uuid, object_hold)
             SELECT id, $1, call_uuid, object_hold
             FROM unnest($2::text[], $3::text[], $4::text[]) AS t (id, call_uuid, object_hold)
             ON CONFLICT (hold_id, call_uuid) DO NOTHING",
        )
        .bind(hold.as_str())
        .bind(&ids)
        .bind(&uuids)
        .bind(&object_holds)
        .execute(&self.pool)
        .await
        .ctx("recording held calls")?;
        Ok(())
    }

    async fn release_calls(
        &self,
        calls: &[CallUuid],
        hold: Option<&HoldId>,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Released>, LedgerError> {
        const CONTEXT: &str = "releasing held calls";
        let uuids: Vec<&str> = calls.iter().map(CallUuid::as_str).collect();
        retry_conflicts(|| async {
            let mut tx = self.pool.begin().await.ctx(CONTEXT)?;
            let rows = sqlx::query(
                "UPDATE held_calls SET released_at = $1, released_by = $2, release_reason = $3
                 WHERE call_uuid = ANY($4) AND released_at IS NULL
                   AND ($5::text IS NULL OR hold_id = $5)
                 RETURNING call_uuid, hold_id",
            )
            .bind(at(now))
            .bind(by)
            .bind(reason)
            .bind(&uuids)
            .bind(hold.map(HoldId::as_str))
            .fetch_all(&mut *tx)
            .await
            .ctx(CONTEXT)?;
            let still: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT call_uuid FROM held_calls
                 WHERE call_uuid = ANY($1) AND released_at IS NULL",
            )
            .bind(&uuids)
            .fetch_all(&mut *tx)
            .await
            .ctx(CONTEXT)?;
            tx.commit().await.ctx(CONTEXT)?;
            let mut released = rows
                .iter()
                .map(|row| {
                    let uuid: String = row.try_get("call_uuid").ctx(CONTEXT)?;
                    let h: String = row.try_get("hold_id").ctx(CONTEXT)?;
                    Ok(Released {
                        still_held: still.contains(&uuid),
                        uuid: parse_uuid(&uuid)?,
                        hold: hold_id(&h)?,
                    })
                })
                .collect::<Result<Vec<_>, LedgerError>>()?;
            released.sort_by(|a, b| (&a.uuid, &a.hold).cmp(&(&b.uuid, &b.hold)));
            Ok(released)
        })
        .await
    }

    async fn holds(&self, include_released: bool) -> Result<Vec<HoldSummary>, LedgerError> {
        const CONTEXT: &str = "listing holds";
        let rows = sqlx::query(
            "SELECT h.id, h.reason, h.placed_by, h.placed_at, h.selection,
                    count(hc.id) FILTER (WHERE hc.released_at IS NULL) AS held,
                    count(hc.id) FILTER (WHERE hc.released_at IS NOT NULL) AS released,
                    count(hc.id) FILTER (WHERE hc.released_at IS NULL AND hc.object_hold <> 'set') AS ledger_only
             FROM holds h LEFT JOIN held_calls hc ON hc.hold_id = h.id
             GROUP BY h.id, h.reason, h.placed_by, h.placed_at, h.selection
             HAVING $1 OR count(hc.id) FILTER (WHERE hc.released_at IS NULL) > 0
             ORDER BY h.placed_at DESC, h.id DESC",
        )
        .bind(include_released)
        .fetch_all(&self.pool)
        .await
        .ctx(CONTEXT)?;
        rows.iter()
            .map(|row| {
                let selection: String = row.try_get("selection").ctx(CONTEXT)?;
                Ok(HoldSummary {
                    id: hold_id(&row.try_get::<String, _>("id").ctx(CONTEXT)?)?,
                    reason: row.try_get("reason").ctx(CONTEXT)?,
                    placed_by: row.try_get("placed_by").ctx(CONTEXT)?,
                    placed_at: row.try_get("placed_at").ctx(CONTEXT)?,
                    selection: serde_json::from_str(&selection)
                        .unwrap_or(serde_json::Value::String(selection)),
                    calls_held: row.try_get("held").ctx(CONTEXT)?,
                    calls_released: row.try_get("released").ctx(CONTEXT)?,
                    ledger_only: row.try_get("ledger_only").ctx(CONTEXT)?,
                })
            })
            .collect()
    }

    async fn record_erasure(&self, t: &Tombstone) -> Result<EraseRecorded, LedgerError> {
        retry_conflicts(|| self.record_erasure_once(t)).await
    }

    async fn tombstone(&self, uuid: &CallUuid) -> Result<Option<Tombstone>, LedgerError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            tombstone_columns!(),
            " FROM tombstones WHERE call_uuid = $1"
        ))
        .bind(uuid.as_str())
        .fetch_optional(&self.pool)
        .await
        .ctx("reading a tombstone")?;
        row.as_ref().map(tombstone_from_row).transpose()
    }

    async fn manifest_erasures(
        &self,
        seq: i64,
        after: Option<&CallUuid>,
        limit: i64,
    ) -> Result<Vec<Tombstone>, LedgerError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            tombstone_columns!(),
            " FROM tombstones
             WHERE manifest_seq = $1 AND ($2::text IS NULL OR call_uuid > $2)
             ORDER BY call_uuid LIMIT $3"
        ))
        .bind(seq)
        .bind(after.map(CallUuid::as_str))
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await
        .ctx("listing a manifest's erasures")?;
        rows.iter().map(tombstone_from_row).collect()
    }

    async fn erasure_counts(&self) -> Result<(i64, i64), LedgerError> {
        const CONTEXT: &str = "counting erasures";
        let row = sqlx::query(
            "SELECT count(*) AS erased, count(*) FILTER (WHERE manifest_seq IS NULL) AS unlisted
             FROM tombstones",
        )
        .fetch_one(&self.pool)
        .await
        .ctx(CONTEXT)?;
        Ok((
            row.try_get("erased").ctx(CONTEXT)?,
            row.try_get("unlisted").ctx(CONTEXT)?,
        ))
    }
}

impl PgLedger {
    async fn record_erasure_once(&self, t: &Tombstone) -> Result<EraseRecorded, LedgerError> {
        const CONTEXT: &str = "recording an erasure";
        let mut tx = self.pool.begin().await.ctx(CONTEXT)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CHAIN_HEAD_LOCK)
            .execute(&mut *tx)
            .await
            .ctx("waiting for the chain head lock")?;
        let row = sqlx::query(
            "SELECT c.state, c.manifest_seq,
                    (SELECT m.state FROM manifests m WHERE m.seq = c.manifest_seq) AS manifest_state,
                    (SELECT string_agg(h.hold_id, ' ') FROM held_calls h
                     WHERE h.call_uuid = c.uuid AND h.released_at IS NULL) AS holds
             FROM calls c WHERE c.uuid = $1 FOR UPDATE",
        )
        .bind(t.uuid.as_str())
        .fetch_optional(&mut *tx)
        .await
        .ctx(CONTEXT)?;
        let Some(row) = row else {
            return Ok(EraseRecorded::NotArchived { state: None });
        };
        let state = parse_state(&row.try_get::<String, _>("state").ctx(CONTEXT)?)?;
        if state != RecordState::Archived {
            return Ok(EraseRecorded::NotArchived { state: Some(state) });
        }
        let holds = hold_list(row.try_get("holds").ctx(CONTEXT)?)?;
        if !holds.is_empty() {
            return Ok(EraseRecorded::OnHold { holds });
        }
        let manifest_state: Option<String> = row.try_get("manifest_state").ctx(CONTEXT)?;
        if manifest_state.as_deref() == Some("writing") {
            return Ok(EraseRecorded::ManifestBeingWritten {
                seq: row
                    .try_get::<Option<i64>, _>("manifest_seq")
                    .ctx(CONTEXT)?
                    .unwrap_or_default(),
            });
        }
        let now = at(t.erased_at);
        sqlx::query(concat!(
            "INSERT INTO tombstones (",
            tombstone_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL)"
        ))
        .bind(t.uuid.as_str())
        .bind(&t.key)
        .bind(&t.sidecar_key)
        .bind(&t.sha256)
        .bind(big(t.size))
        .bind(t.archived_at.map(at))
        .bind(now)
        .bind(&t.reason)
        .bind(&t.erased_by)
        .bind(big(t.versions_deleted))
        .execute(&mut *tx)
        .await
        .ctx("writing a tombstone")?;
        sqlx::query(BLANK_ERASED)
            .bind(now)
            .bind(t.uuid.as_str())
            .execute(&mut *tx)
            .await
            .ctx("blanking an erased call")?;
        tx.commit().await.ctx(CONTEXT)?;
        Ok(EraseRecorded::Erased)
    }
}

fn hold_id(raw: &str) -> Result<HoldId, LedgerError> {
    HoldId::parse(raw).ok_or_else(|| LedgerError::Corrupt(format!("hold id {raw:?}")))
}

fn hold_list(raw: Option<String>) -> Result<Vec<HoldId>, LedgerError> {
    let mut holds = raw
        .unwrap_or_default()
        .split_whitespace()
        .map(hold_id)
        .collect::<Result<Vec<_>, _>>()?;
    holds.sort();
    Ok(holds)
}

fn facts_from_row(row: &PgRow) -> Result<CallFacts, LedgerError> {
    const CONTEXT: &str = "reading a selected call";
    let uuid = parse_uuid(&row.try_get::<String, _>("uuid").ctx(CONTEXT)?)?;
    let state = parse_state(&row.try_get::<String, _>("state").ctx(CONTEXT)?)?;
    let key: Option<String> = row.try_get("object_key").ctx(CONTEXT)?;
    let size: Option<i64> = row.try_get("size_bytes").ctx(CONTEXT)?;
    let sha256: Option<String> = row.try_get("sha256").ctx(CONTEXT)?;
    let archived_at: Option<DateTime<Utc>> = row.try_get("archived_at").ctx(CONTEXT)?;
    let object = match (key, size, sha256, archived_at) {
        (Some(key), Some(size), Some(sha256), Some(archived_at))
            if state == RecordState::Archived =>
        {
            Some(ArchivedEntry {
                uuid: uuid.clone(),
                key,
                size: u64::try_from(size).unwrap_or(0),
                sha256,
                archived_at,
            })
        }
        _ => None,
    };
    let manifest_state: Option<String> = row.try_get("manifest_state").ctx(CONTEXT)?;
    Ok(CallFacts {
        state,
        company_code: row.try_get("company_code").ctx(CONTEXT)?,
        call_start: row.try_get("call_start").ctx(CONTEXT)?,
        raw_json: row.try_get("raw_json").ctx(CONTEXT)?,
        object,
        holds: hold_list(row.try_get("holds").ctx(CONTEXT)?)?,
        manifest_seq: row.try_get("manifest_seq").ctx(CONTEXT)?,
        manifest_written: manifest_state.as_deref() == Some("written"),
        uuid,
    })
}

fn tombstone_from_row(row: &PgRow) -> Result<Tombstone, LedgerError> {
    const CONTEXT: &str = "reading a tombstone";
    Ok(Tombstone {
        uuid: parse_uuid(&row.try_get::<String, _>("call_uuid").ctx(CONTEXT)?)?,
        key: row.try_get("object_key").ctx(CONTEXT)?,
        sidecar_key: row.try_get("sidecar_key").ctx(CONTEXT)?,
        sha256: row.try_get("sha256").ctx(CONTEXT)?,
        size: u64::try_from(row.try_get::<i64, _>("size_bytes").ctx(CONTEXT)?).unwrap_or(0),
        archived_at: row.try_get("archived_at").ctx(CONTEXT)?,
        erased_at: row.try_get("erased_at").ctx(CONTEXT)?,
        reason: row.try_get("reason").ctx(CONTEXT)?,
        erased_by: row.try_get("erased_by").ctx(CONTEXT)?,
        versions_deleted: u64::try_from(row.try_get::<i64, _>("versions_deleted").ctx(CONTEXT)?)
            .unwrap_or(0),
        manifest_seq: row.try_get("manifest_seq").ctx(CONTEXT)?,
    })
}
