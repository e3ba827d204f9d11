//! One claimed record, start to end: fresh link → download → streamed upload → checks →
//! settle in the ledger. How an attempt ends is chosen by `decide` (pure); this is the
//! loop that runs attempts and carries the choice out. Only a reason to stop the run is an
//! error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::breaker::{RunGuard, Side};
use super::checks::{MediaInfo, checked_body};
use super::decide::{Decision, Happened, Standing, Verdict, decide};
use super::group_commit::{self, Queue};
use super::resume::{Reopen, resuming};
use super::{Deps, RunError, RunOptions};
use crate::archive::report::RecordOutcome;
use crate::domain::{ArchivedObject, AttemptOutcome, CallUuid, Claim, RunId};
use crate::failure::Action;
use crate::ledger::{AttemptEnd, MediaNote, Settlement};
use crate::provider::{DownloadError, ProviderError};
use crate::store::{Sidecar, StoreError, UploadError, UploadMeta};

/// Why one attempt did not archive the record, sorted by the crate's one classification
/// (`crate::failure::Action`) of whoever failed.
enum Failure {
    /// Try again (later in this run, or in a later run); `unanswered` names the side that
    /// did not answer at all, for the run's breaker.
    Passing {
        code: String,
        message: String,
        unanswered: Option<Side>,
    },
    /// The answer says the recording cannot be had; `gone` when the provider no longer has
    /// it (which past the retention horizon means expired, not failed).
    CannotBeHad {
        code: String,
        message: String,
        gone: bool,
    },
    /// No retry can fix it and no record is to blame (refused credentials, a store that
    /// refuses us): stop the run.
    StopRun(RunError),
    /// Shutdown: give the record back.
    Cancelled,
}

impl Failure {
    fn passing(code: impl Into<String>, message: impl Into<String>) -> Self {
        Failure::Passing {
            code: code.into(),
            message: message.into(),
            unanswered: None,
        }
    }

    /// A store failure in one step of the attempt (the sidecar, the lock): a passing one is
    /// named for the step, `prefix` put before its message; a refusal stays what it is and
    /// stops the run like any other store refusal.
    fn in_step(err: StoreError, code: &str, prefix: &str) -> Self {
        match Failure::from(err) {
            Failure::Passing {
                message,
                unanswered,
                ..
            } => Failure::Passing {
                code: code.into(),
                message: format!("{prefix}{message}"),
                unanswered,
            },
            other => other,
        }
    }
}

impl From<ProviderError> for Failure {
    fn from(err: ProviderError) -> Self {
        let (code, message) = (err.code(), err.to_string());
        let gone = matches!(err, ProviderError::FileNotFound { .. });
        match err.action() {
            Action::StopRun => Failure::StopRun(RunError::CredentialsRefused(err)),
            Action::GiveUp => Failure::CannotBeHad {
                code,
                message,
                gone,
            },
            Action::Retry | Action::Relogin => Failure::passing(code, message),
        }
    }
}

impl From<DownloadError> for Failure {
    fn from(err: DownloadError) -> Self {
        let (code, message) = (err.code(), err.to_string());
        match (err.action(), &err) {
            (_, DownloadError::Cancelled) => Failure::Cancelled,
            (Action::GiveUp, DownloadError::Gone { .. }) => Failure::CannotBeHad {
                code,
                message,
                gone: true,
            },
            (Action::GiveUp, _) => Failure::CannotBeHad {
                code,
                message,
                gone: false,
            },
            _ => Failure::Passing {
                code,
                message,
                unanswered: err.is_unreachable().then_some(Side::DownloadHost),
            },
        }
    }
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        match err.action() {
            Action::StopRun => Failure::StopRun(RunError::Store(err)),
            _ => Failure::Passing {
                code: err.code().into(),
                message: err.to_string(),
                unanswered: err.is_unreachable().then_some(Side::Store),
            },
        }
    }
}

impl From<UploadError> for Failure {
    fn from(err: UploadError) -> Self {
        match err {
            UploadError::Source(e) => e.into(),
            UploadError::Cancelled => Failure::Cancelled,
            UploadError::Store(e) => e.into(),
        }
    }
}

/// What an attempt produced, for the settlement.
struct Stored {
    object: ArchivedObject,
    media: Option<MediaInfo>,
    /// Why the recording is flagged (an odd body kept as served, a duration far from the
    /// billed seconds); the sidecar carries it too.
    note: Option<String>,
    resumes: u32,
}

/// Works on one claim until it is settled: runs attempts and carries out what
/// [`decide`] chooses. Returns the outcome; only a reason to stop the run is an error.
pub(super) async fn process(
    deps: &Deps,
    opts: &RunOptions,
    run_id: &RunId,
    guard: &RunGuard,
    queue: &Queue,
    claim: Claim,
) -> Result<RecordOutcome, RunError> {
    let record = &claim.record;
    let uuid = &record.uuid;
    let ledger = Settler {
        deps,
        queue,
        run_id,
        uuid,
    };
    let key = match deps.keys.render(record) {
        Ok(key) => key,
        Err(e) => return ledger.unsafe_key(claim.attempt, &e.to_string()).await,
    };
    let past_horizon = record
        .call_start
        .is_some_and(|t| t < deps.clock.now() - opts.retention);
    let mut attempt_no = 0u32;
    loop {
        attempt_no += 1;
        // The claim started the first attempt in its own commit; later ones start here.
        let id = if attempt_no == 1 {
            claim.attempt
        } else {
            deps.ledger
                .begin_attempt(uuid, run_id, deps.clock.now())
                .await?
        };
        let result = attempt(deps, opts, run_id, &claim, &key).await;
        let (happened, stop) = what_happened(deps, guard, &result);
        let (same_answers, same_answers_over) = same_answers(deps, uuid, &result).await?;
        let standing = Standing {
            attempt_in_run: attempt_no,
            total_attempts: claim.previous_attempts + i64::from(attempt_no),
            past_horizon,
            stopping: opts.shutdown.stop_claiming.is_cancelled(),
            halted: guard.is_halted(),
            same_answers,
            same_answers_over,
        };
        let decision = decide(happened, standing, &opts.retry);
        // The decision is made; what the stop was is kept for the caller.
        let (result, stop) = match result {
            Err(Failure::StopRun(err)) => {
                let said = Failure::passing(stop_code(&err), err.to_string());
                (Err(said), Some(err))
            }
            other => (other, stop),
        };
        let done = settle(&ledger, id, decision, result, standing, &opts.retry).await?;
        if let Some(err) = stop {
            return Err(err);
        }
        if let Some(outcome) = done {
            return Ok(outcome);
        }
        tokio::select! {
            () = deps.clock.sleep(opts.retry.backoff(attempt_no)) => {}
            () = opts.shutdown.abort.cancelled() => return ledger.release("interrupted by shutdown", None).await,
        }
    }
}

/// What an attempt came to, for [`decide`], and whether it stops the run: tells the breaker
/// who answered and who did not at all (which may trip it), and halts the run at once on a
/// refusal so every other worker gives its record back.
fn what_happened(
    deps: &Deps,
    guard: &RunGuard,
    result: &Result<Stored, Failure>,
) -> (Happened, Option<RunError>) {
    match result {
        Ok(_) => {
            guard.answered(Side::Store);
            guard.answered(Side::DownloadHost);
            (Happened::Archived, None)
        }
        Err(Failure::Passing {
            unanswered,
            message,
            code,
        }) => {
            // Whoever did not answer at all may trip the breaker; any answer resets it.
            let tripped = unanswered
                .filter(|side| guard.unanswered(*side, code, deps.clock.now()))
                .map(|side| RunError::Outage {
                    side: side.describe(),
                    detail: message.clone(),
                });
            (Happened::Passing, tripped)
        }
        Err(Failure::CannotBeHad { gone, .. }) => (Happened::CannotBeHad { gone: *gone }, None),
        Err(Failure::StopRun(_)) => {
            guard.halt();
            (Happened::RunStopped, None)
        }
        Err(Failure::Cancelled) => (Happened::Interrupted, None),
    }
}

/// For the give-up window: how many attempts got this same answer that the recording
/// cannot be had (this one included), and over how long since the first of them. Only
/// such an answer needs its history; anything else is its own first.
async fn same_answers(
    deps: &Deps,
    uuid: &CallUuid,
    result: &Result<Stored, Failure>,
) -> Result<(u32, std::time::Duration), RunError> {
    let Err(Failure::CannotBeHad { code, .. }) = result else {
        return Ok((1, std::time::Duration::ZERO));
    };
    let (before, first) = deps.ledger.answers_like(uuid, code).await?;
    let over = first.map_or(chrono::Duration::zero(), |t| deps.clock.now() - t);
    Ok((before + 1, over.to_std().unwrap_or_default()))
}

/// Carries out a decision: settles the record (`Some` outcome) or ends the attempt so the
/// loop tries again (`None`).
async fn settle(
    ledger: &Settler<'_>,
    id: crate::domain::AttemptId,
    decision: Decision,
    result: Result<Stored, Failure>,
    standing: Standing,
    policy: &super::RetryPolicy,
) -> Result<Option<RecordOutcome>, RunError> {
    let uuid = ledger.uuid;
    let (code, message) = match result {
        Ok(stored) => return archive(ledger, id, &stored).await.map(Some),
        Err(
            Failure::Passing { code, message, .. } | Failure::CannotBeHad { code, message, .. },
        ) => (code, message),
        Err(Failure::StopRun(err)) => (stop_code(&err).to_owned(), err.to_string()),
        Err(Failure::Cancelled) => ("shutdown".to_owned(), String::new()),
    };
    let end = AttemptEnd {
        id,
        outcome: decision.outcome,
        error_code: Some(code.as_str()),
        message: Some(&message),
        bytes: 0,
    };
    let outcome = match decision.verdict {
        Verdict::Archive => unreachable!("only a stored recording is archived"),
        Verdict::Again => {
            tracing::info!(%uuid, code, message, attempt_no = standing.attempt_in_run, "attempt failed; retrying");
            let now = ledger.deps.clock.now();
            ledger.deps.ledger.finish_attempt(&end, now).await?;
            return Ok(None);
        }
        Verdict::Release => {
            let end = AttemptEnd {
                message: None,
                ..end
            };
            ledger
                .release("interrupted by shutdown", Some(&end))
                .await?
        }
        Verdict::Return => {
            tracing::warn!(%uuid, code, message, "run stopped; record given back unspent");
            let before = standing.total_attempts - i64::from(standing.attempt_in_run);
            ledger.give_back(&end, before).await?
        }
        Verdict::Later { rounds } => ledger.later(&end, policy.later(rounds)).await?,
        Verdict::Fail { gave_up } => {
            let total = standing.total_attempts;
            let text = if gave_up {
                tracing::warn!(%uuid, code, message, total_attempts = total, "giving up after too many attempts");
                format!("gave up after {total} attempts: {message}")
            } else {
                tracing::warn!(%uuid, code, message, outcome = "failed", "cannot archive");
                message.clone()
            };
            let failed = Settlement::Failed {
                code: &code,
                message: &text,
            };
            ledger
                .settle(&failed, Some(&end), RecordOutcome::Failed)
                .await?
        }
        Verdict::Expire => {
            tracing::warn!(%uuid, code, message, outcome = "expired", "cannot archive");
            let expired = Settlement::Expired {
                code: &code,
                message: &message,
            };
            ledger
                .settle(&expired, Some(&end), RecordOutcome::Expired)
                .await?
        }
    };
    Ok(Some(outcome))
}

/// The `error_code` of an attempt a stopped run gave back.
fn stop_code(err: &RunError) -> &'static str {
    match err {
        RunError::CredentialsRefused(_) => "provider_credentials_refused",
        RunError::Store(e) => e.code(),
        RunError::Outage { .. } => "outage",
        RunError::ProviderUnavailable(_) | RunError::Ledger(_) => "run_stopped",
    }
}

/// Settles a stored recording as archived, with its media note.
async fn archive(
    ledger: &Settler<'_>,
    id: crate::domain::AttemptId,
    stored: &Stored,
) -> Result<RecordOutcome, RunError> {
    let Stored {
        object,
        media,
        note,
        resumes,
    } = stored;
    let (uuid, bytes, resumes, media) = (ledger.uuid, object.size, *resumes, *media);
    tracing::info!(%uuid, key = %object.key, bytes, sha256 = %object.sha256, resumes, "archived");
    let resumed = (resumes > 0).then(|| format!("resumed {resumes} time(s)"));
    if let Some(note) = note {
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
    ledger
        .settle(
            &Settlement::Archived(object, &media_note),
            Some(&end),
            RecordOutcome::Archived {
                bytes,
                flagged: note.is_some(),
                resumes,
            },
        )
        .await
}

/// Settles one claimed record in the ledger, on behalf of one run.
struct Settler<'a> {
    deps: &'a Deps,
    /// Settlements go through the pass's group commit.
    queue: &'a Queue,
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
        if group_commit::settle(
            self.queue,
            &self.deps.ledger,
            self.run_id,
            self.uuid,
            settlement,
            attempt,
            self.deps.clock.now(),
        )
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

    /// A record whose key would be unsafe cannot be archived: failed at once.
    async fn unsafe_key(
        &self,
        attempt: crate::domain::AttemptId,
        message: &str,
    ) -> Result<RecordOutcome, RunError> {
        let failed = Settlement::Failed {
            code: "key_unsafe",
            message,
        };
        let end = AttemptEnd {
            id: attempt,
            outcome: AttemptOutcome::Failed,
            error_code: Some("key_unsafe"),
            message: Some(message),
            bytes: 0,
        };
        self.settle(&failed, Some(&end), RecordOutcome::Failed)
            .await
    }

    /// The run stopped, no fault of the record's: back to pending, due at once, its
    /// attempts in this run given back (`attempts_before`, the count before them).
    async fn give_back(
        &self,
        end: &AttemptEnd<'_>,
        attempts_before: i64,
    ) -> Result<RecordOutcome, RunError> {
        let text = format!("run stopped: {}", end.message.unwrap_or_default());
        let settlement = Settlement::Returned {
            code: "run_stopped",
            message: &text,
            attempts_before,
        };
        self.settle(&settlement, Some(end), RecordOutcome::Released)
            .await
    }

    /// Out of attempts in this run: back to pending, for a run at least `wait` from now.
    async fn later(
        &self,
        end: &AttemptEnd<'_>,
        wait: std::time::Duration,
    ) -> Result<RecordOutcome, RunError> {
        let next = self.deps.clock.now() + chrono::Duration::from_std(wait).unwrap_or_default();
        let (code, message) = (
            end.error_code.unwrap_or_default(),
            end.message.unwrap_or_default(),
        );
        tracing::warn!(uuid = %self.uuid, code, message, next_attempt = %next, "leaving for a later run");
        let retry = Settlement::Retry {
            next_attempt_at: next,
            code,
            message,
        };
        self.settle(&retry, Some(end), RecordOutcome::RetryLater)
            .await
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
/// sidecar and the lock (a record is archived only once both are done too).
async fn attempt(
    deps: &Deps,
    opts: &RunOptions,
    run_id: &RunId,
    claim: &Claim,
    key: &str,
) -> Result<Stored, Failure> {
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
        size_hint: download.content_length,
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
    whole_in_store(deps, key, expected, &uploaded).await?;
    let note = match media.odd() {
        Some(why) => Some(odd_body(deps, record, key, &why, &uploaded.sha256).await?),
        None => media.get().and_then(|m| m.disagreement(record.billsec)),
    };
    let object = ArchivedObject {
        key: key.to_owned(),
        size: uploaded.size,
        sha256: uploaded.sha256,
        content_type: meta.content_type,
        etag: uploaded.etag,
        version: uploaded.version,
        archived_at: deps.clock.now(),
    };
    if deps.store.sidecars() {
        let sidecar = Sidecar::new(deps.ledger.account(), record, &object, run_id.as_str())
            .with_note(note.as_deref());
        deps.store
            .write_sidecar(&sidecar)
            .await
            .map_err(|e| Failure::in_step(e, "sidecar_failed", ""))?;
    }
    lock(deps, record, &object).await?;
    Ok(Stored {
        object,
        media: media.get(),
        note,
        resumes: resumes.load(Ordering::Relaxed),
    })
}

/// Whether the store holds the whole recording: as many bytes as the download announced
/// (when it did), and as the store says it holds. The store checked a single PUT's bytes
/// against its SHA-256; anything else (a multipart upload, a server without checksums) is
/// read back.
async fn whole_in_store(
    deps: &Deps,
    key: &str,
    expected: Option<u64>,
    uploaded: &crate::store::Uploaded,
) -> Result<(), Failure> {
    if let Some(n) = expected.filter(|n| *n != uploaded.size) {
        return Err(Failure::passing(
            "download_truncated",
            format!("received {} of {n} bytes", uploaded.size),
        ));
    }
    let stored = if uploaded.checked_by_store {
        Some(uploaded.size)
    } else {
        deps.store.size_of(key).await?
    };
    if stored != Some(uploaded.size) {
        return Err(Failure::passing(
            "store_size_mismatch",
            format!(
                "the store holds {stored:?} bytes, {} were received",
                uploaded.size
            ),
        ));
    }
    Ok(())
}

/// A stored body that is not audio of its format (empty, a header alone, another format):
/// kept, with the returned note, when an earlier attempt got the very same bytes (the
/// provider has nothing else: it is the only copy there will be); the first time, removed
/// again and tried once more, since the provider may serve the real file next time.
async fn odd_body(
    deps: &Deps,
    record: &crate::domain::CallRecord,
    key: &str,
    why: &str,
    sha256: &str,
) -> Result<String, Failure> {
    let message = format!("not audio ({why}); sha256 {sha256}");
    let seen = deps
        .ledger
        .answers_with(&record.uuid, "not_audio", &message)
        .await
        .map_err(|e| Failure::StopRun(RunError::Ledger(e)))?;
    if seen > 0 {
        return Ok(format!(
            "kept as the provider serves it (the same bytes twice): not audio ({why})"
        ));
    }
    if let Err(e) = deps.store.delete(key).await {
        tracing::warn!(uuid = %record.uuid, key, error = %e, "could not remove an odd body; the next attempt overwrites it");
    }
    Err(Failure::passing("not_audio", message))
}

/// Puts the Object Lock retention on the recording and its sidecar, when a policy is set:
/// until the call's start plus the policy (the archive time when the start is unknown). Until
/// this succeeds the record is not archived: a run that dies before it leaves the record
/// claimed, and the next run uploads it again (a new version) and locks it. A store that
/// refuses the lock (403, a 400 the bucket gives every recording) stops the run, the record
/// given back unspent; a passing failure leaves it for another attempt.
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
        return Err(Failure::CannotBeHad {
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
            .lock_until(key, until, deps.clock.now())
            .await
            .map_err(|e| {
                Failure::in_step(
                    e,
                    "lock_failed",
                    "the object is stored but not yet locked: ",
                )
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
                () = abort.cancelled() => return Err(DownloadError::Cancelled),
            };
            downloader.open_from(&link, offset).await
        })
    })
}
