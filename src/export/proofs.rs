//! The proofs a bundle carries for one account: each chosen call's manifest lines (read
//! once per manifest from the store, as stored) with their inclusion proofs in the
//! checkpoint of their manifest, and a consistency proof from each checkpoint concerned to
//! the account's newest. Every proof is checked against the checkpoint's root before it is
//! written: a manifest altered in the store, or a log the ledger lost, fails the export
//! instead of handing over a proof that does not hold.

use std::collections::{BTreeMap, HashMap};

use futures::TryStreamExt;

use super::format::{ConsistencyLine, Leaf, ManifestRef, checkpoint_path};
use super::write::ExportError;
use crate::audit::{LineSplitter, ManifestLine};
use crate::domain::CallUuid;
use crate::ledger::{CheckpointRow, Ledger};
use crate::proof::merkle::{self, Hash, Wanted};
use crate::store::Store;

/// Which line of a manifest a call wants: the one that archived it, or that erased it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeafKind {
    Archived,
    Erased,
}

impl LeafKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Archived => "archived",
            Self::Erased => "erased",
        }
    }
}

/// The lines wanted: per manifest seq, the calls and the kind of line.
pub type WantedLines = BTreeMap<i64, Vec<(CallUuid, LeafKind)>>;

fn root_of(row: &CheckpointRow) -> Result<Hash, ExportError> {
    hex::decode(&row.root)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| ExportError::Log(format!("checkpoint {} has a bad root", row.seq)))
}

/// The leaves of `wanted`, by call (each call's leaves in log order), with their proofs.
pub async fn leaves(
    ledger: &Ledger,
    store: &Store,
    account: &str,
    checkpoints: &BTreeMap<i64, CheckpointRow>,
    wanted: &WantedLines,
) -> Result<HashMap<CallUuid, Vec<Leaf>>, ExportError> {
    let mut found: HashMap<CallUuid, Vec<Leaf>> = HashMap::new();
    for (seq, calls) in wanted {
        let row = checkpoints
            .get(seq)
            .ok_or_else(|| ExportError::Log(format!("manifest {seq} is not in the log yet")))?;
        let lines = manifest_lines(store, row, calls).await?;
        for (i, kind, uuid, line) in lines {
            let leaf = leaf(ledger, account, row, i, kind, line).await?;
            found.entry(uuid).or_default().push(leaf);
        }
    }
    for leaves in found.values_mut() {
        leaves.sort_by_key(|l| l.index);
    }
    Ok(found)
}

/// The lines of the manifest of `row` that `calls` want, each with its place (0-based,
/// after the header); the manifest read from the store, streaming.
async fn manifest_lines(
    store: &Store,
    row: &CheckpointRow,
    calls: &[(CallUuid, LeafKind)],
) -> Result<Vec<(u64, LeafKind, CallUuid, String)>, ExportError> {
    let key = &row.manifest_key;
    let want: HashMap<(&str, LeafKind), &CallUuid> =
        calls.iter().map(|(u, k)| ((u.as_str(), *k), u)).collect();
    let mut body = store
        .read(key)
        .await
        .map_err(|source| ExportError::store(key, source))?
        .ok_or_else(|| ExportError::Log(format!("manifest {key} is missing from the store")))?;
    let (mut splitter, mut out) = (LineSplitter::default(), Vec::new());
    // Lines seen, the header included: line `seen - 1` after the header is leaf `start + i`.
    let mut seen = 0u64;
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|source| ExportError::store(key, source))?
    {
        let lines = splitter
            .push(&chunk)
            .map_err(|why| ExportError::Log(format!("manifest {key}: {why}")))?;
        for line in lines {
            seen += 1;
            let Some(i) = seen.checked_sub(2) else {
                continue;
            };
            let text = String::from_utf8_lossy(&line).into_owned();
            let (uuid, kind) = match serde_json::from_str::<ManifestLine>(&text) {
                Ok(ManifestLine::Entry(e)) => (e.uuid, LeafKind::Archived),
                Ok(ManifestLine::Erased { erased }) => (erased.uuid, LeafKind::Erased),
                Err(_) => continue,
            };
            if let Some(call) = want.get(&(uuid.as_str(), kind)) {
                out.push((i, kind, (*call).clone(), text));
            }
        }
    }
    if out.len() < want.len() {
        return Err(ExportError::Log(format!(
            "manifest {key} does not list {} of the calls the ledger says it lists",
            want.len() - out.len()
        )));
    }
    Ok(out)
}

/// Line `i` of the manifest of `row` as a leaf with its inclusion proof, checked.
async fn leaf(
    ledger: &Ledger,
    account: &str,
    row: &CheckpointRow,
    i: u64,
    kind: LeafKind,
    line: String,
) -> Result<Leaf, ExportError> {
    let (index, size) = (row.start + i, row.size);
    let wanted = Wanted::Inclusion { index, size };
    let proof = prove(ledger, wanted).await?;
    merkle::verify_inclusion(
        &merkle::leaf_hash(line.as_bytes()),
        index,
        size,
        &proof,
        &root_of(row)?,
    )
    .map_err(|e| {
        ExportError::Log(format!(
            "the line of manifest {} at leaf {index} is not in its checkpoint: {e}",
            row.manifest_key
        ))
    })?;
    Ok(Leaf {
        kind: kind.as_str().to_owned(),
        line,
        index,
        manifest: ManifestRef {
            seq: row.seq,
            key: row.manifest_key.clone(),
        },
        checkpoint: checkpoint_path(account, row.seq),
        tree_size: size,
        inclusion: proof.iter().map(hex::encode).collect(),
    })
}

/// The proof `wanted` asks for, from the ledger's nodes.
async fn prove(ledger: &Ledger, wanted: Wanted) -> Result<Vec<Hash>, ExportError> {
    let ids = merkle::needed(wanted).map_err(|e| ExportError::Log(e.to_string()))?;
    let nodes = ledger.log_nodes(&ids).await?;
    merkle::prove(wanted, &nodes).map_err(|e| ExportError::Log(e.to_string()))
}

/// A consistency proof from each of `concerned` (but the newest) to `newest`, checked.
pub async fn consistency(
    ledger: &Ledger,
    account: &str,
    concerned: &[&CheckpointRow],
    newest: &CheckpointRow,
) -> Result<Vec<ConsistencyLine>, ExportError> {
    let mut lines = Vec::new();
    let new_root = root_of(newest)?;
    for row in concerned.iter().filter(|r| r.seq != newest.seq) {
        let (old, new) = (row.size, newest.size);
        let proof = prove(ledger, Wanted::Consistency { old, new }).await?;
        merkle::verify_consistency(old, new, &root_of(row)?, &new_root, &proof).map_err(|e| {
            ExportError::Log(format!(
                "checkpoint {} is not consistent with the newest ({}): {e}",
                row.seq, newest.seq
            ))
        })?;
        lines.push(ConsistencyLine {
            account: account.to_owned(),
            from: checkpoint_path(account, row.seq),
            from_size: old,
            to: checkpoint_path(account, newest.seq),
            to_size: new,
            proof: proof.iter().map(hex::encode).collect(),
        });
    }
    Ok(lines)
}
