//! `verify --manifests`, the log's half: the Merkle log recomputed from the manifests in
//! the bucket alone, compared with every checkpoint beside them (tree size and root, the
//! signature against the public keys the bucket keeps), with the ledger's copy of each
//! checkpoint, and with the root the ledger's nodes give (what export proofs are made of).

use std::collections::BTreeMap;

use futures::TryStreamExt;
use serde::Serialize;

use super::checkpoint::{CheckpointError, SignedCheckpoint};
use super::keys::VerifierKey;
use super::log::read_text;
use super::merkle::{self, CompactRange, Wanted, leaf_hash};
use crate::audit::LineSplitter;
use crate::ledger::{CheckpointRow, Ledger, LedgerError};
use crate::store::{Store, StoreError};

/// What checking the log found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogReport {
    pub leaves: u64,
    pub checkpoints_checked: u64,
    pub signed: u64,
    pub unsigned: u64,
    /// Time-stamp tokens found beside the checkpoints, each checked (imprint, signature).
    pub tokens: u64,
    pub public_keys: Vec<String>,
    pub notes: Vec<String>,
    pub problems: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("reading the store: {0}")]
    Store(#[from] StoreError),
}

/// Recomputes the log from the manifests in `store` and checks every checkpoint.
pub async fn check_log(ledger: &Ledger, store: &Store) -> Result<LogReport, CheckError> {
    let mut report = LogReport::default();
    let keys = public_keys(store, &mut report).await?;
    let rows: BTreeMap<i64, CheckpointRow> = ledger
        .checkpoints()
        .await?
        .into_iter()
        .map(|r| (r.seq, r))
        .collect();
    let listed = store.list(store.manifests_prefix()).await?;
    let tokens: Vec<String> = listed
        .iter()
        .filter(|l| l.key.ends_with(".tsr"))
        .map(|l| l.key.clone())
        .collect();
    let mut manifests: BTreeMap<i64, String> = listed
        .into_iter()
        .filter_map(|l| store.manifest_seq(&l.key).map(|seq| (seq, l.key)))
        .collect();
    // A chain renamed into another prefix keeps its older manifests where they were.
    for row in rows.values() {
        if !manifests.contains_key(&row.seq) && store.size_of(&row.manifest_key).await?.is_some() {
            manifests.insert(row.seq, row.manifest_key.clone());
        }
    }
    let mut range = CompactRange::empty();
    for (seq, key) in &manifests {
        if !append_manifest(store, key, &mut range, &mut report).await? {
            report.notes.push(format!(
                "the log is not checked past {key}, which cannot be read as a manifest"
            ));
            break;
        }
        let at = Checkpointed {
            key: crate::store::checkpoint_key_for(key),
            seq: *seq,
            row: rows.get(seq),
        };
        if let Some(text) = check_one(store, ledger, &at, &range, &keys, &mut report).await? {
            check_tokens(store, &at.key, &text, &tokens, &mut report).await?;
        }
    }
    report.leaves = range.size();
    for seq in rows.keys().filter(|s| !manifests.contains_key(s)) {
        report.problems.push(format!(
            "the ledger has checkpoint {seq} but the store has no manifest {seq} under {}",
            store.manifests_prefix()
        ));
    }
    Ok(report)
}

/// Every public key the bucket keeps for checkpoints.
async fn public_keys(
    store: &Store,
    report: &mut LogReport,
) -> Result<Vec<VerifierKey>, CheckError> {
    let prefix = format!("{}/keys", store.manifests_prefix());
    let mut keys = Vec::new();
    for listed in store.list(&prefix).await? {
        let Some(text) = read_text(store, &listed.key).await? else {
            continue;
        };
        match VerifierKey::parse(&text, &listed.key) {
            Ok(key) => {
                report.public_keys.push(key.to_text());
                keys.push(key);
            }
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    Ok(keys)
}

/// Appends a manifest's lines as stored; false when it is not a readable manifest (the
/// chain check reports why).
async fn append_manifest(
    store: &Store,
    key: &str,
    range: &mut CompactRange,
    report: &mut LogReport,
) -> Result<bool, CheckError> {
    let Some(mut body) = store.read(key).await? else {
        return Ok(false);
    };
    let mut lines = LineSplitter::default();
    let mut header = true;
    while let Some(chunk) = body.try_next().await? {
        let Ok(complete) = lines.push(&chunk) else {
            report
                .problems
                .push(format!("{key}: a line too long for a manifest"));
            return Ok(false);
        };
        for line in complete {
            if !std::mem::replace(&mut header, false) {
                range.append(leaf_hash(&line));
            }
        }
    }
    Ok(lines.finish().is_none())
}

/// Checks the tokens beside a checkpoint: each must stamp the checkpoint's bytes and carry
/// a valid signature (whose authority it trusts is the reader's choice: `export verify
/// --tsa-roots`).
async fn check_tokens(
    store: &Store,
    checkpoint_key: &str,
    text: &str,
    tokens: &[String],
    report: &mut LogReport,
) -> Result<(), CheckError> {
    let imprint = super::stamp::imprint(text);
    let prefix = format!("{checkpoint_key}.");
    for key in tokens.iter().filter(|k| k.starts_with(&prefix)) {
        let Some(token) = super::log::read_bytes(store, key).await? else {
            continue;
        };
        report.tokens += 1;
        if let Err(e) = super::tsa::verify_token(&token, &imprint, None, None) {
            report.problems.push(format!("{key}: {e}"));
        }
    }
    Ok(())
}

/// A manifest's checkpoint: where it is, and what the ledger recorded of it.
struct Checkpointed<'a> {
    key: String,
    seq: i64,
    row: Option<&'a CheckpointRow>,
}

/// Checks a manifest's checkpoint against the tree recomputed up to it; its text, when
/// the store holds it (for the tokens beside it).
async fn check_one(
    store: &Store,
    ledger: &Ledger,
    at: &Checkpointed<'_>,
    range: &CompactRange,
    keys: &[VerifierKey],
    report: &mut LogReport,
) -> Result<Option<String>, CheckError> {
    let (key, seq, row) = (&at.key, at.seq, at.row);
    let Some(text) = read_text(store, key).await? else {
        match row {
            Some(_) => report.problems.push(format!(
                "{key} is missing from the store, though the ledger recorded it"
            )),
            None => report.notes.push(format!(
                "manifest {seq} has no checkpoint yet (the next pass writes it)"
            )),
        }
        return Ok(None);
    };
    report.checkpoints_checked += 1;
    let read = match SignedCheckpoint::parse(&text) {
        Ok(read) => read,
        Err(e) => {
            report.problems.push(format!("{key}: {e}"));
            return Ok(Some(text));
        }
    };
    let (size, root) = (range.size(), range.root());
    if read.checkpoint.size != size || read.checkpoint.root != root {
        report.problems.push(format!(
            "{key} names a tree of {} leaves with root {}, but the manifests in the store give {size} leaves with root {}: the log was rewritten, or a manifest changed",
            read.checkpoint.size,
            hex::encode(read.checkpoint.root),
            hex::encode(root)
        ));
    }
    match read.verify(keys) {
        Ok(_) => report.signed += 1,
        Err(CheckpointError::Unsigned) => report.unsigned += 1,
        Err(e) => report.problems.push(format!("{key}: {e}")),
    }
    if let Some(row) = row {
        if row.text != text {
            report.problems.push(format!(
                "{key} in the store differs from the ledger's copy of it"
            ));
        }
        let wanted = Wanted::Root { size: row.size };
        let ids = merkle::needed(wanted).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        let nodes = ledger.log_nodes(&ids).await?;
        match merkle::prove(wanted, &nodes) {
            Ok(r) if r.first() == Some(&root) => {}
            Ok(_) => report.problems.push(format!(
                "the ledger's log nodes give another root than {key}: proofs from this ledger would not verify (rebuild it from the store)"
            )),
            Err(e) => report.problems.push(format!("the ledger's log for {key}: {e}")),
        }
    }
    Ok(Some(text))
}
