//! `callvault export`: the chosen calls of each account gathered with their proofs
//! (`gather`), the export written to the access log before any byte leaves, then every file
//! of the bundle (`docs/proof-format.md`, section 4) put through one [`BundleSink`], each
//! file hashed as it goes so that `SHA256SUMS` lists them all. Any failure abandons the
//! bundle: a half-written one is removed, never handed over.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::format::{BundleInfo, SUMS, SUMS_SIG, SUMS_TSR};
use super::gather::{AccountPart, gather};
use super::sink::{Body, BundleSink, open_sink};
use crate::accounts::AccountName;
use crate::ledger::{AccessAction, CallQuery, Ledger, LedgerError};
use crate::proof::keys::KeyError;
use crate::retrieve::Requester;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("reading {key} from the store: {source}")]
    Store {
        key: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("writing {path}: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {why}")]
    Archive { path: PathBuf, why: String },
    #[error("{0} already exists and is not an empty directory: choose a new place for the bundle")]
    OutExists(PathBuf),
    #[error("{0:?} cannot be a path in a bundle")]
    BadPath(String),
    #[error(transparent)]
    Mismatch(Box<Mismatch>),
    #[error(
        "the recording of call {uuid} (account {account}, {key}) is missing from the store; nothing was exported (run `callvault verify`)"
    )]
    Missing {
        account: String,
        uuid: String,
        key: String,
    },
    #[error("the Merkle log cannot prove the export: {0} (run `callvault verify --manifests`)")]
    Log(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{0}")]
    Config(String),
}

/// A recording that is not the one archived.
#[derive(Debug, thiserror::Error)]
#[error(
    "the recording of call {uuid} (account {account}, {key}) is not the one archived: SHA-256 {found} ({found_size} bytes), archived {expected} ({expected_size} bytes); nothing was exported (run `callvault verify`)"
)]
pub struct Mismatch {
    pub account: String,
    pub uuid: String,
    pub key: String,
    pub expected: String,
    pub expected_size: u64,
    pub found: String,
    pub found_size: u64,
}

impl ExportError {
    pub fn store(key: &str, source: StoreError) -> Self {
        Self::Store {
            key: key.to_owned(),
            source: Box::new(source),
        }
    }

    /// A problem with what was asked (exit 2), not with the archive.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::OutExists(_) | Self::Key(_) | Self::Config(_) | Self::BadPath(_)
        ) || matches!(
            self,
            Self::Store { source, .. }
                if matches!(**source, StoreError::Config(_) | StoreError::Refused { .. })
        )
    }
}

/// What to export and how.
pub struct ExportRequest {
    pub out: PathBuf,
    pub who: Requester,
    pub reason: String,
    /// The call-choosing flags as given, for `bundle.json`.
    pub selection: serde_json::Value,
    pub query: CallQuery,
    pub with_recordings: bool,
    pub load_file_dat: bool,
    /// The operator's key that signs `SHA256SUMS`, and the authorities that date it.
    pub prover: crate::proof::Prover,
    /// The provider's zone (the calls' days) and its retention (the completeness report).
    pub tz: FixedOffset,
    pub retention: chrono::Duration,
    pub now: DateTime<Utc>,
}

/// One account's ledger and store.
pub struct AccountSource {
    pub name: AccountName,
    pub ledger: Ledger,
    pub store: Store,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportReport {
    pub out: PathBuf,
    pub calls: u64,
    pub accounts: Vec<String>,
    pub files: u64,
    pub bytes: u64,
    pub recordings: u64,
    /// Chosen calls left out: not archived, or not yet in a logged manifest.
    pub left_out: u64,
    pub notes: Vec<String>,
}

/// The bundle being written: the sink, and every file's SHA-256 for `SHA256SUMS`.
pub struct Bundle {
    sink: Box<dyn BundleSink>,
    sums: Vec<(String, String)>,
    pub bytes: u64,
}

impl Bundle {
    /// Puts a small file.
    pub async fn put(&mut self, path: &str, bytes: Vec<u8>) -> Result<(), ExportError> {
        self.sums
            .push((path.to_owned(), hex::encode(Sha256::digest(&bytes))));
        self.bytes += bytes.len() as u64;
        self.sink.put_bytes(path, bytes).await
    }

    /// Puts JSON lines.
    pub async fn put_lines<T: Serialize>(
        &mut self,
        path: &str,
        lines: &[T],
    ) -> Result<(), ExportError> {
        let mut text = Vec::new();
        for line in lines {
            serde_json::to_writer(&mut text, line).map_err(|e| ExportError::Archive {
                path: path.into(),
                why: e.to_string(),
            })?;
            text.push(b'\n');
        }
        self.put(path, text).await
    }

    /// Streams a file in, hashing on the way; its size and SHA-256 as streamed.
    pub async fn put_stream(
        &mut self,
        path: &str,
        size: u64,
        body: BoxStream<'static, Result<Bytes, StoreError>>,
    ) -> Result<(u64, String), ExportError> {
        let tally = Arc::new(Mutex::new((Sha256::new(), 0u64)));
        let counted = {
            let tally = Arc::clone(&tally);
            body.map(move |chunk| {
                let chunk = chunk.map_err(std::io::Error::other)?;
                if let Ok(mut t) = tally.lock() {
                    t.0.update(&chunk);
                    t.1 += chunk.len() as u64;
                }
                Ok(chunk)
            })
        };
        self.sink
            .put_stream(path, size, Box::pin(counted) as Body)
            .await?;
        let (hasher, streamed) =
            std::mem::take(&mut *tally.lock().map_err(|_| ExportError::Archive {
                path: path.into(),
                why: "hashing failed".into(),
            })?);
        let sha256 = hex::encode(hasher.finalize());
        self.sums.push((path.to_owned(), sha256.clone()));
        self.bytes += streamed;
        Ok((streamed, sha256))
    }

    pub fn files(&self) -> u64 {
        self.sums.len() as u64
    }

    /// `SHA256SUMS`: every file so far, sorted by path, in `sha256sum` format.
    fn sums_text(&self) -> Vec<u8> {
        let mut sums = self.sums.clone();
        sums.sort();
        sums.iter()
            .map(|(path, sha)| format!("{sha}  {path}\n"))
            .collect::<String>()
            .into_bytes()
    }
}

/// An RFC 3161 token over `sums` (`SHA256SUMS.tsr`) from the first configured authority
/// that gives one; none (logged) when none does: the bundle's own proofs stand without it.
pub async fn stamp_sums(
    stamper: Option<&crate::proof::stamp::Stamper>,
    sums: &[u8],
) -> Option<Vec<u8>> {
    let stamper = stamper?;
    let imprint: [u8; 32] = sha2::Sha256::digest(sums).into();
    match stamper.stamp_any(&imprint).await {
        Ok(token) => Some(token),
        Err(e) => {
            tracing::warn!(error = %e, "the bundle's SHA256SUMS is not time-stamped");
            None
        }
    }
}

/// Writes the bundle of the calls `request` chooses in `accounts`.
pub async fn export(
    request: &ExportRequest,
    accounts: &[AccountSource],
) -> Result<ExportReport, ExportError> {
    let mut parts = Vec::new();
    for source in accounts {
        parts.push(gather(request, source).await?);
    }
    parts.sort_by(|a, b| a.account.cmp(&b.account));
    let (left_out, notes): (u64, Vec<String>) = (
        parts.iter().map(|p| p.left_out).sum(),
        parts.iter().flat_map(|p| p.notes.clone()).collect(),
    );
    parts.retain(|p| !p.calls.is_empty());
    if parts.is_empty() {
        return Err(ExportError::Config(format!(
            "no call the archive can prove matches the choice ({left_out} matching call(s) not archived or not yet logged): nothing exported"
        )));
    }
    log_export(request, accounts, &parts).await?;
    let mut bundle = Bundle {
        sink: open_sink(&request.out)?,
        sums: Vec::new(),
        bytes: 0,
    };
    let mut report = ExportReport {
        out: request.out.clone(),
        calls: parts.iter().map(|p| p.calls.len() as u64).sum(),
        accounts: parts.iter().map(|p| p.account.clone()).collect(),
        left_out,
        notes,
        ..ExportReport::default()
    };
    match write_all(request, accounts, &parts, &mut report, &mut bundle).await {
        Ok(()) => {
            if let Err(e) = finish(request, &mut bundle).await {
                bundle.sink.abandon().await;
                return Err(e);
            }
            report.files = bundle.files();
            report.bytes = bundle.bytes;
            bundle.sink.finish().await?;
            Ok(report)
        }
        Err(e) => {
            bundle.sink.abandon().await;
            Err(e)
        }
    }
}

/// The export in each account's access log (who, when, which calls, why), before any byte
/// is written.
async fn log_export(
    request: &ExportRequest,
    accounts: &[AccountSource],
    parts: &[AccountPart],
) -> Result<(), ExportError> {
    let query = format!("out={}", request.out.display());
    for part in parts {
        let Some(source) = accounts.iter().find(|s| s.name.as_str() == part.account) else {
            continue;
        };
        let calls = part.calls.iter().map(|c| c.call.uuid.clone()).collect();
        let entry = request
            .who
            .entry(AccessAction::Export, Some(query.clone()), calls);
        source.ledger.log_access(&entry).await?;
    }
    Ok(())
}

async fn write_all(
    request: &ExportRequest,
    accounts: &[AccountSource],
    parts: &[AccountPart],
    report: &mut ExportReport,
    bundle: &mut Bundle,
) -> Result<(), ExportError> {
    report.recordings = super::files::recordings(request, accounts, parts, bundle).await?;
    super::files::proofs(parts, bundle).await?;
    super::files::audit(accounts, parts, bundle).await?;
    super::files::completeness(request, accounts, parts, bundle).await?;
    super::files::object_lock(parts, bundle).await?;
    super::files::calls(request, parts, bundle).await?;
    let info = BundleInfo {
        format: super::format::BUNDLE_FORMAT.to_owned(),
        created_at: crate::timefmt::to_ledger(request.now),
        actor: request.who.actor.clone(),
        reason: request.reason.clone(),
        selection: request.selection.clone(),
        calls: report.calls,
        accounts: report.accounts.clone(),
        with_recordings: request.with_recordings,
        callvault_version: env!("CARGO_PKG_VERSION").to_owned(),
        notes: super::readme::trust_notes(request.prover.signer().is_some())
            .into_iter()
            .chain(report.notes.iter().cloned())
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&info).unwrap_or_default();
    bundle.put(super::format::BUNDLE_JSON, json).await?;
    let readme = super::readme::text(&info, request.prover.signer());
    bundle.put(super::format::README, readme.into_bytes()).await
}

/// `SHA256SUMS`, its signature with the export's key, and its time-stamp (when the hook
/// gives one): written last, not listed in `SHA256SUMS` itself.
async fn finish(request: &ExportRequest, bundle: &mut Bundle) -> Result<(), ExportError> {
    let sums = bundle.sums_text();
    bundle.sink.put_bytes(SUMS, sums.clone()).await?;
    if let Some(key) = request.prover.signer() {
        let signature = key.sign(&sums);
        bundle.sink.put_bytes(SUMS_SIG, signature.to_vec()).await?;
    }
    if let Some(token) = stamp_sums(request.prover.stamper(), &sums).await {
        bundle.sink.put_bytes(SUMS_TSR, token).await?;
    }
    Ok(())
}
