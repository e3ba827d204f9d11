//! One claimed record, start to end: fresh link → download → streamed upload → checks →
//! settle in the ledger. Returns the outcome; only a reason to stop the run is an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::Utc;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::checks::{MediaInfo, checked_body};
use super::resume::{Reopen, resuming};
use super::{Deps, RunError, RunOptions};
use crate::archive::report::RecordOutcome;
use crate::domain::{ArchivedObject, AttemptOutcome, CallUuid, Claim, RunId};
use crate::ledger::{AttemptEnd, MediaNote, Settlement};
use crate::provider::{Action, DownloadError};
use crate::store::{Sidecar, UploadError, UploadMeta};

/// Why one attempt did not archive the record, by what to do next.
enum Failure {
    /// Try again (later in this run, or in a later run).
    Transient { code: String, message: String },
    /// The recording cannot be had; `gone` when the provider no longer has it (which past
    /// the retention horizon means expired, not failed).
    Permanent {
        code: String,
        message: String,
        gone: bool,
    },
    /// The provider refuses our credentials: stop the run, blame no record.
    StopRun(RunError),
    /// Shutdown: give the record back.
    Cancelled,
}

impl From<crate::provider::ProviderError> for Failure {
    fn from(err: crate::provider::ProviderError) -> Self {
        let (code, message) = (err.code(), err.to_string());
        let gone = matches!(err, crate::provider::ProviderError::FileNotFound { .. });
        match err.action() {
            Action::StopRun => Failure::StopRun(RunError::CredentialsRefused(err)),
            Action::GiveUp => Failure::Permanent {
                code,
                message,
                gone,
            },
            Action::Retry | Action::Relogin => Failure::Transient { code, message },
        }
    }
}

impl From<DownloadError> for Failure {
    fn from(err: DownloadError) -> Self {
        let (code, message) = (err.code(), err.to_string());
        if err.is_permanent() {
            // The only permanent download failure is the file being gone (404/410).
            Failure::Permanent {
                code,
                message,
                gone: true,
            }
        } else {
            Failure::Transient { code, message }
        }
    }
}

impl From<UploadError> for Failure {
    fn from(err: UploadError) -> Self {
        match err {
            UploadError::Source(e) => e.into(),
            UploadError::Cancelled => Failure::Cancelled,
            UploadError::Store(e) => Failure::Transient {
                code: e.code().into(),
                message: e.to_string(),
            },
        }
    }
}

/// Works on one claim until it is settled; retries passing failures within the run.
pub(super) async fn process(
    deps: &Deps,
    opts: &RunOptions,
    run_id: &RunId,
    claim: Claim,
) -> Result<RecordOutcome, RunError> {
    let record = &claim.record;
    let uuid = &record.uuid;
    let ledger = Settler { deps, run_id, uuid };
    let key = match deps.keys.render(record) {
        Ok(key) => key,
        Err(e) => {
            let message = e.to_string();
            let failed = Settlement::Failed {
                code: "key_unsafe",
                message: &message,
            };
            let end = AttemptEnd {
                id: claim.attempt,
                outcome: AttemptOutcome::Failed,
                error_code: Some("key_unsafe"),
                message: Some(&message),
                bytes: 0,
            };
            return ledger
                .settle(&failed, Some(&end), RecordOutcome::Failed)
                .await;
        }
    };
    let mut attempt_no = 0u32;
    loop {
        attempt_no += 1;
        // The claim started the first attempt in its own commit; later ones start here.
        let id = if attempt_no == 1 {
            claim.attempt
        } else {
            deps.ledger.begin_attempt(uuid, run_id, Utc::now()).await?
        };
        let result = attempt(deps, opts, run_id, &claim, &key).await;
        let total_attempts = claim.previous_attempts + i64::from(attempt_no);
        // Every outcome but a passing failure settles the record and returns.
        let (code, message) = match result {
            Ok((object, media, resumes)) => {
                let bytes = object.size;
                tracing::info!(%uuid, key = %object.key, bytes, sha256 = %object.sha256, resumes, "archived");
                let resumed = (resumes > 0).then(|| format!("resumed {resumes} time(s)"));
                let note = media.and_then(|m| m.disagreement(record.billsec));
                if let Some(note) = &note {
                    tracing::warn!(%uuid, note, "archived, but flagged");
                }
                let media_note = MediaNote {
                    duration_ms: media
                        .and_then(|m| m.duration)
                        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                    note: note.clone(),
                };
                let end = AttemptEnd {
                    id,
                    outcome: AttemptOutcome::Archived,
                    error_code: None,
                    message: resumed.as_deref(),
                    bytes,
                };
                return ledger
                    .settle(
                        &Settlement::Archived(&object, &media_note),
                        Some(&end),
                        RecordOutcome::Archived {
                            bytes,
                            flagged: note.is_some(),
                            resumes,
                        },
                    )
                    .await;
            }
            Err(Failure::Cancelled) => {
                let end = AttemptEnd {
                    id,
                    outcome: AttemptOutcome::Aborted,
                    error_code: Some("shutdown"),
                    message: None,
                    bytes: 0,
                };
                return ledger.release("interrupted by shutdown", Some(&end)).await;
            }
            Err(Failure::StopRun(err)) => {
                let message = err.to_string();
                let end = AttemptEnd {
                    id,
                    outcome: AttemptOutcome::Stopped,
                    error_code: Some("provider_credentials_refused"),
                    message: Some(&message),
                    bytes: 0,
                };
                ledger
                    .release(
                        "run stopped: the provider refused the credentials",
                        Some(&end),
                    )
                    .await?;
                return Err(err);
            }
            Err(Failure::Permanent {
                code,
                message,
                gone,
            }) => {
                let past_horizon = record
                    .call_start
                    .is_some_and(|t| t < Utc::now() - opts.retention);
                let (settlement, outcome, label) = if past_horizon && gone {
                    (
                        Settlement::Expired {
                            code: &code,
                            message: &message,
                        },
                        RecordOutcome::Expired,
                        AttemptOutcome::Expired,
                    )
                } else {
                    (
                        Settlement::Failed {
                            code: &code,
                            message: &message,
                        },
                        RecordOutcome::Failed,
                        AttemptOutcome::Failed,
                    )
                };
                tracing::warn!(%uuid, code, message, outcome = %label, "cannot archive");
                let end = AttemptEnd {
                    id,
                    outcome: label,
                    error_code: Some(&code),
                    message: Some(&message),
                    bytes: 0,
                };
                return ledger.settle(&settlement, Some(&end), outcome).await;
            }
            Err(Failure::Transient { code, message }) => (code, message),
        };
        let end = AttemptEnd {
            id,
            outcome: AttemptOutcome::Transient,
            error_code: Some(&code),
            message: Some(&message),
            bytes: 0,
        };
        if total_attempts >= i64::from(opts.retry.max_attempts) {
            tracing::warn!(
                %uuid,
                code,
                message,
                total_attempts,
                "giving up after too many attempts"
            );
            let message = format!("gave up after {total_attempts} attempts: {message}");
            let failed = Settlement::Failed {
                code: &code,
                message: &message,
            };
            return ledger
                .settle(&failed, Some(&end), RecordOutcome::Failed)
                .await;
        }
        if attempt_no >= opts.retry.attempts_per_run || opts.shutdown.stop_claiming.is_cancelled() {
            let per_run = i64::from(opts.retry.attempts_per_run.max(1));
            let rounds = u32::try_from(total_attempts / per_run)
                .unwrap_or(u32::MAX)
                .max(1);
            let next = Utc::now()
                + chrono::Duration::from_std(opts.retry.later(rounds)).unwrap_or_default();
            tracing::warn!(%uuid, code, message, next_attempt = %next, "leaving for a later run");
            let retry = Settlement::Retry {
                next_attempt_at: next,
                code: &code,
                message: &message,
            };
            return ledger
                .settle(&retry, Some(&end), RecordOutcome::RetryLater)
                .await;
        }
        tracing::info!(%uuid, code, message, attempt_no, "attempt failed; retrying");
        deps.ledger.finish_attempt(&end, Utc::now()).await?;
        tokio::select! {
            () = tokio::time::sleep(opts.retry.backoff(attempt_no)) => {}
            () = opts.shutdown.abort.cancelled() => return ledger.release("interrupted by shutdown", None).await,
        }
    }
}

/// Settles one claimed record in the ledger, on behalf of one run.
struct Settler<'a> {
    deps: &'a Deps,
    run_id: &'a RunId,
    uuid: &'a CallUuid,
}

impl Settler<'_> {
    /// Records the outcome; `LeaseLost` when another run took the record meanwhile.
    async fn settle(
        &self,
        settlement: &Settlement<'_>,
        attempt: Option<&AttemptEnd<'_>>,
        outcome: RecordOutcome,
    ) -> Result<RecordOutcome, RunError> {
        if self
            .deps
            .ledger
            .settle(self.uuid, self.run_id, settlement, attempt, Utc::now())
            .await?
        {
            Ok(outcome)
        } else {
            tracing::warn!(
                uuid = %self.uuid,
                "lease lost to another run; outcome not recorded"
            );
            Ok(RecordOutcome::LeaseLost)
        }
    }

    /// Gives the record back: pending, due at once.
    async fn release(
        &self,
        message: &str,
        attempt: Option<&AttemptEnd<'_>>,
    ) -> Result<RecordOutcome, RunError> {
        self.settle(
            &Settlement::Released { message },
            attempt,
            RecordOutcome::Released,
        )
        .await
    }
}

/// One attempt: a fresh link, the download streamed into the store, the checks, then the
/// sidecar (a record is archived only once its sidecar is written too).
async fn attempt(
    deps: &Deps,
    opts: &RunOptions,
    run_id: &RunId,
    claim: &Claim,
    key: &str,
) -> Result<(ArchivedObject, Option<MediaInfo>, u32), Failure> {
    let record = &claim.record;
    let abort = &opts.shutdown.abort;
    let link = tokio::select! {
        link = deps.provider.recording_link(record.record_file.trim()) => link?,
        () = abort.cancelled() => return Err(Failure::Cancelled),
    };
    tracing::debug!(uuid = %record.uuid, url = %link.url, "fresh download link");
    let download = tokio::select! {
        d = deps.downloader.open(&link) => d?,
        () = abort.cancelled() => return Err(Failure::Cancelled),
    };
    let meta = UploadMeta {
        uuid: record.uuid.to_string(),
        company_code: record.company_code.clone(),
        call_start: record.call_start,
        content_type: download.content_type.clone(),
    };
    let expected = download.content_length;
    let progress = opts.progress.clone();
    let resumes = Arc::new(AtomicU32::new(0));
    let raw = resuming(
        download.body,
        expected,
        reopen(deps, record.record_file.trim(), abort),
        Arc::clone(&resumes),
    );
    let (body, media) = checked_body(raw, expected, &record.record_file);
    let body = body.inspect(move |chunk| {
        if let Ok(bytes) = chunk {
            progress.bytes(bytes.len() as u64);
        }
    });
    let uploaded = deps.store.upload(key, Box::pin(body), &meta, abort).await?;
    if let Some(n) = expected.filter(|n| *n != uploaded.size) {
        return Err(Failure::Transient {
            code: "download_truncated".into(),
            message: format!("received {} of {n} bytes", uploaded.size),
        });
    }
    let stored = deps
        .store
        .size_of(key)
        .await
        .map_err(|e| Failure::Transient {
            code: e.code().into(),
            message: e.to_string(),
        })?;
    if stored != Some(uploaded.size) {
        return Err(Failure::Transient {
            code: "store_size_mismatch".into(),
            message: format!(
                "the store holds {stored:?} bytes, {} were received",
                uploaded.size
            ),
        });
    }
    let object = ArchivedObject {
        key: key.to_owned(),
        size: uploaded.size,
        sha256: uploaded.sha256,
        content_type: meta.content_type,
        etag: uploaded.etag,
        version: uploaded.version,
        archived_at: Utc::now(),
    };
    if deps.store.sidecars() {
        let sidecar = Sidecar::new(record, &object, run_id.as_str());
        deps.store
            .write_sidecar(&sidecar)
            .await
            .map_err(|e| Failure::Transient {
                code: "sidecar_failed".into(),
                message: e.to_string(),
            })?;
    }
    lock(deps, record, &object).await?;
    Ok((object, media.get(), resumes.load(Ordering::Relaxed)))
}

/// Puts the Object Lock retention on the recording and its sidecar, when a policy is set:
/// until the call's start plus the policy (the archive time when the start is unknown). Until
/// this succeeds the record is not archived: a run that dies before it leaves the record
/// claimed, and the next run uploads it again (a new version) and locks it.
async fn lock(
    deps: &Deps,
    record: &crate::domain::CallRecord,
    object: &ArchivedObject,
) -> Result<(), Failure> {
    let Some(policy) = deps.store.retention() else {
        return Ok(());
    };
    let start = record.call_start.unwrap_or(object.archived_at);
    let Some(until) = policy.retain_for.until(start) else {
        return Err(Failure::Permanent {
            code: "retention_out_of_range".into(),
            message: format!(
                "{start} plus {} is past the dates S3 can hold",
                policy.retain_for
            ),
            gone: false,
        });
    };
    let mut keys = vec![object.key.clone()];
    if deps.store.sidecars() {
        keys.push(deps.store.sidecar_key(&object.key));
    }
    for key in &keys {
        let locked = deps
            .store
            .lock_until(key, until)
            .await
            .map_err(|e| Failure::Transient {
                code: "lock_failed".into(),
                message: format!("the object is stored but not yet locked: {e}"),
            })?;
        if !locked {
            tracing::info!(uuid = %record.uuid, key, %until, "retention already ended; not locked");
        }
    }
    Ok(())
}

/// How a broken download continues: a fresh link (a resumption is a new request, and the old
/// link may have expired), then the rest from `offset`.
fn reopen(deps: &Deps, file: &str, abort: &CancellationToken) -> Reopen {
    let (provider, downloader) = (Arc::clone(&deps.provider), deps.downloader.clone());
    let (file, abort) = (file.to_owned(), abort.clone());
    Box::new(move |offset| {
        let (provider, downloader) = (Arc::clone(&provider), downloader.clone());
        let (file, abort) = (file.clone(), abort.clone());
        Box::pin(async move {
            let link = tokio::select! {
                link = provider.recording_link(&file) => link
                    .map_err(|e| DownloadError::Network(format!("no fresh link to resume: {e}")))?,
                () = abort.cancelled() => {
                    return Err(DownloadError::Network("cancelled by shutdown".into()));
                }
            };
            downloader.open_from(&link, offset).await
        })
    })
}
