//! SQLite: legal holds and erasure tombstones (see `ledger::holds`). The erasure is recorded
//! under the write lock taken up front, so a hold or a manifest claim cannot slip between
//! its checks and its writes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;

use super::{QueryContext, SqliteLedger, col, time_col, uuid_col};
use crate::domain::{CallUuid, RecordState};
use crate::ledger::{
    ArchivedEntry, CallFacts, EraseRecorded, HoldId, HoldSummary, Holds, LedgerError, NewHold,
    ObjectHold, Released, Tombstone,
};
use crate::timefmt::to_ledger;

macro_rules! tombstone_columns {
    () => {
        "call_uuid, object_key, sidecar_key, sha256, size_bytes, archived_at, erased_at, reason, erased_by, versions_deleted, manifest_seq"
    };
}

#[async_trait]
impl Holds for SqliteLedger {
    async fn call_facts(&self, uuids: &[CallUuid]) -> Result<Vec<CallFacts>, LedgerError> {
        let list = serde_json::Value::from(
            uuids
                .iter()
                .map(|u| u.as_str().to_owned())
                .collect::<Vec<_>>(),
        )
        .to_string();
        let rows = sqlx::query(
            "SELECT c.uuid, c.state, c.company_code, c.call_start, c.raw_json, c.object_key,
                    c.size_bytes, c.sha256, c.archived_at, c.manifest_seq,
                    m.state AS manifest_state,
                    (SELECT group_concat(h.hold_id, ' ') FROM held_calls h
                     WHERE h.call_uuid = c.uuid AND h.released_at IS NULL) AS holds
             FROM calls c LEFT JOIN manifests m ON m.seq = c.manifest_seq
             WHERE c.uuid IN (SELECT value FROM json_each($1))
             ORDER BY c.uuid",
        )
        .bind(list)
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
        .bind(to_ledger(hold.placed_at))
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
        let mut tx = self
            .pool
            .begin()
            .await
            .ctx("starting to record held calls")?;
        for (uuid, object_hold) in calls {
            sqlx::query(
                "INSERT INTO held_calls (id, hold_id, call_uuid, object_hold) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (hold_id, call_uuid) DO NOTHING",
            )
            .bind(format!("{hold}:{uuid}"))
            .bind(hold.as_str())
            .bind(uuid.as_str())
            .bind(object_hold.as_str())
            .execute(&mut *tx)
            .await
            .ctx("recording a held call")?;
        }
        tx.commit().await.ctx("committing held calls")?;
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
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .ctx("starting a release")?;
        let mut released = Vec::new();
        for uuid in calls {
            let holds: Vec<String> = sqlx::query_scalar(
                "UPDATE held_calls SET released_at = $1, released_by = $2, release_reason = $3
                 WHERE call_uuid = $4 AND released_at IS NULL AND ($5 IS NULL OR hold_id = $5)
                 RETURNING hold_id",
            )
            .bind(to_ledger(now))
            .bind(by)
            .bind(reason)
            .bind(uuid.as_str())
            .bind(hold.map(HoldId::as_str))
            .fetch_all(&mut *tx)
            .await
            .ctx("releasing a held call")?;
            if holds.is_empty() {
                continue;
            }
            let still: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM held_calls WHERE call_uuid = $1 AND released_at IS NULL",
            )
            .bind(uuid.as_str())
            .fetch_one(&mut *tx)
            .await
            .ctx("counting a call's holds")?;
            for h in holds {
                released.push(Released {
                    uuid: uuid.clone(),
                    hold: hold_id(&h)?,
                    still_held: still > 0,
                });
            }
        }
        tx.commit().await.ctx("committing a release")?;
        Ok(released)
    }

    async fn holds(&self, include_released: bool) -> Result<Vec<HoldSummary>, LedgerError> {
        let rows = sqlx::query(
            "SELECT h.id, h.reason, h.placed_by, h.placed_at, h.selection,
                    COALESCE(SUM(CASE WHEN hc.released_at IS NULL AND hc.id IS NOT NULL THEN 1 ELSE 0 END), 0) AS held,
                    COALESCE(SUM(CASE WHEN hc.released_at IS NOT NULL THEN 1 ELSE 0 END), 0) AS released,
                    COALESCE(SUM(CASE WHEN hc.released_at IS NULL AND hc.object_hold <> 'set' THEN 1 ELSE 0 END), 0) AS ledger_only
             FROM holds h LEFT JOIN held_calls hc ON hc.hold_id = h.id
             GROUP BY h.id, h.reason, h.placed_by, h.placed_at, h.selection
             HAVING $1 OR SUM(CASE WHEN hc.released_at IS NULL AND hc.id IS NOT NULL THEN 1 ELSE 0 END) > 0
             ORDER BY h.placed_at DESC, h.id DESC",
        )
        .bind(include_released)
        .fetch_all(&self.pool)
        .await
        .ctx("listing holds")?;
        rows.iter()
            .map(|row| {
                let selection: String = col(row, "selection")?;
                Ok(HoldSummary {
                    id: hold_id(&col::<String>(row, "id")?)?,
                    reason: col(row, "reason")?,
                    placed_by: col(row, "placed_by")?,
                    placed_at: time_col(row, "placed_at")?
                        .ok_or_else(|| LedgerError::Corrupt("a hold without a time".into()))?,
                    selection: serde_json::from_str(&selection)
                        .unwrap_or(serde_json::Value::String(selection)),
                    calls_held: col(row, "held")?,
                    calls_released: col(row, "released")?,
                    ledger_only: col(row, "ledger_only")?,
                })
            })
            .collect()
    }

    async fn record_erasure(&self, t: &Tombstone) -> Result<EraseRecorded, LedgerError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .ctx("starting an erasure")?;
        let row = sqlx::query(
            "SELECT c.state, c.manifest_seq, m.state AS manifest_state,
                    (SELECT group_concat(h.hold_id, ' ') FROM held_calls h
                     WHERE h.call_uuid = c.uuid AND h.released_at IS NULL) AS holds
             FROM calls c LEFT JOIN manifests m ON m.seq = c.manifest_seq WHERE c.uuid = $1",
        )
        .bind(t.uuid.as_str())
        .fetch_optional(&mut *tx)
        .await
        .ctx("reading a call to erase")?;
        let Some(row) = row else {
            return Ok(EraseRecorded::NotArchived { state: None });
        };
        let state = parse_state(&col::<String>(&row, "state")?)?;
        if state != RecordState::Archived {
            return Ok(EraseRecorded::NotArchived { state: Some(state) });
        }
        let holds = hold_list(col(&row, "holds")?)?;
        if !holds.is_empty() {
            return Ok(EraseRecorded::OnHold { holds });
        }
        if col::<Option<String>>(&row, "manifest_state")?.as_deref() == Some("writing") {
            return Ok(EraseRecorded::ManifestBeingWritten {
                seq: col::<Option<i64>>(&row, "manifest_seq")?.unwrap_or_default(),
            });
        }
        let now = to_ledger(t.erased_at);
        sqlx::query(concat!(
            "INSERT INTO tombstones (",
            tombstone_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL)"
        ))
        .bind(t.uuid.as_str())
        .bind(&t.key)
        .bind(&t.sidecar_key)
        .bind(&t.sha256)
        .bind(i64::try_from(t.size).unwrap_or(i64::MAX))
        .bind(t.archived_at.map(to_ledger))
        .bind(&now)
        .bind(&t.reason)
        .bind(&t.erased_by)
        .bind(i64::try_from(t.versions_deleted).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await
        .ctx("writing a tombstone")?;
        sqlx::query(BLANK_ERASED)
            .bind(&now)
            .bind(t.uuid.as_str())
            .execute(&mut *tx)
            .await
            .ctx("blanking an erased call")?;
        tx.commit().await.ctx("committing an erasure")?;
        Ok(EraseRecorded::Erased)
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
             WHERE manifest_seq = $1 AND ($2 IS NULL OR call_uuid > $2)
             ORDER BY call_uuid LIMIT $3"
        ))
        .bind(seq)
        .bind(after.map(CallUuid::as_str))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .ctx("listing a manifest's erasures")?;
        rows.iter().map(tombstone_from_row).collect()
    }

    async fn erasure_counts(&self) -> Result<(i64, i64), LedgerError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS erased,
                    COALESCE(SUM(CASE WHEN manifest_seq IS NULL THEN 1 ELSE 0 END), 0) AS unlisted
             FROM tombstones",
        )
        .fetch_one(&self.pool)
        .await
        .ctx("counting erasures")?;
        Ok((col(&row, "erased")?, col(&row, "unlisted")?))
    }
}

/// The personal fields of an erased call blanked ($1 now, $2 uuid): the record as received
/// (numbers, names, agent ids), the file name, the provider's bill id, notes and errors that
/// may quote them. Kept: uuid, company, call start and billed seconds (counts and the
/// completeness report), and what was archived (key, size, SHA-256), as the tombstone keeps.
pub(super) const BLANK_ERASED: &str =
    "UPDATE calls SET state = 'erased', raw_json = '{}', record_file = '', bill_id = NULL,
            notes = NULL, last_error = NULL, last_error_code = NULL, media_note = NULL,
            lease_owner = NULL, lease_until = NULL, updated_at = $1
     WHERE uuid = $2";

fn parse_state(s: &str) -> Result<RecordState, LedgerError> {
    RecordState::parse(s).ok_or_else(|| LedgerError::Corrupt(format!("record state {s:?}")))
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

fn facts_from_row(row: &SqliteRow) -> Result<CallFacts, LedgerError> {
    let uuid = uuid_col(row, "uuid")?;
    let state = parse_state(&col::<String>(row, "state")?)?;
    let object = match (
        col::<Option<String>>(row, "object_key")?,
        col::<Option<i64>>(row, "size_bytes")?,
        col::<Option<String>>(row, "sha256")?,
        time_col(row, "archived_at")?,
    ) {
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
    Ok(CallFacts {
        state,
        company_code: col(row, "company_code")?,
        call_start: time_col(row, "call_start")?,
        raw_json: col(row, "raw_json")?,
        object,
        holds: hold_list(col(row, "holds")?)?,
        manifest_seq: col(row, "manifest_seq")?,
        manifest_written: col::<Option<String>>(row, "manifest_state")?.as_deref()
            == Some("written"),
        uuid,
    })
}

fn tombstone_from_row(row: &SqliteRow) -> Result<Tombstone, LedgerError> {
    Ok(Tombstone {
        uuid: uuid_col(row, "call_uuid")?,
        key: col(row, "object_key")?,
        sidecar_key: col(row, "sidecar_key")?,
        sha256: col(row, "sha256")?,
        size: u64::try_from(col::<i64>(row, "size_bytes")?).unwrap_or(0),
        archived_at: time_col(row, "archived_at")?,
        erased_at: time_col(row, "erased_at")?
            .ok_or_else(|| LedgerError::Corrupt("a tombstone without a time".into()))?,
        reason: col(row, "reason")?,
        erased_by: col(row, "erased_by")?,
        versions_deleted: u64::try_from(col::<i64>(row, "versions_deleted")?).unwrap_or(0),
        manifest_seq: col(row, "manifest_seq")?,
    })
}
