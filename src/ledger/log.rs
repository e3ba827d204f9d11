//! The archive's Merkle log as the ledger keeps it (see `proof::merkle` for why nodes):
//! every perfect subtree's hash per account, and for each written manifest, once logged,
//! the log's size before and after its lines, the root, and the checkpoint written beside
//! it; the RFC 3161 tokens over each checkpoint, one per time-stamping authority.

use std::collections::HashMap;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::LedgerError;
use super::sql::{Db, Row, Stmt, Tx};
use crate::proof::merkle::{Hash, NodeId};

/// Nodes written per statement (4 arguments each).
const NODES_PER_STATEMENT: usize = 200;

/// A written manifest the log does not hold yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnloggedManifest {
    pub seq: i64,
    pub key: String,
    pub sha256: String,
    pub size: u64,
}

/// A manifest's checkpoint, as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointRow {
    pub seq: i64,
    pub manifest_key: String,
    pub manifest_sha256: String,
    /// Leaves before this manifest's lines, and after them.
    pub start: u64,
    pub size: u64,
    pub root: String,
    pub key: String,
    /// The checkpoint file's text, as in the store.
    pub text: String,
    /// The signing key's name, or `None` when written without a key.
    pub signer: Option<String>,
    pub logged_at: DateTime<Utc>,
}

/// What logging a manifest records.
#[derive(Debug, Clone)]
pub struct NewCheckpoint<'a> {
    pub seq: i64,
    pub start: u64,
    pub size: u64,
    pub root: &'a Hash,
    pub key: &'a str,
    pub text: &'a str,
    pub signer: Option<&'a str>,
}

/// A time-stamp token over a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StampRow {
    pub seq: i64,
    /// The authority's URL.
    pub tsa: String,
    /// Where the token is kept in the store.
    pub key: String,
    /// The DER time-stamp response.
    #[serde(skip)]
    pub token: Vec<u8>,
    pub gen_time: DateTime<Utc>,
}

/// The log's figures for `status` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProofFigures {
    /// Leaves in the log.
    pub leaves: u64,
    pub checkpoints: u64,
    /// Checkpoints written without a signing key.
    pub unsigned: u64,
    /// Checkpoints no time-stamping authority has stamped yet.
    pub unstamped: u64,
    /// When the oldest unstamped checkpoint was written.
    pub oldest_unstamped_at: Option<DateTime<Utc>>,
    /// Written manifests not in the log yet.
    pub unlogged_manifests: u64,
}

#[async_trait]
pub trait ProofLog: Send + Sync {
    /// Written manifests not in the log yet, oldest first (only the newest manifest is ever
    /// still being written); and the log's size before the first of them.
    async fn unlogged_manifests(&self) -> Result<(u64, Vec<UnloggedManifest>), LedgerError>;

    /// The stored hashes of `ids` (those the log has).
    async fn log_nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, LedgerError>;

    /// Stores nodes. A node once under a checkpoint never changes; one past every checkpoint
    /// may be written again (a manifest read while altered in the store left wrong ones,
    /// which its next, good reading replaces).
    async fn add_log_nodes(&self, nodes: &[(NodeId, Hash)]) -> Result<(), LedgerError>;

    /// Records manifest `seq` as logged; false if it already was (another process logged
    /// it meanwhile).
    async fn record_checkpoint(
        &self,
        checkpoint: &NewCheckpoint<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError>;

    /// Every logged manifest's checkpoint, oldest first.
    async fn checkpoints(&self) -> Result<Vec<CheckpointRow>, LedgerError>;

    /// Checkpoints without a token from `tsa`, oldest first.
    async fn unstamped(&self, tsa: &str) -> Result<Vec<CheckpointRow>, LedgerError>;

    /// Records a token over checkpoint `seq` (a second token from the same authority is
    /// ignored).
    async fn add_stamp(&self, stamp: &StampRow, now: DateTime<Utc>) -> Result<(), LedgerError>;

    /// Every token, by checkpoint then authority.
    async fn stamps(&self) -> Result<Vec<StampRow>, LedgerError>;

    async fn proof_figures(&self) -> Result<ProofFigures, LedgerError>;
}

const CHECKPOINT_COLUMNS: &str = "seq, object_key, sha256, log_start, log_size, log_root,
    checkpoint_key, checkpoint, checkpoint_signer, logged_at";

fn checkpoint_row(row: &impl Row) -> Result<CheckpointRow, LedgerError> {
    Ok(CheckpointRow {
        seq: row.int("seq")?,
        manifest_key: row.text("object_key")?,
        manifest_sha256: row.text("sha256")?,
        start: row.count("log_start")?,
        size: row.count("log_size")?,
        root: row.text("log_root")?,
        key: row.text("checkpoint_key")?,
        text: row.text("checkpoint")?,
        signer: row.opt_text("checkpoint_signer")?,
        logged_at: row.time("logged_at")?,
    })
}

fn hash_of(hex_text: &str) -> Result<Hash, LedgerError> {
    hex::decode(hex_text)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| LedgerError::Corrupt(format!("log node hash {hex_text:?}")))
}

/// The log's figures for `status`, each from a partial index read alone
/// (`manifests_logged`, `manifests_unlogged`), whatever the number of manifests.
pub(crate) const PROOF_FIGURES: &str = "SELECT
       (SELECT max(log_size) FROM manifests WHERE account = $1
          AND log_size IS NOT NULL) AS leaves,
       (SELECT count(*) FROM manifests WHERE account = $1
          AND log_size IS NOT NULL) AS checkpoints,
       (SELECT count(*) FROM manifests WHERE account = $1
          AND log_size IS NOT NULL AND checkpoint_signer IS NULL) AS unsigned,
       (SELECT count(*) FROM manifests WHERE account = $1
          AND state = 'written' AND log_size IS NULL) AS unlogged";

/// The checkpoints no authority has stamped yet, from `manifests_unstamped` (as many
/// entries as there are such checkpoints; `stamped_at` is set with the first token).
pub(crate) const UNSTAMPED_FIGURES: &str =
    "SELECT count(*) AS n, min(logged_at) AS oldest FROM manifests
     WHERE account = $1 AND log_size IS NOT NULL AND stamped_at IS NULL";

#[async_trait]
impl<D: Db> ProofLog for D {
    async fn unlogged_manifests(&self) -> Result<(u64, Vec<UnloggedManifest>), LedgerError> {
        // Only the newest manifest is ever being written (a head is claimed once the one
        // before is written), so the written ones not logged follow the logged ones.
        let start = self
            .fetch_one(
                Stmt::new(
                    "SELECT max(log_size) AS n FROM manifests
                     WHERE account = $1 AND log_size IS NOT NULL",
                    "reading the log's size",
                )
                .bind(self.account()),
            )
            .await?
            .opt_int("n")?
            .map_or(0, |n| u64::try_from(n).unwrap_or(0));
        let rows = self
            .fetch_all(
                Stmt::new(
                    "SELECT seq, object_key, sha256, size_bytes FROM manifests
                     WHERE account = $1 AND state = 'written' AND log_size IS NULL ORDER BY seq",
                    "listing the manifests to log",
                )
                .bind(self.account()),
            )
            .await?;
        let pending = rows
            .iter()
            .map(|row| {
                Ok(UnloggedManifest {
                    seq: row.int("seq")?,
                    key: row.text("object_key")?,
                    sha256: row.text("sha256")?,
                    size: row.count("size_bytes")?,
                })
            })
            .collect::<Result<_, LedgerError>>()?;
        Ok((start, pending))
    }

    async fn log_nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, LedgerError> {
        let mut found = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(NODES_PER_STATEMENT) {
            let pairs: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${})", 2 * i + 2, 2 * i + 3))
                .collect();
            let sql = format!(
                "SELECT level, idx, hash FROM log_nodes
                 WHERE account = $1 AND (level, idx) IN ({})",
                pairs.join(", ")
            );
            let stmt = chunk.iter().fold(
                Stmt::new(sql, "reading the log's nodes").bind(self.account()),
                |s, id| s.bind(id.level).bind(id.index),
            );
            for row in self.fetch_all(stmt).await? {
                let id = NodeId::new(
                    u32::try_from(row.int("level")?).unwrap_or(u32::MAX),
                    row.count("idx")?,
                );
                found.insert(id, hash_of(&row.text("hash")?)?);
            }
        }
        Ok(found)
    }

    async fn add_log_nodes(&self, nodes: &[(NodeId, Hash)]) -> Result<(), LedgerError> {
        const CONTEXT: &str = "adding to the log";
        let mut tx = self.begin(CONTEXT).await?;
        for chunk in nodes.chunks(NODES_PER_STATEMENT) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("($1, ${}, ${}, ${})", 3 * i + 2, 3 * i + 3, 3 * i + 4))
                .collect();
            let sql = format!(
                "INSERT INTO log_nodes (account, level, idx, hash) VALUES {}
                 ON CONFLICT (account, level, idx) DO UPDATE SET hash = excluded.hash",
                values.join(", ")
            );
            let stmt = chunk.iter().fold(
                Stmt::new(sql, CONTEXT).bind(self.account()),
                |s, (id, hash)| s.bind(id.level).bind(id.index).bind(hex::encode(hash)),
            );
            tx.execute(stmt).await?;
        }
        tx.commit().await
    }

    async fn record_checkpoint(
        &self,
        c: &NewCheckpoint<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let n = self
            .execute(
                Stmt::new(
                    "UPDATE manifests SET log_start = $1, log_size = $2, log_root = $3,
                            checkpoint_key = $4, checkpoint = $5, checkpoint_signer = $6,
                            logged_at = $7
                     WHERE account = $8 AND seq = $9 AND state = 'written' AND log_size IS NULL",
                    "recording a checkpoint",
                )
                .bind(c.start)
                .bind(c.size)
                .bind(hex::encode(c.root))
                .bind(c.key)
                .bind(c.text)
                .bind(c.signer)
                .bind(now)
                .bind(self.account())
                .bind(c.seq),
            )
            .await?;
        Ok(n == 1)
    }

    async fn checkpoints(&self) -> Result<Vec<CheckpointRow>, LedgerError> {
        let rows = self
            .fetch_all(
                Stmt::new(
                    format!(
                        "SELECT {CHECKPOINT_COLUMNS} FROM manifests
                         WHERE account = $1 AND log_size IS NOT NULL ORDER BY seq"
                    ),
                    "listing checkpoints",
                )
                .bind(self.account()),
            )
            .await?;
        rows.iter().map(checkpoint_row).collect()
    }

    async fn unstamped(&self, tsa: &str) -> Result<Vec<CheckpointRow>, LedgerError> {
        let rows = self
            .fetch_all(
                Stmt::new(
                    format!(
                        "SELECT {CHECKPOINT_COLUMNS} FROM manifests m
                         WHERE account = $1 AND log_size IS NOT NULL
                           AND NOT EXISTS (SELECT 1 FROM checkpoint_stamps s
                                           WHERE s.account = m.account AND s.seq = m.seq
                                             AND s.tsa = $2)
                         ORDER BY seq"
                    ),
                    "listing checkpoints to stamp",
                )
                .bind(self.account())
                .bind(tsa),
            )
            .await?;
        rows.iter().map(checkpoint_row).collect()
    }

    /// The token, and the checkpoint marked stamped (when its first token came), in one
    /// transaction: `status` counts the unstamped checkpoints from that mark alone.
    async fn add_stamp(&self, stamp: &StampRow, now: DateTime<Utc>) -> Result<(), LedgerError> {
        const CONTEXT: &str = "recording a time-stamp token";
        let mut tx = self.begin_write(CONTEXT).await?;
        tx.execute(
            Stmt::new(
                "INSERT INTO checkpoint_stamps (account, seq, tsa, object_key, token, gen_time,
                                                stamped_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (account, seq, tsa) DO NOTHING",
                CONTEXT,
            )
            .bind(self.account())
            .bind(stamp.seq)
            .bind(stamp.tsa.as_str())
            .bind(stamp.key.as_str())
            .bind(B64.encode(&stamp.token))
            .bind(stamp.gen_time)
            .bind(now),
        )
        .await?;
        tx.execute(
            Stmt::new(
                "UPDATE manifests SET stamped_at = $1
                 WHERE account = $2 AND seq = $3 AND stamped_at IS NULL",
                CONTEXT,
            )
            .bind(now)
            .bind(self.account())
            .bind(stamp.seq),
        )
        .await?;
        tx.commit().await
    }

    async fn stamps(&self) -> Result<Vec<StampRow>, LedgerError> {
        let rows = self
            .fetch_all(
                Stmt::new(
                    "SELECT seq, tsa, object_key, token, gen_time FROM checkpoint_stamps
                     WHERE account = $1 ORDER BY seq, stamped_at, tsa",
                    "listing time-stamp tokens",
                )
                .bind(self.account()),
            )
            .await?;
        rows.iter()
            .map(|row| {
                let token = B64
                    .decode(row.text("token")?)
                    .map_err(|_| LedgerError::Corrupt("a time-stamp token not in base64".into()))?;
                Ok(StampRow {
                    seq: row.int("seq")?,
                    tsa: row.text("tsa")?,
                    key: row.text("object_key")?,
                    token,
                    gen_time: row.time("gen_time")?,
                })
            })
            .collect()
    }

    async fn proof_figures(&self) -> Result<ProofFigures, LedgerError> {
        let row = self
            .fetch_one(
                Stmt::new(PROOF_FIGURES, "counting the log's checkpoints").bind(self.account()),
            )
            .await?;
        let unstamped = self
            .fetch_one(
                Stmt::new(UNSTAMPED_FIGURES, "counting unstamped checkpoints").bind(self.account()),
            )
            .await?;
        Ok(ProofFigures {
            leaves: row
                .opt_int("leaves")?
                .map_or(0, |n| u64::try_from(n).unwrap_or(0)),
            checkpoints: row.count("checkpoints")?,
            unsigned: row.count("unsigned")?,
            unstamped: unstamped.count("n")?,
            oldest_unstamped_at: unstamped.opt_time("oldest")?,
            unlogged_manifests: row.count("unlogged")?,
        })
    }
}
