//! Adding manifests to the Merkle log, after they are written: each written manifest not
//! in the log yet is read back from the store (its lines *as stored* are the leaves, and
//! its SHA-256 must still be the one the ledger recorded), its lines appended in order,
//! and a checkpoint written beside it. One path serves every case: a manifest this pass
//! wrote, the manifests of a ledger from before the log (its first pass logs them all,
//! oldest first), and a ledger rebuilt from the bucket (whose checkpoints are found in the
//! store and kept as they are when they name the same tree).
//!
//! Two processes logging the same manifest compute the same nodes and the same checkpoint
//! text (ed25519 signatures are deterministic); the ledger keeps the first record, and a
//! checkpoint already in the store is read back rather than written again.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::checkpoint::{Checkpoint, SignedCheckpoint, origin};
use super::keys::SigningKey;
use super::merkle::{CompactRange, Hash, NodeId, ProofError};
use crate::audit::LineSplitter;
use crate::ledger::{Ledger, LedgerError, NewCheckpoint, UnloggedManifest};
use crate::store::{Store, StoreError, UploadError};

/// Nodes held before they are written to the ledger.
const NODE_BATCH: usize = 2_000;
pub const CHECKPOINT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// A manifest added to the log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Logged {
    pub seq: i64,
    pub checkpoint: String,
    pub size: u64,
    pub root: String,
    pub signed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("reading or writing {key}: {source}")]
    Store {
        key: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "manifest {key} in the store is not the one the ledger recorded (SHA-256 {found}, recorded {expected}): it was altered or replaced; it is not logged (run `callvault verify --manifests`)"
    )]
    ManifestChanged {
        key: String,
        expected: String,
        found: String,
    },
    #[error(
        "manifest {0} is missing from the store: it cannot be logged (run `callvault verify --manifests`)"
    )]
    ManifestMissing(String),
    #[error("manifest {key}: {why}")]
    BadManifest { key: String, why: String },
    #[error(
        "the store already holds checkpoint {key}, which names another tree ({why}): refusing to overwrite it (was the ledger restored from an older copy?)"
    )]
    CheckpointConflict { key: String, why: String },
    #[error(transparent)]
    Proof(#[from] ProofError),
}

/// Logs every written manifest not in the log yet, oldest first; what was added.
pub async fn extend(
    ledger: &Ledger,
    store: &Store,
    signer: Option<&SigningKey>,
    now: DateTime<Utc>,
) -> Result<Vec<Logged>, LogError> {
    let (start, pending) = ledger.unlogged_manifests().await?;
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(key) = signer {
        publish_key(store, key).await?;
    }
    let edge = ledger.log_nodes(&CompactRange::edge_ids(start)).await?;
    let mut range = CompactRange::from_nodes(start, &edge)?;
    let mut logged = Vec::with_capacity(pending.len());
    for manifest in &pending {
        let done = log_one(ledger, store, signer, &mut range, manifest, now).await?;
        tracing::info!(seq = done.seq, size = done.size, checkpoint = %done.checkpoint, "manifest logged");
        logged.push(done);
    }
    Ok(logged)
}

/// Puts the signer's public key in the bucket (once), so that the checkpoints it signs
/// stay checkable after the key is replaced.
async fn publish_key(store: &Store, key: &SigningKey) -> Result<(), LogError> {
    let verifier = key.verifier();
    let object = store.public_key_key(&verifier.file_name());
    let store_err = |source| LogError::Store {
        key: object.clone(),
        source,
    };
    if store.size_of(&object).await.map_err(store_err)?.is_none() {
        let text = format!("{}\n", verifier.to_text());
        put_bytes(store, &object, text.into_bytes(), CHECKPOINT_CONTENT_TYPE)
            .await
            .map_err(store_err)?;
    }
    Ok(())
}

/// Writes a small object in one PUT.
pub async fn put_bytes(
    store: &Store,
    key: &str,
    bytes: Vec<u8>,
    content_type: &str,
) -> Result<(), StoreError> {
    let body = futures::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(bytes))]);
    match store
        .put_stream(key, body, content_type, &CancellationToken::new())
        .await
    {
        Ok(_) => Ok(()),
        Err(UploadError::Store(e)) => Err(e),
        Err(UploadError::Source(never)) => match never {},
        Err(UploadError::Cancelled) => unreachable!("never cancelled"),
    }
}

async fn log_one(
    ledger: &Ledger,
    store: &Store,
    signer: Option<&SigningKey>,
    range: &mut CompactRange,
    manifest: &UnloggedManifest,
    now: DateTime<Utc>,
) -> Result<Logged, LogError> {
    let start = range.size();
    append_lines(ledger, store, range, manifest).await?;
    let root = range.root();
    let checkpoint = Checkpoint {
        origin: origin(ledger.account().as_str()),
        size: range.size(),
        root,
        manifest: Some((manifest.seq, manifest.sha256.clone())),
    };
    let key = crate::store::checkpoint_key_for(&manifest.key);
    let text = settle_checkpoint(store, &key, &checkpoint, signer).await?;
    let signer_name = SignedCheckpoint::parse(&text)
        .ok()
        .and_then(|c| c.signatures.first().map(|s| s.name.clone()));
    ledger
        .record_checkpoint(
            &NewCheckpoint {
                seq: manifest.seq,
                start,
                size: range.size(),
                root: &root,
                key: &key,
                text: &text,
                signer: signer_name.as_deref(),
            },
            now,
        )
        .await?;
    Ok(Logged {
        seq: manifest.seq,
        checkpoint: key,
        size: range.size(),
        root: hex::encode(root),
        signed: signer_name.is_some(),
    })
}

/// Reads the manifest from the store and appends its lines (all but the header) to
/// `range`, storing the nodes they complete; checks the bytes are the recorded ones. On
/// error `range` is left past the manifest's lines: the caller stops.
async fn append_lines(
    ledger: &Ledger,
    store: &Store,
    range: &mut CompactRange,
    manifest: &UnloggedManifest,
) -> Result<(), LogError> {
    let key = &manifest.key;
    let store_err = |source| LogError::Store {
        key: key.clone(),
        source,
    };
    let Some(mut body) = store.read(key).await.map_err(store_err)? else {
        return Err(LogError::ManifestMissing(key.clone()));
    };
    let mut hasher = Sha256::new();
    let mut lines = LineSplitter::default();
    let mut header_seen = false;
    let mut nodes: Vec<(NodeId, Hash)> = Vec::with_capacity(NODE_BATCH + 64);
    while let Some(chunk) = body.try_next().await.map_err(store_err)? {
        hasher.update(&chunk);
        let complete = lines.push(&chunk).map_err(|why| LogError::BadManifest {
            key: key.clone(),
            why,
        })?;
        for line in complete {
            if std::mem::replace(&mut header_seen, true) {
                nodes.extend(range.append(super::merkle::leaf_hash(&line)));
            }
        }
        if nodes.len() >= NODE_BATCH {
            ledger.add_log_nodes(&std::mem::take(&mut nodes)).await?;
        }
    }
    if let Some(line) = lines.finish() {
        return Err(LogError::BadManifest {
            key: key.clone(),
            why: format!("its last line ({} bytes) has no newline", line.len()),
        });
    }
    let found = hex::encode(hasher.finalize());
    if found != manifest.sha256 {
        return Err(LogError::ManifestChanged {
            key: key.clone(),
            expected: manifest.sha256.clone(),
            found,
        });
    }
    ledger.add_log_nodes(&nodes).await?;
    Ok(())
}

/// The checkpoint's text as the store holds it: written now, or found there (from a rebuilt
/// ledger's bucket, or another process) naming the same tree.
async fn settle_checkpoint(
    store: &Store,
    key: &str,
    checkpoint: &Checkpoint,
    signer: Option<&SigningKey>,
) -> Result<String, LogError> {
    let store_err = |source| LogError::Store {
        key: key.to_owned(),
        source,
    };
    if let Some(existing) = read_text(store, key).await.map_err(store_err)? {
        let conflict = |why: String| LogError::CheckpointConflict {
            key: key.to_owned(),
            why,
        };
        let found = SignedCheckpoint::parse(&existing).map_err(|e| conflict(e.to_string()))?;
        if found.checkpoint != *checkpoint {
            return Err(conflict(format!(
                "size {} root {}, where the manifests give size {} root {}",
                found.checkpoint.size,
                hex::encode(found.checkpoint.root),
                checkpoint.size,
                hex::encode(checkpoint.root)
            )));
        }
        return Ok(existing);
    }
    let text = checkpoint.to_note(signer);
    put_bytes(
        store,
        key,
        text.clone().into_bytes(),
        CHECKPOINT_CONTENT_TYPE,
    )
    .await
    .map_err(store_err)?;
    Ok(text)
}

/// A small object (a checkpoint, a token, a key) read whole; `None` when absent.
pub async fn read_bytes(store: &Store, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(body) = store.read(key).await? else {
        return Ok(None);
    };
    let chunks: Vec<Bytes> = body.try_collect().await?;
    Ok(Some(chunks.concat()))
}

/// A small text object read whole; `None` when absent.
pub async fn read_text(store: &Store, key: &str) -> Result<Option<String>, StoreError> {
    Ok(read_bytes(store, key)
        .await?
        .map(|b| String::from_utf8_lossy(&b).into_owned()))
}
