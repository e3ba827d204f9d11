//! The manifest chain as the ledger keeps it: which archived records are in no manifest
//! yet, who holds the chain head while a manifest is written, and what was written. The
//! head is claimed under the ledger's own lock (SQLite's write lock, a PostgreSQL advisory
//! lock), so two runs never write it at once, and a head left by a dead run is finished by
//! the next one.

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;

use super::LedgerError;
use super::sql::{Db, Row, Stmt, Tx, retry_conflicts};
use crate::domain::{CallUuid, RunId};

/// One archived object as a manifest (and `verify`) lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchivedEntry {
    pub uuid: CallUuid,
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
    pub run_id: RunId,
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
        owner: Option<RunId>,
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

/// Names the object of manifest `seq`.
pub type ManifestKeyFn<'a> = &'a (dyn Fn(i64) -> String + Send + Sync);

#[async_trait]
pub trait Manifests: Send + Sync {
    /// Claims the chain head for `owner` until `until`: a head left unwritten by a dead run
    /// first, else a new manifest listing every archived record in none yet.
    async fn claim_manifest(
        &self,
        owner: &RunId,
        key_for: ManifestKeyFn<'_>,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<ChainClaim, LedgerError>;

    /// Up to `limit` entries of manifest `seq` after uuid `after`, by uuid.
    async fn manifest_entries(
        &self,
        seq: i64,
        after: Option<&CallUuid>,
        limit: i64,
    ) -> Result<Vec<ArchivedEntry>, LedgerError>;

    /// Records manifest `seq` as written, if `owner` still holds it.
    async fn manifest_written(
        &self,
        seq: i64,
        owner: &RunId,
        sha256: &str,
        size: u64,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError>;

    /// Keeps `owner`'s claim on manifest `seq` alive while it is written.
    async fn renew_manifest(
        &self,
        seq: i64,
        owner: &RunId,
        until: DateTime<Utc>,
    ) -> Result<(), LedgerError>;

    /// Gives the chain head back unwritten: the next run takes it over at once.
    async fn release_manifest(&self, seq: i64, owner: &RunId) -> Result<(), LedgerError>;

    /// Every manifest the ledger knows, oldest first.
    async fn manifests(&self) -> Result<Vec<ManifestRow>, LedgerError>;

    /// How many archived records are in no manifest yet.
    async fn unlisted_archived(&self) -> Result<i64, LedgerError>;
}

/// The one part of the chain that differs by engine: how two runs are kept from claiming
/// the head at once.
#[async_trait]
pub(crate) trait ChainHead: Db {
    /// A transaction that holds the chain head until it ends: SQLite's write lock, taken up
    /// front; on PostgreSQL a transaction-level advisory lock, so a second claimer waits (at
    /// most the busy timeout) and then sees what the first committed.
    async fn begin_chain_head(&self) -> Result<Self::Tx, LedgerError>;
}

const WRITING_HEAD: &str = "SELECT seq, object_key, run_id, owner, claimed_until, previous_key,
        previous_sha256, entries, created_at
 FROM manifests WHERE account = $1 AND state = 'writing' ORDER BY seq LIMIT 1";

const ENTRY_COLUMNS: &str = "uuid, object_key, size_bytes, sha256, archived_at";

#[async_trait]
impl<D: ChainHead> Manifests for D {
    /// One transaction under the chain head's lock, run again if it loses a race.
    async fn claim_manifest(
        &self,
        owner: &RunId,
        key_for: ManifestKeyFn<'_>,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<ChainClaim, LedgerError> {
        // Times as the ledger keeps them (whole milliseconds), so that the claim compares
        // and returns what is read back.
        let now = now.trunc_subsecs(3);
        retry_conflicts(|| claim_once(self, owner, key_for, now, until)).await
    }

    async fn manifest_entries(
        &self,
        seq: i64,
        after: Option<&CallUuid>,
        limit: i64,
    ) -> Result<Vec<ArchivedEntry>, LedgerError> {
        let stmt = Stmt::new(entries_sql(after.is_some()), "listing a manifest's entries")
            .bind(seq)
            .bind(limit.max(0))
            .bind(after.map(CallUuid::as_str))
            .bind(self.account());
        let rows = self.fetch_all(stmt).await?;
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
        let n = self
            .execute(
                Stmt::new(
                    "UPDATE manifests SET state = 'written', sha256 = $1, size_bytes = $2,
                            written_at = $3, owner = NULL, claimed_until = NULL
                     WHERE account = $6 AND seq = $4 AND owner = $5 AND state = 'writing'",
                    "recording a written manifest",
                )
                .bind(sha256)
                .bind(size)
                .bind(now)
                .bind(seq)
                .bind(owner.as_str())
                .bind(self.account()),
            )
            .await?;
        Ok(n == 1)
    }

    async fn renew_manifest(
        &self,
        seq: i64,
        owner: &RunId,
        until: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.execute(
            Stmt::new(
                "UPDATE manifests SET claimed_until = $1
                 WHERE account = $4 AND seq = $2 AND owner = $3 AND state = 'writing'",
                "renewing the chain head",
            )
            .bind(until)
            .bind(seq)
            .bind(owner.as_str())
            .bind(self.account()),
        )
        .await?;
        Ok(())
    }

    async fn release_manifest(&self, seq: i64, owner: &RunId) -> Result<(), LedgerError> {
        self.execute(
            Stmt::new(
                "UPDATE manifests SET owner = NULL, claimed_until = NULL
                 WHERE account = $3 AND seq = $1 AND owner = $2 AND state = 'writing'",
                "releasing the chain head",
            )
            .bind(seq)
            .bind(owner.as_str())
            .bind(self.account()),
        )
        .await?;
        Ok(())
    }

    async fn manifests(&self) -> Result<Vec<ManifestRow>, LedgerError> {
        let rows = self
            .fetch_all(
                Stmt::new(
                    "SELECT seq, object_key, state, sha256, entries FROM manifests
                     WHERE account = $1 ORDER BY seq",
                    "listing manifests",
                )
                .bind(self.account()),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ManifestRow {
                    seq: row.int("seq")?,
                    key: row.text("object_key")?,
                    written: row.text("state")? == "written",
                    sha256: row.opt_text("sha256")?,
                    entries: row.int("entries")?,
                })
            })
            .collect()
    }

    async fn unlisted_archived(&self) -> Result<i64, LedgerError> {
        self.fetch_one(
            Stmt::new(
                "SELECT count(*) AS n FROM calls
                 WHERE account = $1 AND state = 'archived' AND manifest_seq IS NULL",
                "counting records in no manifest",
            )
            .bind(self.account()),
        )
        .await?
        .int("n")
    }
}

/// Claims the head once: a head left unwritten by a dead run first, else a new manifest
/// listing every archived record (and erasure) in none yet.
async fn claim_once<D: ChainHead>(
    db: &D,
    owner: &RunId,
    key_for: ManifestKeyFn<'_>,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<ChainClaim, LedgerError> {
    let mut tx = db.begin_chain_head().await?;
    let account = db.account();
    let writing = tx
        .fetch_optional(Stmt::new(WRITING_HEAD, "reading the chain head").bind(account))
        .await?;
    if let Some(row) = writing {
        let seq = row.int("seq")?;
        if row.opt_time("claimed_until")?.is_some_and(|t| t >= now) {
            return Ok(ChainClaim::Busy {
                seq,
                owner: row.opt_text("owner")?.map(RunId::from),
            });
        }
        tx.execute(
            Stmt::new(
                "UPDATE manifests SET owner = $1, claimed_until = $2
                 WHERE account = $4 AND seq = $3",
                "taking over the chain head",
            )
            .bind(owner.as_str())
            .bind(until)
            .bind(seq)
            .bind(account),
        )
        .await?;
        let claim = taken_over(&row, seq)?;
        tx.commit().await?;
        return Ok(ChainClaim::Claimed(claim));
    }
    let previous = last_written(&mut tx).await?;
    let seq = previous.as_ref().map_or(1, |p| p.seq + 1);
    let key = key_for(seq);
    tx.execute(
        Stmt::new(
            "INSERT INTO manifests (seq, object_key, state, run_id, owner, claimed_until,
                                    previous_key, previous_sha256, entries, created_at, account)
             VALUES ($1, $2, 'writing', $3, $3, $4, $5, $6, 0, $7, $8)",
            "claiming the chain head",
        )
        .bind(seq)
        .bind(&key)
        .bind(owner.as_str())
        .bind(until)
        .bind(previous.as_ref().map(|p| p.key.as_str()))
        .bind(previous.as_ref().map(|p| p.sha256.as_str()))
        .bind(now)
        .bind(account),
    )
    .await?;
    let entries = assign_unlisted(&mut tx, seq).await?;
    if entries == 0 {
        // Dropped uncommitted: the empty manifest is rolled back.
        return Ok(ChainClaim::NothingNew);
    }
    tx.commit().await?;
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

/// The last manifest written, which a new one names as its predecessor.
async fn last_written(tx: &mut impl Tx) -> Result<Option<ManifestLink>, LedgerError> {
    let stmt = Stmt::new(
        "SELECT seq, object_key, sha256 FROM manifests WHERE account = $1 AND state = 'written'
         ORDER BY seq DESC LIMIT 1",
        "reading the chain head",
    )
    .bind(tx.account().to_owned());
    let head = tx.fetch_optional(stmt).await?;
    head.map(|row| {
        Ok(ManifestLink {
            seq: row.int("seq")?,
            key: row.text("object_key")?,
            sha256: row
                .opt_text("sha256")?
                .ok_or_else(|| LedgerError::Corrupt("a written manifest without SHA-256".into()))?,
        })
    })
    .transpose()
}

/// A page of manifest `$1`'s archived records in uuid order, after uuid `$3` when `after`:
/// `calls_manifest` holds them in that order, so a page reads only its own rows.
fn entries_sql(after: bool) -> String {
    let after_sql = if after { " AND uuid > $3" } else { "" };
    format!(
        "SELECT {ENTRY_COLUMNS} FROM calls
         WHERE account = $4 AND state = 'archived' AND manifest_seq = $1{after_sql}
         ORDER BY uuid LIMIT $2"
    )
}

/// Puts every archived record and erasure in no manifest yet into manifest `seq`, and
/// counts them there; how many.
async fn assign_unlisted(tx: &mut impl Tx, seq: i64) -> Result<u64, LedgerError> {
    let account = tx.account().to_owned();
    let records = tx
        .execute(
            Stmt::new(
                "UPDATE calls SET manifest_seq = $1
                 WHERE account = $2 AND state = 'archived' AND manifest_seq IS NULL",
                "assigning records to a manifest",
            )
            .bind(seq)
            .bind(&account),
        )
        .await?;
    // Erasures not yet listed go in the same manifest, after its archived records.
    let erasures = tx
        .execute(
            Stmt::new(
                "UPDATE tombstones SET manifest_seq = $1
                 WHERE account = $2 AND manifest_seq IS NULL",
                "assigning erasures to a manifest",
            )
            .bind(seq)
            .bind(&account),
        )
        .await?;
    let entries = records + erasures;
    if entries > 0 {
        tx.execute(
            Stmt::new(
                "UPDATE manifests SET entries = $1 WHERE account = $3 AND seq = $2",
                "counting a manifest's entries",
            )
            .bind(entries)
            .bind(seq)
            .bind(&account),
        )
        .await?;
    }
    Ok(entries)
}

/// The claim on a head left unwritten by another run, as that run first claimed it.
fn taken_over(row: &impl Row, seq: i64) -> Result<ManifestClaim, LedgerError> {
    let previous = match (
        row.opt_text("previous_key")?,
        row.opt_text("previous_sha256")?,
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
        key: row.text("object_key")?,
        run_id: RunId::from(row.text("run_id")?),
        created_at: row.time("created_at")?,
        previous,
        entries: u64::try_from(row.int("entries")?).unwrap_or(0),
        taken_over: true,
    })
}

/// The archived object in a row holding `uuid, object_key, size_bytes, sha256, archived_at`.
pub(crate) fn entry_from_row(row: &impl Row) -> Result<ArchivedEntry, LedgerError> {
    let uuid = row.uuid("uuid")?;
    let corrupt = |what: &str| LedgerError::Corrupt(format!("{what} of archived record {uuid}"));
    Ok(ArchivedEntry {
        key: row
            .opt_text("object_key")?
            .ok_or_else(|| corrupt("object key"))?,
        size: row
            .opt_int("size_bytes")?
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| corrupt("size"))?,
        sha256: row.opt_text("sha256")?.ok_or_else(|| corrupt("SHA-256"))?,
        archived_at: row
            .opt_time("archived_at")?
            .ok_or_else(|| corrupt("archive time"))?,
        uuid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LedgerOptions;
    use crate::ledger::sqlite::SqliteLedger;

    /// A page of a manifest's entries is read from `calls_manifest` in uuid order, not by
    /// walking every archived call of the account in uuid order (0.4 s a pass at a million
    /// calls on SQLite before the index held the uuid).
    #[tokio::test]
    async fn a_manifest_page_reads_its_own_entries_in_order() {
        let ledger = SqliteLedger::open("sqlite::memory:", &LedgerOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for after in [false, true] {
            let stmt = Stmt::new(entries_sql(after), "explaining")
                .bind(7_i64)
                .bind(100_i64)
                .bind("u")
                .bind("default");
            let steps = crate::ledger::sqlite::query_plan(&ledger, stmt).await;
            let want = if after {
                "SEARCH calls USING INDEX calls_manifest (account=? AND state=? AND manifest_seq=? AND uuid>?)"
            } else {
                "SEARCH calls USING INDEX calls_manifest (account=? AND state=? AND manifest_seq=?)"
            };
            assert_eq!(steps, [want], "after: {after}");
        }
    }
}
