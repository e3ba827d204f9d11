//! SQLite: the manifest chain as the ledger keeps it: which archived records are in no manifest
//! yet, who holds the chain head while a manifest is written, and what was written.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;

use super::{QueryContext, SqliteLedger, col, time_col, uuid_col};
use crate::domain::{CallUuid, RunId};
use crate::ledger::{
    ArchivedEntry, ChainClaim, LedgerError, ManifestClaim, ManifestKeyFn, ManifestLink,
    ManifestRow, Manifests,
};
use crate::timefmt::{from_ledger, to_ledger};

#[async_trait]
impl Manifests for SqliteLedger {
    /// One transaction with the write lock taken up front, so two runs never claim at once.
    async fn claim_manifest(
        &self,
        owner: &RunId,
        key_for: ManifestKeyFn<'_>,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<ChainClaim, LedgerError> {
        let now_text = to_ledger(now);
        // Take the write lock now, not on the first write.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .ctx("starting a manifest claim")?;
        let writing = sqlx::query(
            "SELECT seq, object_key, run_id, owner, claimed_until, previous_key, previous_sha256, entries, created_at
             FROM manifests WHERE state = 'writing' ORDER BY seq LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await
        .ctx("reading the chain head")?;
        if let Some(row) = writing {
            let seq: i64 = col(&row, "seq")?;
            let claimed_until: Option<String> = col(&row, "claimed_until")?;
            if claimed_until.is_some_and(|t| t >= now_text) {
                return Ok(ChainClaim::Busy {
                    seq,
                    owner: col::<Option<String>>(&row, "owner")?.map(RunId::from),
                });
            }
            sqlx::query("UPDATE manifests SET owner = $1, claimed_until = $2 WHERE seq = $3")
                .bind(owner.as_str())
                .bind(to_ledger(until))
                .bind(seq)
                .execute(&mut *tx)
                .await
                .ctx("taking over the chain head")?;
            tx.commit().await.ctx("committing a manifest claim")?;
            let previous = match (
                col::<Option<String>>(&row, "previous_key")?,
                col::<Option<String>>(&row, "previous_sha256")?,
            ) {
                (Some(key), Some(sha256)) => Some(ManifestLink {
                    seq: seq - 1,
                    key,
                    sha256,
                }),
                _ => None,
            };
            return Ok(ChainClaim::Claimed(ManifestClaim {
                seq,
                key: col(&row, "object_key")?,
                run_id: RunId::from(col::<String>(&row, "run_id")?),
                created_at: time_col(&row, "created_at")?
                    .ok_or_else(|| LedgerError::Corrupt("a manifest without a time".into()))?,
                previous,
                entries: u64::try_from(col::<i64>(&row, "entries")?).unwrap_or(0),
                taken_over: true,
            }));
        }
        let head = sqlx::query(
            "SELECT seq, object_key, sha256 FROM manifests WHERE state = 'written' ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await
        .ctx("reading the chain head")?;
        let previous = head
            .map(|row| {
                Ok::<_, LedgerError>(ManifestLink {
                    seq: col(&row, "seq")?,
                    key: col(&row, "object_key")?,
                    sha256: col::<Option<String>>(&row, "sha256")?.ok_or_else(|| {
                        LedgerError::Corrupt("a written manifest without SHA-256".into())
                    })?,
                })
            })
            .transpose()?;
        let seq = previous.as_ref().map_or(1, |p| p.seq + 1);
        let key = key_for(seq);
        sqlx::query(
            "INSERT INTO manifests (seq, object_key, state, run_id, owner, claimed_until, previous_key,
                                    previous_sha256, entries, created_at)
             VALUES ($1, $2, 'writing', $3, $3, $4, $5, $6, 0, $7)",
        )
        .bind(seq)
        .bind(&key)
        .bind(owner.as_str())
        .bind(to_ledger(until))
        .bind(previous.as_ref().map(|p| p.key.as_str()))
        .bind(previous.as_ref().map(|p| p.sha256.as_str()))
        .bind(&now_text)
        .execute(&mut *tx)
        .await
        .ctx("claiming the chain head")?;
        let entries = sqlx::query(
            "UPDATE calls SET manifest_seq = $1 WHERE state = 'archived' AND manifest_seq IS NULL",
        )
        .bind(seq)
        .execute(&mut *tx)
        .await
        .ctx("assigning records to a manifest")?
        .rows_affected();
        // Erasures not yet listed go in the same manifest, after its archived records.
        let erasures =
            sqlx::query("UPDATE tombstones SET manifest_seq = $1 WHERE manifest_seq IS NULL")
                .bind(seq)
                .execute(&mut *tx)
                .await
                .ctx("assigning erasures to a manifest")?
                .rows_affected();
        let entries = entries + erasures;
        if entries == 0 {
            tx.rollback().await.ctx("dropping an empty manifest")?;
            return Ok(ChainClaim::NothingNew);
        }
        sqlx::query("UPDATE manifests SET entries = $1 WHERE seq = $2")
            .bind(i64::try_from(entries).unwrap_or(i64::MAX))
            .bind(seq)
            .execute(&mut *tx)
            .await
            .ctx("counting a manifest's entries")?;
        tx.commit().await.ctx("committing a manifest claim")?;
        Ok(ChainClaim::Claimed(ManifestClaim {
            seq,
            key,
            run_id: owner.clone(),
            created_at: from_ledger(&now_text).unwrap_or(now),
            previous,
            entries,
            taken_over: false,
        }))
    }

    async fn manifest_entries(
        &self,
        seq: i64,
        after: Option<&CallUuid>,
        limit: i64,
    ) -> Result<Vec<ArchivedEntry>, LedgerError> {
        let rows = sqlx::query(
            "SELECT uuid, object_key, size_bytes, sha256, archived_at FROM calls
             WHERE manifest_seq = $1 AND state = 'archived' AND ($2 IS NULL OR uuid > $2)
             ORDER BY uuid LIMIT $3",
        )
        .bind(seq)
        .bind(after.map(CallUuid::as_str))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .ctx("listing a manifest's entries")?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn manifest_written(
        &self,
        seq: i64,
        owner: &RunId,
        sha256: &str,
        size: u64,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        Ok(sqlx::query(
            "UPDATE manifests SET state = 'written', sha256 = $1, size_bytes = $2, written_at = $3,
                    owner = NULL, claimed_until = NULL
             WHERE seq = $4 AND owner = $5 AND state = 'writing'",
        )
        .bind(sha256)
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(to_ledger(now))
        .bind(seq)
        .bind(owner.as_str())
        .execute(&self.pool)
        .await
        .ctx("recording a written manifest")?
        .rows_affected()
            == 1)
    }

    async fn renew_manifest(
        &self,
        seq: i64,
        owner: &RunId,
        until: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        sqlx::query(
            "UPDATE manifests SET claimed_until = $1 WHERE seq = $2 AND owner = $3 AND state = 'writing'",
        )
        .bind(to_ledger(until))
        .bind(seq)
        .bind(owner.as_str())
        .execute(&self.pool)
        .await
        .ctx("renewing the chain head")?;
        Ok(())
    }

    async fn release_manifest(&self, seq: i64, owner: &RunId) -> Result<(), LedgerError> {
        sqlx::query(
            "UPDATE manifests SET owner = NULL, claimed_until = NULL
             WHERE seq = $1 AND owner = $2 AND state = 'writing'",
        )
        .bind(seq)
        .bind(owner.as_str())
        .execute(&self.pool)
        .await
        .ctx("releasing the chain head")?;
        Ok(())
    }

    async fn manifests(&self) -> Result<Vec<ManifestRow>, LedgerError> {
        let rows = sqlx::query(
            "SELECT seq, object_key, state, sha256, entries FROM manifests ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await
        .ctx("listing manifests")?;
        rows.iter()
            .map(|row| {
                Ok(ManifestRow {
                    seq: col(row, "seq")?,
                    key: col(row, "object_key")?,
                    written: col::<String>(row, "state")? == "written",
                    sha256: col(row, "sha256")?,
                    entries: col(row, "entries")?,
                })
            })
            .collect()
    }

    async fn unlisted_archived(&self) -> Result<i64, LedgerError> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM calls WHERE state = 'archived' AND manifest_seq IS NULL",
        )
        .fetch_one(&self.pool)
        .await
        .ctx("counting records in no manifest")
    }
}

pub(super) fn entry_from_row(row: &SqliteRow) -> Result<ArchivedEntry, LedgerError> {
    let uuid = uuid_col(row, "uuid")?;
    let corrupt = |what: &str| LedgerError::Corrupt(format!("{what} of archived record {uuid}"));
    Ok(ArchivedEntry {
        key: col::<Option<String>>(row, "object_key")?.ok_or_else(|| corrupt("object key"))?,
        size: col::<Option<i64>>(row, "size_bytes")?
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| corrupt("size"))?,
        sha256: col::<Option<String>>(row, "sha256")?.ok_or_else(|| corrupt("SHA-256"))?,
        archived_at: time_col(row, "archived_at")?.ok_or_else(|| corrupt("archive time"))?,
        uuid,
    })
}
