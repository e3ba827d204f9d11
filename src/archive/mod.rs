//! The archival pass: claim → process one record → record the outcome, with bounded
//! concurrency, a run deadline, lease renewal (`crate::lease`) and a clean stop on shutdown. Concurrency
//! and shutdown live here and nowhere else.

mod breaker;
mod checks;
mod decide;
mod group_commit;
mod progress;
mod record;
mod report;
mod resume;
mod retry;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::accounts::AccountName;
use crate::audit::write_manifests;
use crate::clock::Clock;
use crate::domain::{AttemptOutcome, Claim, RunId, RunStatus};
use crate::lease::Lease;
use crate::ledger::Ledger;
use crate::ledger::{
    AttemptEnd, ClaimRequest, LedgerError, RunRecord, SettleItem, Settlement, Slice,
};
use crate::provider::{Downloader, ProviderClient, ProviderError};
use crate::store::{KeyTemplate, Store, StoreError};

pub use checks::{MediaInfo, Probe as MediaProbe};
pub use progress::{Progress, ProgressSink};
pub use report::{PlannedRecord, RecordOutcome, RunReport};
pub use retry::RetryPolicy;

/// Everything a pass needs from the outside world.
#[derive(Clone)]
pub struct Deps {
    pub ledger: Ledger,
    pub provider: Arc<ProviderClient>,
    pub downloader: Downloader,
    pub store: Store,
    pub keys: KeyTemplate,
    /// Logs the written manifests in the Merkle log, signs and time-stamps checkpoints.
    pub prover: crate::proof::Prover,
    /// What leases, the give-up window, the retention horizon and lock dates, and every
    /// time the ledger records, are read from.
    pub clock: Clock,
}

/// How a pass is told to stop: first stop claiming (SIGTERM, deadline), then, after the
/// grace period, abort what is still in flight.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    pub stop_claiming: CancellationToken,
    pub abort: CancellationToken,
}

impl Shutdown {
    /// A shutdown for one pass that follows this one (a process-wide stop reaches it) but
    /// can end on its own (a pass's deadline does not stop the process).
    pub fn child(&self) -> Shutdown {
        Shutdown {
            stop_claiming: self.stop_claiming.child_token(),
            abort: self.abort.child_token(),
        }
    }

    /// Stops claiming now and aborts in-flight work after `grace`.
    pub fn begin(&self, grace: Duration) {
        if self.stop_claiming.is_cancelled() {
            return;
        }
        self.stop_claiming.cancel();
        let abort = self.abort.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            abort.cancel();
        });
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub concurrency: usize,
    pub max_records: Option<u64>,
    /// Stop claiming new work this long after the start.
    pub deadline: Option<Duration>,
    pub dry_run: bool,
    pub lease: Duration,
    pub retry: RetryPolicy,
    /// The provider deletes recordings this long after the call.
    pub retention: chrono::Duration,
    pub slice: Slice,
    /// How long in-flight transfers may take to finish once a stop begins.
    pub grace: Duration,
    pub shutdown: Shutdown,
    /// Recorded with the run, for the audit trail: the options, and the host it ran on.
    pub description: serde_json::Value,
    pub host: String,
    pub progress: Progress,
    /// Transfer slots this pass shares with the passes of the run's other accounts: a
    /// worker takes one before it claims and keeps it until its record is settled. Workers
    /// of every account wait in one first-come queue, so each account with work gets its
    /// turn within a batch, and an account without work leaves its slots to the others.
    /// `None`: this pass's own workers are the only bound.
    pub slots: Option<Arc<tokio::sync::Semaphore>>,
}

/// Why a whole run stopped. A single record's failure is never one of these.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the provider refused the credentials: {0}")]
    CredentialsRefused(ProviderError),
    #[error("the provider cannot be reached: {0}")]
    ProviderUnavailable(ProviderError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("the object store is not usable: {0}")]
    Store(StoreError),
    /// The breaker tripped: the store or the download host stopped answering (exit 1; the
    /// records went back unspent, the next run starts normally).
    #[error("{side} is not answering: {detail}")]
    Outage { side: &'static str, detail: String },
}

/// A run's result: the report, and the error that stopped it, if any.
#[derive(Debug)]
pub struct RunResult {
    pub report: RunReport,
    pub error: Option<RunError>,
}

impl RunResult {
    /// 0 every record attempted archived and nothing due any more; 1 some left, failed or
    /// still due (a deadline, a stop or `--max-records`), or no manifest written; 2 the store
    /// refuses us or has no such bucket (configuration); 3 the provider refused the
    /// credentials. A work-queue worker's 0 thus means "nothing left to do".
    pub fn exit_code(&self) -> i32 {
        match &self.error {
            Some(RunError::CredentialsRefused(_)) => 3,
            Some(RunError::Store(StoreError::Config(_) | StoreError::Refused { .. })) => 2,
            Some(_) => 1,
            None if self.report.not_archived() > 0
                || self.report.left_due > 0
                || self.report.manifest_error.is_some() =>
            {
                1
            }
            None => 0,
        }
    }
}

/// One archival pass over the ledger.
/// One account's pass in a run over several accounts.
pub struct AccountPass {
    pub account: AccountName,
    pub deps: Deps,
    pub opts: RunOptions,
}

/// The passes of a run's accounts, side by side: each with its own claims, provider client
/// (token, pace), store and stop, so one account's store refusal or provider outage ends
/// that account's pass only (its records given back unspent, as any stop gives them back),
/// while the others go on. They share the run's transfer slots ([`RunOptions::slots`], see
/// [`share_slots`]). Results in the order of `passes`.
pub async fn run_accounts(passes: &[AccountPass]) -> Vec<Result<RunResult, LedgerError>> {
    futures::future::join_all(passes.iter().map(|p| run_pass(&p.deps, &p.opts))).await
}

/// The run's `concurrency` transfer slots, shared by the accounts' passes, and how many
/// workers each account runs: its share of the largest share's `concurrency` (at least
/// one). Workers of every account wait for a slot in one first-come queue, so while all
/// have work the slots go round in proportion to the workers, that is to the shares; an
/// account with nothing left leaves its slots to the others.
pub fn share_slots(
    concurrency: usize,
    shares: &[u32],
) -> (Arc<tokio::sync::Semaphore>, Vec<usize>) {
    let concurrency = concurrency.max(1);
    let largest = u64::from(shares.iter().copied().max().unwrap_or(1).max(1));
    let workers = shares
        .iter()
        .map(|&share| {
            let scaled = (concurrency as u64 * u64::from(share.max(1))).div_ceil(largest);
            usize::try_from(scaled)
                .unwrap_or(concurrency)
                .clamp(1, concurrency)
        })
        .collect();
    (Arc::new(tokio::sync::Semaphore::new(concurrency)), workers)
}

/// Makes `passes` (each built with the run's concurrency) share the run's transfer slots
/// by `shares` (see [`share_slots`]); a lone pass keeps its workers and needs no slots.
pub fn share(passes: &mut [AccountPass], shares: &[u32]) {
    let [first, _, ..] = passes else { return };
    let (slots, workers) = share_slots(first.opts.concurrency, shares);
    for (pass, workers) in passes.iter_mut().zip(workers) {
        pass.opts.concurrency = workers;
        pass.opts.slots = Some(Arc::clone(&slots));
    }
}

pub async fn run_pass(deps: &Deps, opts: &RunOptions) -> Result<RunResult, LedgerError> {
    let started = Instant::now();
    let run_id = RunId::generate();
    let mut report = RunReport {
        run_id: run_id.to_string(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    if opts.dry_run {
        report.planned = plan(deps, opts).await?;
        report.finish(started.elapsed());
        return Ok(RunResult {
            report,
            error: None,
        });
    }
    deps.ledger
        .start_run(&RunRecord {
            id: run_id.clone(),
            started_at: deps.clock.now(),
            host: opts.host.clone(),
            pid: std::process::id(),
            options: opts.description.to_string(),
        })
        .await?;
    let logins_before = deps.provider.logins();
    let commits_before = deps.ledger.commits();
    let error = match preflight(deps).await {
        Err(e) => Some(e),
        Ok(()) => work(deps, opts, &run_id, &mut report).await,
    };
    // The pass's own commits (claims, attempts, settlements, lease renewals), not the run's
    // start and end or its manifests, which are per run, not per record.
    report.ledger_commits = deps
        .ledger
        .commits()
        .zip(commits_before)
        .map(|(after, before)| after - before);
    report.logins = deps.provider.logins() - logins_before;
    if !matches!(error, Some(RunError::Ledger(_))) {
        apply_takeovers(deps).await;
    }
    if !matches!(error, Some(RunError::Store(_) | RunError::Ledger(_))) {
        list_in_manifests(deps, opts, &run_id, &mut report).await;
        if !opts.dry_run {
            report.proof = deps
                .prover
                .after_manifests(&deps.ledger, &deps.store, deps.clock.now())
                .await;
        }
    }
    if error.is_none() {
        match deps.ledger.count_due(&opts.slice, deps.clock.now()).await {
            Ok(n) => report.left_due = n,
            Err(e) => tracing::warn!(error = %e, "could not count the records still due"),
        }
    }
    if let Some(e) = &error {
        report.stopped = Some(e.to_string());
    } else if opts.shutdown.stop_claiming.is_cancelled() {
        report.stopped = Some("shutdown requested or deadline reached".into());
    }
    report.finish(started.elapsed());
    Ok(record_end(deps, &run_id, RunResult { report, error }).await)
}

/// A dry run's list: the records a run would take now, and their keys.
async fn plan(deps: &Deps, opts: &RunOptions) -> Result<Vec<PlannedRecord>, LedgerError> {
    let limit = opts
        .max_records
        .map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX));
    let due = deps
        .ledger
        .due(&opts.slice, deps.clock.now(), limit)
        .await?;
    Ok(due
        .into_iter()
        .map(|rec| PlannedRecord {
            key: deps.keys.render(&rec).unwrap_or_else(|e| format!("<{e}>")),
            uuid: rec.uuid.to_string(),
            record_file: rec.record_file,
            call_start: rec.call_start,
        })
        .collect())
}

/// Lets the callbacks that came while this pass (or another) held their calls' bill rows
/// take those rows over now, before the manifests list them (see `ledger::takeovers`); one
/// that cannot is applied at the end of the next pass or before the next sync.
async fn apply_takeovers(deps: &Deps) {
    match deps.ledger.apply_takeovers(deps.clock.now()).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(calls = n, "callbacks joined to the calls this pass held"),
        Err(e) => {
            tracing::warn!(error = %e, "callbacks kept for held calls wait for the next pass")
        }
    }
}

/// Lists every archived record in no manifest yet (this run's and any killed run's) in the
/// chain; a manifest that cannot be written is reported, and its records wait for the next.
async fn list_in_manifests(deps: &Deps, opts: &RunOptions, run_id: &RunId, report: &mut RunReport) {
    let written = write_manifests(
        &deps.ledger,
        &deps.store,
        run_id,
        opts.lease,
        &deps.clock,
        &opts.shutdown.abort,
    )
    .await;
    match written {
        Ok(written) => report.manifests = written,
        Err(e) => {
            tracing::warn!(error = %e, "no manifest written; the next pass lists these records");
            report.manifest_error = Some(e.to_string());
        }
    }
}

/// Records the run's end (status, report, exit code) in the ledger. The pass did what its
/// report says whether or not the ledger takes it: if not, the report is still returned
/// (exit 1) and the run's row stays open, as a killed run's does (the next pass closes what
/// it left).
async fn record_end(deps: &Deps, run_id: &RunId, result: RunResult) -> RunResult {
    let status = match &result.error {
        Some(RunError::CredentialsRefused(_)) => RunStatus::CredentialsRefused,
        Some(_) => RunStatus::Stopped,
        None if result.report.stopped.is_some() => RunStatus::Interrupted,
        None => RunStatus::Completed,
    };
    let summary = serde_json::to_value(&result.report).unwrap_or_default();
    let recorded = deps
        .ledger
        .finish_run(
            run_id,
            status,
            &summary,
            result.exit_code(),
            deps.clock.now(),
        )
        .await;
    let Err(e) = recorded else {
        return result;
    };
    tracing::error!(error = %e, "the end of the run could not be recorded in the ledger");
    let RunResult { mut report, error } = result;
    let error = error.unwrap_or_else(|| {
        report.stopped = Some(e.to_string());
        RunError::Ledger(e)
    });
    RunResult {
        report,
        error: Some(error),
    }
}

/// Checks the provider accepts our credentials and the store answers, before claiming.
async fn preflight(deps: &Deps) -> Result<(), RunError> {
    deps.provider
        .ensure_login()
        .await
        .map_err(|e| match e.action() {
            crate::provider::Action::StopRun => RunError::CredentialsRefused(e),
            _ => RunError::ProviderUnavailable(e),
        })?;
    deps.store.preflight().await.map_err(RunError::Store)
}

/// Runs the workers; returns the error that stopped the run, if one did.
async fn work(
    deps: &Deps,
    opts: &RunOptions,
    run_id: &RunId,
    report: &mut RunReport,
) -> Option<RunError> {
    let budget = AtomicU64::new(opts.max_records.unwrap_or(u64::MAX));
    let stop = opts.shutdown.stop_claiming.clone();
    let deadline = opts.deadline.map(|deadline| {
        let (stop, clock) = (stop.clone(), deps.clock.clone());
        tokio::spawn(async move {
            clock.sleep(deadline).await;
            tracing::info!("deadline reached; no new records will be claimed");
            stop.cancel();
        })
    });
    let lease = Lease::new(opts.lease);
    let renewer = lease.keep(&deps.clock, "this run's records", |until| {
        deps.ledger.renew_leases(run_id, until)
    });
    let due_by = deps.clock.now();
    match deps.ledger.count_due(&opts.slice, due_by).await {
        Ok(n) => opts
            .progress
            .planned(opts.max_records.map_or(n, |max| max.min(n))),
        Err(e) => tracing::warn!(error = %e, "could not count the due records"),
    }
    let guard = breaker::RunGuard::new(opts.retry.outage_failures, opts.retry.outage_window);
    let feed = ClaimFeed {
        queue: tokio::sync::Mutex::new(VecDeque::new()),
        batch: u32::try_from(opts.concurrency.max(1)).unwrap_or(u32::MAX),
        due_by,
        budget,
    };
    let (queue, settlements) = tokio::sync::mpsc::unbounded_channel();
    let workers: Vec<_> = (0..opts.concurrency.max(1))
        .map(|_| worker(deps, opts, run_id, &feed, &guard, queue.clone()))
        .collect();
    drop(queue);
    let grouped = group_settlements(deps, run_id, settlements);
    let results = tokio::select! {
        (results, ()) = futures::future::join(futures::future::join_all(workers), grouped) => results,
        never = renewer => match never {},
    };
    let unstarted = give_back_unstarted(deps, run_id, &feed).await;
    if let Some(deadline) = deadline {
        deadline.abort();
    }
    let mut first_error = unstarted.err().map(RunError::from);
    for (outcomes, error) in results {
        for outcome in outcomes {
            report.add(outcome);
        }
        if first_error.is_none() {
            first_error = error;
        }
    }
    if let Some((side, reasons)) = guard.outage() {
        let returned = give_back_outage(deps, run_id, side, &reasons).await;
        // Left for later when they ended; given back unspent now, as a stop gives back.
        let returned = returned.min(report.retry_later);
        report.retry_later -= returned;
        report.released += returned;
    }
    first_error
}

/// The breaker found `side` down: the records this run left for later because that side
/// did not answer (their last attempt failed with one of `reasons`) were not to blame
/// either. They get this run's attempts of those reasons back and are due at once, as the
/// records the stop gave back are. Returns how many records.
async fn give_back_outage(
    deps: &Deps,
    run_id: &RunId,
    side: breaker::Side,
    reasons: &[String],
) -> u64 {
    let mut returned = 0;
    for reason in reasons {
        match deps
            .ledger
            .give_back_attempts(run_id, reason, deps.clock.now())
            .await
        {
            Ok(n) => returned += n,
            Err(e) => tracing::warn!(
                error = %e,
                reason,
                "could not give back the attempts spent on an outage; those records wait for their next attempt"
            ),
        }
    }
    if returned > 0 {
        tracing::info!(
            records = returned,
            side = side.describe(),
            "records left for later before the outage was known get their attempts back"
        );
    }
    returned
}

/// Where workers take their claims from: one claim statement takes a batch of due records
/// (as many as there are workers, within the budget) and the workers share it, so claiming
/// costs one commit per batch, not per record. A record waiting here is leased (the renewer
/// keeps it) and its first attempt counted; what a stop leaves here is given back unspent.
struct ClaimFeed {
    queue: tokio::sync::Mutex<VecDeque<Claim>>,
    batch: u32,
    due_by: chrono::DateTime<Utc>,
    /// Records this pass may still claim (`--max-records`).
    budget: AtomicU64,
}

impl ClaimFeed {
    /// The next claim, claiming a new batch when none is waiting; `None` when nothing is due
    /// or the budget is spent.
    async fn next(
        &self,
        deps: &Deps,
        opts: &RunOptions,
        run_id: &RunId,
    ) -> Result<Option<Claim>, LedgerError> {
        let mut queue = self.queue.lock().await;
        if opts.shutdown.stop_claiming.is_cancelled() {
            return Ok(None);
        }
        if let Some(claim) = queue.pop_front() {
            return Ok(Some(claim));
        }
        let Ok(left) = self
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                n.checked_sub(n.min(u64::from(self.batch)))
            })
        else {
            return Ok(None);
        };
        let limit = u32::try_from(left.min(u64::from(self.batch))).unwrap_or(self.batch);
        if limit == 0 {
            return Ok(None);
        }
        let now = deps.clock.now();
        let request = ClaimRequest {
            owner: run_id,
            slice: &opts.slice,
            due_by: self.due_by,
            now,
            lease_until: Lease::new(opts.lease).until(now),
            limit,
        };
        // A claim that lost a race is run again by the ledger itself (PostgreSQL's
        // serialization failures and deadlocks); what reaches us stops the run.
        let claims = deps.ledger.claim(&request).await?;
        let unclaimed = u64::from(limit) - claims.len() as u64;
        self.budget.fetch_add(unclaimed, Ordering::SeqCst);
        queue.extend(claims);
        Ok(queue.pop_front())
    }
}

/// The group commit's loop: each commit takes every settlement queued at that moment (no
/// timer). Ends when every worker has dropped its end of the queue.
async fn group_settlements(
    deps: &Deps,
    run_id: &RunId,
    mut settlements: tokio::sync::mpsc::UnboundedReceiver<group_commit::Request>,
) {
    while let Some(first) = settlements.recv().await {
        let mut group = vec![first];
        while let Ok(next) = settlements.try_recv() {
            group.push(next);
        }
        group_commit::commit(&deps.ledger, run_id, group, deps.clock.now()).await;
    }
}

/// Gives back, in one commit, the records a stop left claimed but never started: pending,
/// due at once, with the attempt their claim counted taken back.
async fn give_back_unstarted(
    deps: &Deps,
    run_id: &RunId,
    feed: &ClaimFeed,
) -> Result<(), LedgerError> {
    let left: Vec<Claim> = feed.queue.lock().await.drain(..).collect();
    if left.is_empty() {
        return Ok(());
    }
    let message = "claimed but not started before the run stopped";
    let items: Vec<SettleItem<'_>> = left
        .iter()
        .map(|claim| SettleItem {
            uuid: &claim.record.uuid,
            owner: run_id,
            settlement: Settlement::Returned {
                code: "not_started",
                message,
                attempts_before: claim.previous_attempts,
            },
            last_attempt: Some(AttemptEnd {
                id: claim.attempt,
                outcome: AttemptOutcome::Aborted,
                error_code: Some("not_started"),
                message: Some(message),
                bytes: 0,
            }),
        })
        .collect();
    tracing::info!(
        records = items.len(),
        "giving back records claimed but not started"
    );
    deps.ledger.settle_many(&items, deps.clock.now()).await?;
    Ok(())
}

/// One worker: takes claims and processes records until there is nothing due, the budget
/// is spent, a stop begins, or the run must stop.
async fn worker(
    deps: &Deps,
    opts: &RunOptions,
    run_id: &RunId,
    feed: &ClaimFeed,
    guard: &breaker::RunGuard,
    queue: group_commit::Queue,
) -> (Vec<RecordOutcome>, Option<RunError>) {
    let mut outcomes = Vec::new();
    loop {
        if opts.shutdown.stop_claiming.is_cancelled() || guard.is_halted() {
            break;
        }
        let Some(_slot) = take_slot(opts).await else {
            break;
        };
        let claim = match feed.next(deps, opts, run_id).await {
            Ok(Some(claim)) => claim,
            Ok(None) => break,
            Err(e) => return stop_all(opts, guard, outcomes, e.into()),
        };
        match record::process(deps, opts, run_id, guard, &queue, claim).await {
            Ok(outcome) => {
                opts.progress.record_done(outcome);
                outcomes.push(outcome);
            }
            Err(e) => {
                // The record that met the stop was settled (given back) before this.
                opts.progress.record_done(RecordOutcome::Released);
                outcomes.push(RecordOutcome::Released);
                return stop_all(opts, guard, outcomes, e);
            }
        }
    }
    (outcomes, None)
}

/// A transfer slot shared with the run's other accounts ([`RunOptions::slots`]), held until
/// dropped; `Some(None)` when the pass has no shared slots, `None` when a stop came while
/// waiting for one.
async fn take_slot(opts: &RunOptions) -> Option<Option<tokio::sync::OwnedSemaphorePermit>> {
    let Some(slots) = &opts.slots else {
        return Some(None);
    };
    tokio::select! {
        permit = Arc::clone(slots).acquire_owned() => permit.ok().map(Some),
        () = opts.shutdown.stop_claiming.cancelled() => None,
    }
}

fn stop_all(
    opts: &RunOptions,
    guard: &breaker::RunGuard,
    outcomes: Vec<RecordOutcome>,
    error: RunError,
) -> (Vec<RecordOutcome>, Option<RunError>) {
    tracing::error!(%error, "stopping the run");
    guard.halt();
    opts.shutdown.stop_claiming.cancel();
    (outcomes, Some(error))
}
