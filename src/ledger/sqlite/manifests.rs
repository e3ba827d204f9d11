//! The manifest chain as the ledger keeps it: which archived records are in no manifest
//! yet, who holds the chain head while a manifest is written, and what was written.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{Ledger, LedgerError, QueryContext};
use crate::timefmt::{from_ledger, to_ledger};

/// One archived object as a manifest (and `verify`) lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchivedEntry {
    pub uuid: String,
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub archived_at: DateTime<Utc>,
}

/// The manifest a new one names as its predecessor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestLink {
    pub seq: i64,
    pub key: String,
    pub sha256: String,
}

/// The chain head, claimed by one run to be written.
#[derive(Debug, Clone)]
pub struct ManifestClaim {
    pub seq: i64,
    pub key: String,
    /// The run that first claimed it (written into the manifest: a rewrite is identical).
    pub run_id: String,
    pub created_at: DateTime<Utc>,
    pub previous: Option<ManifestLink>,
    pub entries: u64,
    /// Claimed by a run that died (or failed) before writing it; taken over.
    pub taken_over: bool,
}

/// What claiming the chain head found.
#[derive(Debug, Clone)]
pub enum ChainClaim {
    Claimed(ManifestClaim),
    /// Another run is writing manifest `seq`; records it does not list wait for the next.
    Busy {
        seq: i64,
        owner: Option<String>,
    },
    /// Every archived record is already in a manifest.
    NothingNew,
}

/// A manifest the ledger knows.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestRow {
    pub seq: i64,
    pub key: String,
    pub written: bool,
    pub sha256: Option<String>,
    pub entries: i64,
}

impl Ledger {
    /// Claims the chain head for `owner` until `until`: a head left unwritten by a dead run
    /// first, else a new manifest listing every archived record in none yet. One
    /// transaction with the write lock taken up front, so two runs never claim at once.
    pub async fn claim_manifest(
        &self,
        owner: &str,
        key_for: impl Fn(i64) -> String,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<ChainClaim, LedgerError> {
        let now_text = to_ledger(now);
        // SQLite: take the write lock now, not on the first write (PostgreSQL: plain BEGIN
        // and `SELECT ... FOR UPDATE` on the head).
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
            let seq: i64 = row.get("seq");
            let claimed_until: Option<String> = row.get("claimed_until");
            if claimed_until.is_some_and(|t| t >= now_text) {
                return Ok(ChainClaim::Busy {
                    seq,
                    owner: row.get("owner"),
                });
            }
            sqlx::query("UPDATE manifests SET owner = $1, claimed_until = $2 WHERE seq = $3")
                .bind(owner)
                .bind(to_ledger(until))
                .bind(seq)
                .execute(&mut *tx)
                .await
                .ctx("taking over the chain head")?;
            tx.commit().await.ctx("committing a manifest claim")?;
            let previous = match (
                row.get::<Option<String>, _>("previous_key"),
                row.get::<Option<String>, _>("previous_sha256"),
            ) {
                (Some(key), Some(sha256)) => Some(ManifestLink {
                    seq: seq - 1,
                    key,
                    sha256,
                }),
                _ => None,
            };
            let created: String = row.get("created_at");
            return Ok(ChainClaim::Claimed(ManifestClaim {
                seq,
                key: row.get("object_key"),
                run_id: row.get("run_id"),
                created_at: from_ledger(&created)
                    .ok_or_else(|| LedgerError::Corrupt(format!("manifest time {created:?}")))?,
                previous,
                entries: u64::try_from(row.get::<i64, _>("entries")).unwrap_or(0),
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
                    seq: row.get("seq"),
                    key: row.get("object_key"),
                    sha256: row.get::<Option<String>, _>("sha256").ok_or_else(|| {
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
        .bind(owner)
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
            run_id: owner.to_owned(),
            created_at: from_ledger(&now_text).unwrap_or(now),
            previous,
            entries,
            taken_over: false,
        }))
    }

    /// Up to `limit` entries of manifest `seq` after uuid `after`, by uuid.
    pub async fn manifest_entries(
        &self,
        seq: i64,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ArchivedEntry>, LedgerError> {
        let rows = sqlx::query(
            "SELECT uuid, object_key, size_bytes, sha256, archived_at FROM calls
             WHERE manifest_seq = $1 AND state = 'archived' AND ($2 IS NULL OR uuid > $2)
             ORDER BY uuid LIMIT $3",
        )
        .bind(seq)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .ctx("listing a manifest's entries")?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Records manifest `seq` as written, if `owner` still holds it.
    pub async fn manifest_written(
        &self,
        seq: i64,
        owner: &str,
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
        .bind(owner)
        .execute(&self.pool)
        .await
        .ctx("recording a written manifest")?
        .rows_affected()
            == 1)
    }

    /// Keeps `owner`'s claim on manifest `seq` alive while it is written.
    pub async fn renew_manifest(
        &self,
        seq: i64,
        owner: &str,
        until: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        sqlx::query(
            "UPDATE manifests SET claimed_until = $1 WHERE seq = $2 AND owner = $3 AND state = 'writing'",
        )
        .bind(to_ledger(until))
        .bind(seq)
        .bind(owner)
        .execute(&self.pool)
        .await
        .ctx("renewing the chain head")?;
        Ok(())
    }

    /// Gives the chain head back unwritten: the next run takes it over at once.
    pub async fn release_manifest(&self, seq: i64, owner: &str) -> Result<(), LedgerError> {
        sqlx::query(
            "UPDATE manifests SET owner = NULL, claimed_until = NULL
             WHERE seq = $1 AND owner = $2 AND state = 'writing'",
        )
        .bind(seq)
        .bind(owner)
        .execute(&self.pool)
        .await
        .ctx("releasing the chain head")?;
        Ok(())
    }

    /// Every manifest the ledger knows, oldest first.
    pub async fn manifests(&self) -> Result<Vec<ManifestRow>, LedgerError> {
        let rows = sqlx::query(
            "SELECT seq, object_key, state, sha256, entries FROM manifests ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await
        .ctx("listing manifests")?;
        Ok(rows
            .iter()
            .map(|row| ManifestRow {
                seq: row.get("seq"),
                key: row.get("object_key"),
                written: row.get::<String, _>("state") == "written",
                sha256: row.get("sha256"),
                entries: row.get("entries"),
            })
            .collect())
    }

    /// How many archived records are in no manifest yet.
    pub async fn unlisted_archived(&self) -> Result<i64, LedgerError> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM calls WHERE state = 'archived' AND manifest_seq IS NULL",
        )
        .fetch_one(&self.pool)
        .await
        .ctx("counting records in no manifest")
    }
}

pub(super) fn entry_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<ArchivedEntry, LedgerError> {
    let uuid: String = row.get("uuid");
    let corrupt = |what: &str| LedgerError::Corrupt(format!("{what} of archived record {uuid}"));
    let archived_at: Option<String> = row.get("archived_at");
    Ok(ArchivedEntry {
        key: row
            .get::<Option<String>, _>("object_key")
            .ok_or_else(|| corrupt("object key"))?,
        size: row
            .get::<Option<i64>, _>("size_bytes")
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| corrupt("size"))?,
        sha256: row
            .get::<Option<String>, _>("sha256")
            .ok_or_else(|| corrupt("SHA-256"))?,
        archived_at: archived_at
            .as_deref()
            .and_then(from_ledger)
            .ok_or_else(|| corrupt("archive time"))?,
        uuid,
    })
}
