//! Everything one account contributes to a bundle, read before the first byte is written:
//! the chosen calls the log can prove (archived or erased, in a logged manifest), their
//! leaves and proofs, the checkpoints concerned as the bucket holds them with their tokens
//! and signers' keys, and what the store says about each object's lock. A call the log
//! cannot prove yet (not archived, or in no logged manifest) is left out and counted.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::TryStreamExt;

use super::format::{ConsistencyLine, Leaf, ObjectFacts, RetentionFact, checkpoint_path};
use super::proofs::{self, LeafKind, WantedLines};
use super::write::{AccountSource, ExportError, ExportRequest};
use crate::domain::{CallUuid, RecordState};
use crate::ledger::{CallCursor, CheckpointRow, ExportCall, HoldEvent, MAX_PAGE, Tombstone};
use crate::proof::checkpoint::SignedCheckpoint;
use crate::proof::keys::VerifierKey;
use crate::store::Store;

/// One chosen call with what the bundle says of it.
pub struct ExportedCall {
    pub call: ExportCall,
    pub tombstone: Option<Tombstone>,
    pub leaves: Vec<Leaf>,
    pub holds: Vec<HoldEvent>,
    pub object: Option<ObjectFacts>,
}

/// A file of the bundle with its bytes.
pub struct BundleFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// One account's part of the bundle.
pub struct AccountPart {
    pub account: String,
    /// By first leaf index.
    pub calls: Vec<ExportedCall>,
    /// Checkpoints, their tokens, the signers' keys (`.pub` and `.pem`).
    pub files: Vec<BundleFile>,
    pub consistency: Vec<ConsistencyLine>,
    /// The bucket's Object Lock: `Some(enabled)`, or `None` where the store cannot say.
    pub object_lock: Option<bool>,
    pub store: String,
    pub left_out: u64,
    pub notes: Vec<String>,
}

/// Every uuid `request`'s query chooses in this account, page by page.
async fn chosen(
    source: &AccountSource,
    request: &ExportRequest,
) -> Result<Vec<CallUuid>, ExportError> {
    let mut query = request.query.clone();
    query.limit = MAX_PAGE;
    let mut uuids = Vec::new();
    loop {
        let page = source.ledger.find_calls(&query).await?;
        uuids.extend(page.iter().map(|c| c.uuid.clone()));
        match page.last() {
            Some(last) if page.len() == MAX_PAGE as usize => {
                query.after = Some(CallCursor::after(last));
            }
            _ => return Ok(uuids),
        }
    }
}

/// The calls the log can prove, the lines that prove them, and how many were left out.
struct Provable {
    calls: Vec<(ExportCall, Option<Tombstone>)>,
    wanted: WantedLines,
    left_out: u64,
}

async fn classify(
    ledger: &crate::ledger::Ledger,
    uuids: &[CallUuid],
    checkpoints: &BTreeMap<i64, CheckpointRow>,
) -> Result<Provable, ExportError> {
    let mut chosen = Provable {
        calls: Vec::new(),
        wanted: WantedLines::new(),
        left_out: 0,
    };
    for call in ledger.export_calls(uuids).await? {
        let Some((lines, tombstone)) = provable(ledger, &call, checkpoints).await? else {
            chosen.left_out += 1;
            continue;
        };
        for (seq, kind) in lines {
            let calls = chosen.wanted.entry(seq).or_default();
            calls.push((call.uuid.clone(), kind));
        }
        chosen.calls.push((call, tombstone));
    }
    Ok(chosen)
}

pub async fn gather(
    request: &ExportRequest,
    source: &AccountSource,
) -> Result<AccountPart, ExportError> {
    let account = source.name.as_str().to_owned();
    let ledger = &source.ledger;
    let uuids = chosen(source, request).await?;
    let checkpoints: BTreeMap<i64, CheckpointRow> = ledger
        .checkpoints()
        .await?
        .into_iter()
        .map(|c| (c.seq, c))
        .collect();
    let chosen = classify(ledger, &uuids, &checkpoints).await?;
    let leaves = proofs::leaves(
        ledger,
        &source.store,
        &account,
        &checkpoints,
        &chosen.wanted,
    );
    let leaves = leaves.await?;
    let (object_lock, mut notes) = match source.store.object_lock_enabled().await {
        Ok(v) => (v, Vec::new()),
        Err(e) => (
            None,
            vec![format!(
                "account {account}: the store's Object Lock configuration could not be read: {e}"
            )],
        ),
    };
    let exported = describe(source, chosen.calls, leaves, object_lock).await?;
    if chosen.left_out > 0 {
        notes.push(format!(
            "account {account}: {} chosen call(s) left out: not archived, or not yet in a manifest the log holds (a later `callvault run` logs them)",
            chosen.left_out
        ));
    }
    let mut part = AccountPart {
        account,
        calls: exported,
        files: Vec::new(),
        consistency: Vec::new(),
        object_lock,
        store: source.store.description().to_owned(),
        left_out: chosen.left_out,
        notes,
    };
    if !part.calls.is_empty() {
        checkpoints_part(source, &mut part, &checkpoints).await?;
    }
    Ok(part)
}

/// Each call with its leaves, holds and object, by first leaf index.
async fn describe(
    source: &AccountSource,
    calls: Vec<(ExportCall, Option<Tombstone>)>,
    mut leaves: HashMap<CallUuid, Vec<Leaf>>,
    object_lock: Option<bool>,
) -> Result<Vec<ExportedCall>, ExportError> {
    let kept: Vec<CallUuid> = calls.iter().map(|(c, _)| c.uuid.clone()).collect();
    let mut holds: HashMap<CallUuid, Vec<HoldEvent>> = HashMap::new();
    for event in source.ledger.hold_events(&kept).await? {
        let of_call = holds.entry(event.call_uuid.clone()).or_default();
        of_call.push(event);
    }
    let mut exported = Vec::with_capacity(calls.len());
    for (call, tombstone) in calls {
        let object = object_facts(&source.store, &call, object_lock).await?;
        exported.push(ExportedCall {
            leaves: leaves.remove(&call.uuid).unwrap_or_default(),
            holds: holds.remove(&call.uuid).unwrap_or_default(),
            call,
            tombstone,
            object,
        });
    }
    exported.sort_by_key(|c| c.leaves.first().map_or(u64::MAX, |l| l.index));
    Ok(exported)
}

/// The checkpoints concerned (and the newest), their consistency proofs, tokens and keys.
async fn checkpoints_part(
    source: &AccountSource,
    part: &mut AccountPart,
    checkpoints: &BTreeMap<i64, CheckpointRow>,
) -> Result<(), ExportError> {
    let Some(newest) = checkpoints.values().next_back() else {
        return Ok(());
    };
    let concerned: BTreeSet<i64> = part
        .calls
        .iter()
        .flat_map(|c| c.leaves.iter().map(|l| l.manifest.seq))
        .collect();
    let mut rows: Vec<&CheckpointRow> = concerned
        .iter()
        .filter_map(|s| checkpoints.get(s))
        .collect();
    part.consistency = proofs::consistency(&source.ledger, &part.account, &rows, newest).await?;
    if !concerned.contains(&newest.seq) {
        rows.push(newest);
    }
    checkpoint_files(source, part, &rows).await
}

/// The manifest lines that prove `call` (seq and kind), and its tombstone; `None` when the
/// log cannot prove it yet.
async fn provable(
    ledger: &crate::ledger::Ledger,
    call: &ExportCall,
    checkpoints: &BTreeMap<i64, CheckpointRow>,
) -> Result<Option<(Vec<(i64, LeafKind)>, Option<Tombstone>)>, ExportError> {
    let logged = |seq: Option<i64>| seq.filter(|s| checkpoints.contains_key(s));
    let Some(archived) = logged(call.manifest_seq) else {
        return Ok(None);
    };
    match call.state {
        RecordState::Archived => Ok(Some((vec![(archived, LeafKind::Archived)], None))),
        RecordState::Erased => {
            let tombstone = ledger.tombstone(&call.uuid).await?;
            let Some(erased) = logged(tombstone.as_ref().and_then(|t| t.manifest_seq)) else {
                return Ok(None);
            };
            let lines = vec![(archived, LeafKind::Archived), (erased, LeafKind::Erased)];
            Ok(Some((lines, tombstone)))
        }
        _ => Ok(None),
    }
}

/// The stored object as archived, with its lock as the store reports it now (`null`
/// fields where the store has no Object Lock).
async fn object_facts(
    store: &Store,
    call: &ExportCall,
    object_lock: Option<bool>,
) -> Result<Option<ObjectFacts>, ExportError> {
    let (Some(key), Some(sha256), RecordState::Archived) =
        (&call.object_key, &call.sha256, call.state)
    else {
        return Ok(None);
    };
    let lock = match object_lock {
        Some(true) => store
            .version_lock(key, call.object_version.as_deref())
            .await
            .map_err(|source| ExportError::store(key, source))?,
        _ => None,
    };
    Ok(Some(ObjectFacts {
        key: key.clone(),
        version: call.object_version.clone(),
        size: u64::try_from(call.size_bytes.unwrap_or(0)).unwrap_or(0),
        sha256: sha256.clone(),
        retention: lock.and_then(|l| l.retention).map(|r| RetentionFact {
            mode: r.mode.to_string().to_ascii_uppercase(),
            retain_until: r.until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }),
        legal_hold: lock.map(|l| l.legal_hold),
    }))
}

/// A small object read whole; `None` when absent.
async fn read_small(store: &Store, key: &str) -> Result<Option<Vec<u8>>, ExportError> {
    let Some(body) = store
        .read(key)
        .await
        .map_err(|source| ExportError::store(key, source))?
    else {
        return Ok(None);
    };
    let chunks: Vec<bytes::Bytes> = body
        .try_collect()
        .await
        .map_err(|source| ExportError::store(key, source))?;
    Ok(Some(chunks.concat()))
}

/// The checkpoints `rows` byte for byte as the bucket holds them (the ledger's copy where
/// the bucket lacks one, said in a note), their tokens, and their signers' public keys.
async fn checkpoint_files(
    source: &AccountSource,
    part: &mut AccountPart,
    rows: &[&CheckpointRow],
) -> Result<(), ExportError> {
    let (store, account) = (&source.store, part.account.clone());
    let stamps = source.ledger.stamps().await?;
    let mut signers = BTreeSet::new();
    for row in rows {
        let path = checkpoint_path(&account, row.seq);
        let bytes = match read_small(store, &row.key).await? {
            Some(bytes) => bytes,
            None => {
                part.notes.push(format!(
                    "{path}: not in the bucket; the ledger's copy is given"
                ));
                row.text.clone().into_bytes()
            }
        };
        if let Ok(parsed) = SignedCheckpoint::parse(&String::from_utf8_lossy(&bytes)) {
            signers.extend(
                parsed
                    .signatures
                    .iter()
                    .map(|s| format!("{}+{}.pub", s.name, hex::encode(s.key_id))),
            );
        }
        part.files.push(BundleFile {
            path: path.clone(),
            bytes,
        });
        for stamp in stamps.iter().filter(|s| s.seq == row.seq) {
            let name = stamp.key.rsplit('/').next().unwrap_or_default();
            let token_path = format!("{}/{account}/{name}", super::format::CHECKPOINTS_DIR);
            let bytes = match read_small(store, &stamp.key).await? {
                Some(bytes) => bytes,
                None => {
                    part.notes.push(format!(
                        "{token_path}: not in the bucket; the ledger's copy is given"
                    ));
                    stamp.token.clone()
                }
            };
            part.files.push(BundleFile {
                path: token_path,
                bytes,
            });
        }
    }
    for file in signers {
        key_files(store, part, &file).await?;
    }
    Ok(())
}

/// A signer's public key from the bucket, as text and as PEM.
async fn key_files(store: &Store, part: &mut AccountPart, file: &str) -> Result<(), ExportError> {
    let key = store.public_key_key(file);
    let Some(bytes) = read_small(store, &key).await? else {
        part.notes.push(format!(
            "the public key {file} that signed checkpoints of account {} is not in the bucket",
            part.account
        ));
        return Ok(());
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let dir = super::format::KEYS_DIR;
    if let Some(parsed) = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| VerifierKey::parse(l.trim(), file).ok())
    {
        let pem = file.strip_suffix(".pub").unwrap_or(file);
        part.files.push(BundleFile {
            path: format!("{dir}/{pem}.pem"),
            bytes: parsed.to_pem().into_bytes(),
        });
    }
    part.files.push(BundleFile {
        path: format!("{dir}/{file}"),
        bytes,
    });
    Ok(())
}
