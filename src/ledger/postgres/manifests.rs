//! PostgreSQL: the manifest chain as the ledger keeps it. Claiming the chain head is one
//! transaction that first takes a transaction-level advisory lock, [`CHAIN_HEAD_LOCK`], so
//! two workers never claim at once (the second waits, at most the busy timeout, and then
//! sees what the first committed); the rest is the SQLite ledger's logic. Writing, renewing
//! and releasing the head check its owner in the row itself and need no lock of their own.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::error::{Ctx, retry_conflicts};
use super::{PgLedger, at, big, entry_from_row};
use crate::domain::{CallUuid, RunId};
use crate::ledger::{
    ArchivedEntry, ChainClaim, LedgerError, ManifestClaim, ManifestKeyFn, ManifestLink,
    ManifestRow, Manifests,
};

/// The advisory lock the chain head is claimed under: the ASCII bytes of `cv-chain` as a
/// big-endian 64-bit integer (7166965761982949742). Advisory locks are shared by everything
/// using the database: nothing else may take this key. (sqlx's migration lock is another
/// 64-bit key, `0x3d32ad9e` times the CRC-32 of the database name.)
pub(super) const CHAIN_HEAD_LOCK: i64 = i64::from_be_bytes(*b"cv-chain");

#[async_trait]
impl Manifests for PgLedger {
    async fn claim_manifest(
        &self,
        owner: &RunId,
        key_for: ManifestKeyFn<'_>,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<ChainClaim, LedgerError> {
        retry_conflicts(|| self.claim_manifest_once(owner, key_for, now, until)).await
    }

    async fn manifest_entries(
        &self,
        seq: i64,
        after: Option<&CallUuid>,
        limit: i64,
    ) -> Result<Vec<ArchivedEntry>, LedgerError> {
        let query = match after {
            None => sqlx::query(
                "SELECT uuid, object_key, size_bytes, sha256, archived_at FROM calls
                 WHERE state = 'archived' AND manifest_seq = $1
                 ORDER BY uuid LIMIT $2",
            )
            .bind(seq)
            .bind(limit.max(0)),
            Some(after) => sqlx::query(
                "SELECT uuid, object_key, size_bytes, sha256, archived_at FROM calls
                 WHERE state = 'archived' AND manifest_seq = $1 AND uuid > $3
                 ORDER BY uuid LIMIT $2",
            )
            .bind(seq)
            .bind(limit.max(0))
            .bind(after.as_str()),
        };
        let rows = query
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
        .bind(big(size))
        .bind(at(now))
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
        .bind(at(until))
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
        const CONTEXT: &str = "listing manifests";
        let rows = sqlx::query(
            "SELECT seq, object_key, state, sha256, entries FROM manifests ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await
        .ctx(CONTEXT)?;
        rows.iter()
            .map(|row| {
                Ok(ManifestRow {
                    seq: row.try_get("seq").ctx(CONTEXT)?,
                    key: row.try_get("object_key").ctx(CONTEXT)?,
                    written: row.try_get::<String, _>("state").ctx(CONTEXT)? == "written",
                    sha256: row.try_get("sha256").ctx(CONTEXT)?,
                    entries: row.try_get("entries").ctx(CONTEXT)?,
                })
            })
            .collect()
    }

    async fn unlisted_archived(&self) -> Result<i64, LedgerError> {
        sqlx::query_scalar(
            "SELECT count(*) FROM calls WHERE state = 'archived' AND manifest_seq IS NULL",
        )
        .fetch_one(&self.pool)
        .await
        .ctx("counting records in no manifest")
    }
}

impl PgLedger {
    async fn claim_manifest_once(
        &self,
        owner: &RunId,
        key_for: ManifestKeyFn<'_>,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<ChainClaim, LedgerError> {
        const CONTEXT: &str = "claiming the chain head";
        let (now, until) = (at(now), at(until));
        let mut tx = self.pool.begin().await.ctx("starting a manifest claim")?;
        // Held until this transaction ends; every statement after it sees what the
        // previous holder committed (read committed takes a snapshot per statement).
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CHAIN_HEAD_LOCK)
            .execute(&mut *tx)
            .await
            .ctx("waiting for the chain head lock")?;
        let writing = sqlx::query(
            "SELECT seq, object_key, run_id, owner, claimed_until, previous_key, previous_sha256,
                    entries, created_at
             FROM manifests WHERE state = 'writing' ORDER BY seq LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await
        .ctx("reading the chain head")?;
        if let Some(row) = writing {
            let seq: i64 = row.try_get("seq").ctx(CONTEXT)?;
            let claimed_until: Option<DateTime<Utc>> = row.try_get("claimed_until").ctx(CONTEXT)?;
            if claimed_until.is_some_and(|t| t >= now) {
                tx.rollback().await.ctx(CONTEXT)?;
                return Ok(ChainClaim::Busy {
                    seq,
                    owner: row
                        .try_get::<Option<String>, _>("owner")
                        .ctx(CONTEXT)?
                        .map(RunId::from),
                });
            }
            sqlx::query("UPDATE manifests SET owner = $1, claimed_until = $2 WHERE seq = $3")
                .bind(owner.as_str())
                .bind(until)
                .bind(seq)
                .execute(&mut *tx)
                .await
                .ctx("taking over the chain head")?;
            let claim = taken_over(&row, seq)?;
            tx.commit().await.ctx("committing a manifest claim")?;
            return Ok(ChainClaim::Claimed(claim));
        }
        let head = sqlx::query(
            "SELECT seq, object_key, sha256 FROM manifests WHERE state = 'written'
             ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await
        .ctx("reading the chain head")?;
        let previous = head
            .map(|row| {
                Ok::<_, LedgerError>(ManifestLink {
                    seq: row.try_get("seq").ctx(CONTEXT)?,
                    key: row.try_get("object_key").ctx(CONTEXT)?,
                    sha256: row
                        .try_get::<Option<String>, _>("sha256")
                        .ctx(CONTEXT)?
                        .ok_or_else(|| {
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
        .bind(until)
        .bind(previous.as_ref().map(|p| p.key.as_str()))
        .bind(previous.as_ref().map(|p| p.sha256.as_str()))
        .bind(now)
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
            .bind(big(entries))
            .bind(seq)
            .execute(&mut *tx)
            .await
            .ctx("counting a manifest's entries")?;
        tx.commit().await.ctx("committing a manifest claim")?;
        Ok(ChainClaim::Claimed(ManifestClaim {
            seq,
            key,
            run_id: owner.clone(),
            created_at: now,
            previous,
            entries,
            taken_over: false,
        }))
    }
}

/// The claim on a head left unwritten by another run, as that run first claimed it.
fn taken_over(row: &PgRow, seq: i64) -> Result<ManifestClaim, LedgerError> {
    const CONTEXT: &str = "reading the chain head";
    let previous = match (
        row.try_get::<Option<String>, _>("previous_key")
            .ctx(CONTEXT)?,
        row.try_get::<Option<String>, _>("previous_sha256")
            .ctx(CONTEXT)?,
    ) {
        (Some(key), Some(sha256)) => Some(ManifestLink {
            seq: seq - 1,
            key,
            sha256,
        }),
        _ => None,
    };
    Ok(ManifestClaim {
        seq,
        key: row.try_get("object_key").ctx(CONTEXT)?,
        run_id: RunId::from(row.try_get::<String, _>("run_id").ctx(CONTEXT)?),
        created_at: row.try_get("created_at").ctx(CONTEXT)?,
        previous,
        entries: u64::try_from(row.try_get::<i64, _>("entries").ctx(CONTEXT)?).unwrap_or(0),
        taken_over: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_head_lock_key_is_fixed() {
        assert_eq!(CHAIN_HEAD_LOCK, 7_166_965_761_982_949_742);
    }
}
