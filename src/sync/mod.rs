//! The sync pass: reads the provider's bill list (`App.Sip_Cdr.GetBill`) for a window and
//! stores every call the ledger lacks, so that a callback that never arrived (receiver down,
//! network, a provider that gave up) does not mean a recording nobody archives.
//!
//! How it reads, and why:
//! - always `syncflag=3` (every bill): the provider's "not yet fetched" cursor would hide
//!   bills from every other reader and lose a page when a sync dies between pages;
//! - windows of call start, oldest first, each overlapping the one before by
//!   [`WINDOW_OVERLAP`] (the provider's boundary rules are not documented); a window that
//!   holds more than [`SyncOptions::max_window_bills`] bills is halved until it does not
//!   (so no window holds more than the provider will page through), and windows grow back
//!   after quiet ones;
//! - pages of up to 1,000 bills; a window whose total changes while it is paged is read
//!   again (bills shift between pages when new ones arrive);
//! - every bill is matched in the ledger (uuid, else bill id within the company, else
//!   record file name), so overlaps and repeated syncs store nothing twice; within one sync
//!   bills already seen are not counted again;
//! - after each window the sync's `covered_until` is written: a sync that dies keeps what it
//!   covered, and the next one (without `--since`) starts from the newest `covered_until`
//!   less the safety overlap; the first covers the provider's whole retention.
//!
//! Errors follow the provider's policy ([`crate::provider::Action`]): re-login inside the
//! client, passing errors retried with backoff, refused credentials stop with exit code 3.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use serde::Serialize;

use crate::archive::Shutdown;
use crate::callback::parse_bill;
use crate::domain::CallUuid;
use crate::ledger::{
    ImportOutcome, Ledger, LedgerError, SyncId, SyncProgress, SyncRow, SyncStatus,
};
use crate::provider::{Action, BILLS_PER_PAGE_MAX, BillQuery, ProviderClient, ProviderError};

/// How much consecutive windows overlap.
pub const WINDOW_OVERLAP: chrono::Duration = chrono::Duration::minutes(1);
/// The smallest window a busy stretch is cut into.
const MIN_WINDOW: chrono::Duration = chrono::Duration::minutes(1);
/// Times a window is read again because its total changed while it was paged.
const REREADS: u32 = 3;

/// What a sync reads and how.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Start of the window (calls that started at or after it); `None`: the checkpoint less
    /// `overlap`, or `retention` ago for the first sync.
    pub since: Option<DateTime<Utc>>,
    /// End of the window; `None`: now.
    pub until: Option<DateTime<Utc>>,
    /// How far before the checkpoint a sync without `since` starts again.
    pub overlap: chrono::Duration,
    /// The provider's retention: the first sync reads this far back.
    pub retention: chrono::Duration,
    /// The largest window asked for at once.
    pub max_window: chrono::Duration,
    /// A window holding more bills than this is cut in half.
    pub max_window_bills: u64,
    /// Bills per page (at most 1,000).
    pub per_page: u32,
    /// Tries per page for passing errors.
    pub page_attempts: u32,
    /// First backoff between tries (doubles).
    pub retry_delay: Duration,
    pub tz: FixedOffset,
    pub shutdown: Shutdown,
}

impl SyncOptions {
    /// The documented defaults: one day's overlap, 90 days back the first time, windows of
    /// at most a day and 10,000 bills, pages of 1,000, 5 tries a page.
    pub fn new(tz: FixedOffset) -> Self {
        Self {
            since: None,
            until: None,
            overlap: chrono::Duration::days(1),
            retention: chrono::Duration::days(90),
            max_window: chrono::Duration::days(1),
            max_window_bills: 10_000,
            per_page: BILLS_PER_PAGE_MAX,
            page_attempts: 5,
            retry_delay: Duration::from_secs(1),
            tz,
            shutdown: Shutdown::default(),
        }
    }
}

/// What a sync needs.
#[derive(Clone)]
pub struct SyncDeps {
    pub ledger: Ledger,
    pub provider: Arc<ProviderClient>,
}

/// One account's sync: its name, its rows and its provider client.
#[derive(Clone)]
pub struct AccountSync {
    pub account: crate::accounts::AccountName,
    pub deps: SyncDeps,
}

/// A call the sync found: the ledger did not know it.
#[derive(Debug, Clone, Serialize)]
pub struct FoundCall {
    pub key: CallUuid,
    pub bill_id: Option<String>,
    pub record_file: String,
}

/// How a sync went.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub id: SyncId,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub status: SyncStatus,
    #[serde(flatten)]
    pub progress: SyncProgress,
    pub windows: u64,
    pub pages: u64,
    pub found_calls: Vec<FoundCall>,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
}

impl SyncReport {
    /// 0: the whole window read; 3: credentials refused; 1: anything else left it short.
    pub fn exit_code(&self) -> i32 {
        match self.status {
            SyncStatus::Completed => 0,
            SyncStatus::CredentialsRefused => 3,
            SyncStatus::Running | SyncStatus::Failed => 1,
        }
    }

    pub fn human(&self) -> String {
        let mut out = format!(
            "sync {}: {} from {} to {}\n  bills read: {} in {} page(s), {} window(s)\n  calls found (callback never came): {}\n  recordings added to calls known without one: {}\n  unreadable bills: {}\n",
            self.id,
            self.status.as_str(),
            self.since.format("%Y-%m-%d %H:%M:%S UTC"),
            self.until.format("%Y-%m-%d %H:%M:%S UTC"),
            self.progress.bills,
            self.pages,
            self.windows,
            self.progress.found,
            self.progress.recordings_added,
            self.progress.unreadable,
        );
        if let Some(covered) = self.progress.covered_until {
            out.push_str(&format!(
                "  covered until: {}\n",
                covered.format("%Y-%m-%d %H:%M:%S UTC")
            ));
        }
        if let Some(err) = &self.error {
            out.push_str(&format!("  stopped: {err}\n"));
        }
        out
    }
}

/// Why a sync stopped before its window's end.
enum Stop {
    Provider(ProviderError),
    Shutdown,
}

/// Runs one sync. Only a ledger that fails is an `Err`; everything else is in the report.
pub async fn run_sync(deps: &SyncDeps, opts: &SyncOptions) -> Result<SyncReport, LedgerError> {
    let now = Utc::now();
    // Callbacks kept while a pass held their calls join them first, so the bills match the
    // calls by their callbacks' uuids.
    deps.ledger.apply_takeovers(now).await?;
    let (since, until) = window(deps, opts, now).await?;
    let id = SyncId::generate();
    deps.ledger
        .start_sync(&SyncRow {
            id: id.clone(),
            started_at: now,
            finished_at: None,
            status: SyncStatus::Running,
            since,
            until,
            exit_code: None,
            progress: SyncProgress::default(),
        })
        .await?;
    tracing::info!(sync = %id, %since, %until, "sync started");
    let mut pass = Pass {
        deps,
        opts,
        seen: HashSet::new(),
        report: SyncReport {
            id: id.clone(),
            since,
            until,
            status: SyncStatus::Running,
            progress: SyncProgress::default(),
            windows: 0,
            pages: 0,
            found_calls: Vec::new(),
            error: None,
        },
        requests_before: deps.provider.requests(),
    };
    // `None`: the whole window read; `Some`: why it stopped short.
    let outcome = pass.run(since, until).await.map(Result::err);
    let mut report = pass.finish();
    (report.status, report.error) = ended(&outcome);
    let finished = deps
        .ledger
        .finish_sync(
            &id,
            report.status,
            &report.progress,
            report.exit_code(),
            Utc::now(),
        )
        .await;
    outcome?;
    finished?;
    tracing::info!(
        sync = %id,
        status = report.status.as_str(),
        bills = report.progress.bills,
        found = report.progress.found,
        "sync finished"
    );
    Ok(report)
}

/// The window a sync reads: `opts`' own, else from the newest checkpoint (less the overlap)
/// or, for the first sync, from the provider's retention ago; to `opts.until` or `now`.
async fn window(
    deps: &SyncDeps,
    opts: &SyncOptions,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), LedgerError> {
    let until = opts.until.unwrap_or(now);
    let since = match opts.since {
        Some(since) => since,
        None => {
            let floor = now - opts.retention;
            match deps.ledger.sync_checkpoint().await? {
                Some(checkpoint) => (checkpoint - opts.overlap).max(floor),
                None => floor,
            }
        }
    };
    Ok((since, until))
}

/// How a sync ended, from why it stopped (`None`: the whole window read): its status, and
/// the error it reports.
fn ended(outcome: &Result<Option<Stop>, LedgerError>) -> (SyncStatus, Option<String>) {
    let status = match outcome {
        Ok(None) => SyncStatus::Completed,
        Ok(Some(Stop::Provider(e))) if e.action() == Action::StopRun => {
            SyncStatus::CredentialsRefused
        }
        Ok(Some(_)) | Err(_) => SyncStatus::Failed,
    };
    let error = match outcome {
        Ok(None) => None,
        Ok(Some(Stop::Provider(e))) => Some(e.to_string()),
        Ok(Some(Stop::Shutdown)) => Some("stopped on request".into()),
        Err(e) => Some(e.to_string()),
    };
    (status, error)
}

struct Pass<'a> {
    deps: &'a SyncDeps,
    opts: &'a SyncOptions,
    /// The calls already counted in this sync.
    seen: HashSet<CallUuid>,
    report: SyncReport,
    requests_before: u64,
}

impl Pass<'_> {
    fn finish(mut self) -> SyncReport {
        self.report.progress.requests =
            i64::try_from(self.deps.provider.requests() - self.requests_before).unwrap_or(i64::MAX);
        self.report
    }

    async fn run(
        &mut self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Result<(), Stop>, LedgerError> {
        if let Err(e) = self.deps.provider.ensure_login().await {
            return Ok(Err(Stop::Provider(e)));
        }
        let mut start = since;
        let mut length = self.opts.max_window;
        while start < until {
            if self.opts.shutdown.stop_claiming.is_cancelled() {
                return Ok(Err(Stop::Shutdown));
            }
            let end = (start + length).min(until);
            let query_start = (start - WINDOW_OVERLAP).max(since);
            match self
                .read_window(query_start, end, length > MIN_WINDOW)
                .await?
            {
                Ok(WindowRead::TooMany(total)) => {
                    tracing::debug!(total, "window too full; halving it");
                    length = (length / 2).max(MIN_WINDOW);
                    continue;
                }
                Ok(WindowRead::Done) => {}
                Err(stop) => return Ok(Err(stop)),
            }
            self.report.windows += 1;
            self.report.progress.covered_until = Some(end);
            self.report.progress.requests =
                i64::try_from(self.deps.provider.requests() - self.requests_before)
                    .unwrap_or(i64::MAX);
            self.deps
                .ledger
                .record_sync_progress(&self.report.id, &self.report.progress)
                .await?;
            start = end;
            // Quiet stretches are read in larger windows again.
            length = (length * 2).min(self.opts.max_window);
        }
        Ok(Ok(()))
    }

    /// Reads every page of one window (again, when its total moved while paging); a window
    /// that `may_split` and holds too many bills is left for a smaller one.
    async fn read_window(
        &mut self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        may_split: bool,
    ) -> Result<Result<WindowRead, Stop>, LedgerError> {
        let per_page = self.opts.per_page.clamp(1, BILLS_PER_PAGE_MAX);
        let mut read = 0;
        loop {
            read += 1;
            let mut page = 1;
            let mut first_total = None;
            let mut moved = false;
            loop {
                let query = BillQuery {
                    start,
                    end,
                    page,
                    per_page,
                };
                let bills = match self.fetch(&query).await {
                    Ok(bills) => bills,
                    Err(stop) => return Ok(Err(stop)),
                };
                self.report.pages += 1;
                let total = bills.total_items;
                if page == 1 {
                    if let Some(total) = total
                        && total > self.opts.max_window_bills
                        && may_split
                    {
                        return Ok(Ok(WindowRead::TooMany(total)));
                    }
                    first_total = total;
                } else if total.is_some() && total != first_total {
                    moved = true;
                }
                let count = bills.bills.len();
                self.store_page(bills.bills).await?;
                let listed = u64::from(page) * u64::from(per_page);
                let more = match total {
                    Some(total) => listed < total && count > 0,
                    None => u32::try_from(count).is_ok_and(|n| n == per_page),
                };
                if !more {
                    break;
                }
                page += 1;
            }
            if !moved || read > REREADS {
                if moved {
                    tracing::warn!(%start, %end, "the window kept changing while it was read; the next sync reads it again");
                }
                return Ok(Ok(WindowRead::Done));
            }
            tracing::debug!(%start, %end, "the window's total changed while paging; reading it again");
        }
    }

    /// One page, retrying passing errors with backoff.
    async fn fetch(&self, query: &BillQuery) -> Result<crate::provider::BillPage, Stop> {
        let mut delay = self.opts.retry_delay;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.deps.provider.bills(query).await {
                Ok(page) => return Ok(page),
                Err(e) if e.action() == Action::Retry && attempt < self.opts.page_attempts => {
                    tracing::warn!(error = %e, attempt, "bill page failed; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.opts.shutdown.stop_claiming.cancelled() => return Err(Stop::Shutdown),
                    }
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
                Err(e) => return Err(Stop::Provider(e)),
            }
        }
    }

    async fn store_page(
        &mut self,
        bills: Vec<Result<serde_json::Map<String, serde_json::Value>, String>>,
    ) -> Result<(), LedgerError> {
        let company = self.deps.provider.company_code().unwrap_or_default();
        let mut records = Vec::with_capacity(bills.len());
        for bill in bills {
            let parsed = bill.and_then(|map| {
                let raw = serde_json::Value::Object(map.clone()).to_string();
                parse_bill(&map, &raw, &company, self.opts.tz).map_err(|e| e.to_string())
            });
            match parsed {
                Ok(record) if self.seen.insert(record.uuid.clone()) => records.push(record),
                Ok(_) => {}
                Err(why) => {
                    tracing::warn!(reason = %why, "a bill names no call; skipped");
                    self.report.progress.unreadable += 1;
                }
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        let outcomes = self.deps.ledger.import_bills(&records, Utc::now()).await?;
        self.report.progress.bills += i64::try_from(records.len()).unwrap_or(i64::MAX);
        for (record, outcome) in records.into_iter().zip(outcomes) {
            match outcome {
                ImportOutcome::New => {
                    self.report.progress.found += 1;
                    self.report.found_calls.push(FoundCall {
                        key: record.uuid,
                        bill_id: record.bill_id,
                        record_file: record.record_file,
                    });
                }
                ImportOutcome::RecordingAdded => self.report.progress.recordings_added += 1,
                ImportOutcome::Known | ImportOutcome::MatchedBill => {}
            }
        }
        Ok(())
    }
}

enum WindowRead {
    Done,
    /// The window holds this many bills, more than a window may.
    TooMany(u64),
}
