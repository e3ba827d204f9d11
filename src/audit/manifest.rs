//! Writing the manifest chain at the end of a pass: claim the chain head in the ledger,
//! stream every archived record and every erasure not yet in a manifest into a JSON-lines
//! object that names its predecessor's SHA-256, then record it as written. A head left unwritten by a killed
//! run is taken over and written first, with the same records and the same bytes.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::format::{
    MANIFEST_CONTENT_TYPE, MANIFEST_FORMAT, ManifestEntry, ManifestErasure, ManifestHeader,
    ManifestLine,
};
use crate::clock::Clock;
use crate::domain::{CallUuid, RunId};
use crate::lease::Lease;
use crate::ledger::Ledger;
use crate::ledger::{ChainClaim, LedgerError, ManifestClaim};
use crate::store::{Store, StoreError, UploadError};
use crate::timefmt::to_ledger;

/// Entries read from the ledger per page while a manifest streams out.
const PAGE: i64 = 500;
/// Manifests one pass writes at most: a taken-over head, then a new one.
const MAX_PER_PASS: usize = 3;

/// A manifest this pass wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestWritten {
    pub seq: i64,
    pub key: String,
    pub entries: u64,
    pub size: u64,
    pub sha256: String,
    /// Claimed by an earlier run that did not finish it.
    pub taken_over: bool,
}

/// Why a manifest was not written; the records stay unlisted for the next pass.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("writing manifest {key}: {source}")]
    Store {
        key: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "the store already holds {0}, which the ledger has no record of: refusing to overwrite it (was the ledger restored from an older copy?)"
    )]
    Exists(String),
    #[error("writing a manifest was cancelled by shutdown")]
    Cancelled,
}

/// Writes manifests until every archived record is in one (or another run holds the head).
pub async fn write_manifests(
    ledger: &Ledger,
    store: &Store,
    owner: &RunId,
    lease: Duration,
    clock: &Clock,
    cancel: &CancellationToken,
) -> Result<Vec<ManifestWritten>, ManifestError> {
    let lease = Lease::new(lease.max(Duration::from_secs(1)));
    let mut written = Vec::new();
    for _ in 0..MAX_PER_PASS {
        if cancel.is_cancelled() {
            return Err(ManifestError::Cancelled);
        }
        let now = clock.now();
        let claim = ledger
            .claim_manifest(owner, &|seq| store.manifest_key(seq), now, lease.until(now))
            .await?;
        let claim = match claim {
            ChainClaim::Claimed(claim) => claim,
            ChainClaim::NothingNew => break,
            ChainClaim::Busy { seq, owner } => {
                tracing::info!(
                    seq,
                    ?owner,
                    "another run is writing the chain head; its records wait for the next manifest"
                );
                break;
            }
        };
        let seq = claim.seq;
        let renewer = lease.keep(clock, "the manifest chain's head", |until| {
            ledger.renew_manifest(seq, owner, until)
        });
        let result = tokio::select! {
            result = write_one(ledger, store, owner, &claim, clock, cancel) => result,
            never = renewer => match never {},
        };
        match result {
            Ok(manifest) => {
                tracing::info!(key = %manifest.key, entries = manifest.entries, sha256 = %manifest.sha256, "manifest written");
                written.push(manifest);
            }
            Err(err) => {
                if let Err(e) = ledger.release_manifest(seq, owner).await {
                    tracing::warn!(seq, error = %e, "could not release the chain head");
                }
                return Err(err);
            }
        }
    }
    Ok(written)
}

async fn write_one(
    ledger: &Ledger,
    store: &Store,
    owner: &RunId,
    claim: &ManifestClaim,
    clock: &Clock,
    cancel: &CancellationToken,
) -> Result<ManifestWritten, ManifestError> {
    let key = claim.key.clone();
    let store_err = |source| ManifestError::Store {
        key: key.clone(),
        source,
    };
    // A fresh head must be new to the store too; a taken-over one may have been written
    // (with these very bytes) by the run that died.
    if !claim.taken_over && store.size_of(&key).await.map_err(store_err)?.is_some() {
        return Err(ManifestError::Exists(key));
    }
    let header = ManifestHeader {
        format: MANIFEST_FORMAT.into(),
        account: Some(ledger.account().to_string()),
        seq: claim.seq,
        run_id: claim.run_id.to_string(),
        created_at: to_ledger(claim.created_at),
        entries: claim.entries,
        previous: claim.previous.as_ref().map(Into::into),
    };
    let uploaded = store
        .put_stream(
            &key,
            Box::pin(body(ledger.clone(), claim.seq, header)),
            MANIFEST_CONTENT_TYPE,
            cancel,
        )
        .await
        .map_err(|e| match e {
            UploadError::Source(e) => ManifestError::Ledger(e),
            UploadError::Store(e) => store_err(e),
            UploadError::Cancelled => ManifestError::Cancelled,
        })?;
    if !ledger
        .manifest_written(
            claim.seq,
            owner,
            &uploaded.sha256,
            uploaded.size,
            clock.now(),
        )
        .await?
    {
        tracing::warn!(
            key,
            "another run took the chain head over meanwhile; it writes the same bytes"
        );
    }
    Ok(ManifestWritten {
        seq: claim.seq,
        key,
        entries: claim.entries,
        size: uploaded.size,
        sha256: uploaded.sha256,
        taken_over: claim.taken_over,
    })
}

/// The manifest's bytes: the header line, then the archived records page by page from the
/// ledger, then the erasures it lists (`{"erased":{…}}` lines).
fn body(
    ledger: Ledger,
    seq: i64,
    header: ManifestHeader,
) -> impl futures::Stream<Item = Result<Bytes, LedgerError>> + Send {
    let header = futures::stream::once(async move { Ok(json_line(&header)) });
    let account = ledger.account().to_string();
    let for_erasures = account.clone();
    let for_entries = ledger.clone();
    let entries = futures::stream::try_unfold(None::<CallUuid>, move |after| {
        let ledger = for_entries.clone();
        let account = account.clone();
        async move {
            let page = ledger.manifest_entries(seq, after.as_ref(), PAGE).await?;
            let Some(last) = page.last().map(|e| e.uuid.clone()) else {
                return Ok(None);
            };
            let mut buf = Vec::with_capacity(page.len() * 256);
            for entry in &page {
                buf.extend_from_slice(&json_line(&ManifestEntry {
                    account: Some(account.clone()),
                    ..ManifestEntry::from(entry)
                }));
            }
            Ok(Some((Bytes::from(buf), Some(last))))
        }
    });
    let erasures = futures::stream::try_unfold(None::<CallUuid>, move |after| {
        let ledger = ledger.clone();
        let account = for_erasures.clone();
        async move {
            let page = ledger.manifest_erasures(seq, after.as_ref(), PAGE).await?;
            let Some(last) = page.last().map(|t| t.uuid.clone()) else {
                return Ok(None);
            };
            let mut buf = Vec::with_capacity(page.len() * 384);
            for tombstone in &page {
                buf.extend_from_slice(&json_line(&ManifestLine::Erased {
                    erased: ManifestErasure {
                        account: Some(account.clone()),
                        ..ManifestErasure::from(tombstone)
                    },
                }));
            }
            Ok(Some((Bytes::from(buf), Some(last))))
        }
    });
    header.chain(entries).chain(erasures)
}

fn json_line<T: Serialize>(value: &T) -> Bytes {
    let mut line = serde_json::to_vec(value).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}
