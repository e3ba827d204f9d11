//! Archival passes and syncs on cron schedules inside `serve`: one round at a time (one that
//! runs past the next tick makes that tick be skipped, not queued), stopping with the
//! process. A round of passes is what `callvault run` does, every account's pass side by
//! side sharing the transfer slots; a round of syncs is what `callvault sync` does, the
//! accounts one after another.

use std::str::FromStr;

use chrono::Utc;

use crate::accounts::AccountName;
use crate::archive::{AccountPass, Shutdown, run_accounts};
use crate::metrics::Targets;
use crate::sync::{AccountSync, SyncOptions, run_sync};

/// What the sync scheduler runs.
pub struct ScheduledSyncs {
    pub schedule: cron::Schedule,
    /// Each account's sync, in this order at every tick.
    pub accounts: Vec<AccountSync>,
    /// The options of every sync (without `since`: each continues from its checkpoint).
    pub options: SyncOptions,
}

/// Runs rounds of syncs on the schedule until `shutdown` stops claiming; `on_sync` hears
/// each account's exit code. Returns how many rounds ran.
pub async fn run_scheduled_syncs(
    syncs: ScheduledSyncs,
    shutdown: Shutdown,
    on_sync: impl Fn(&AccountName, i32),
) -> u64 {
    let mut ran = 0;
    while let Some(next) = next_tick(&syncs.schedule, &shutdown, "sync").await {
        tracing::info!(scheduled = %next, "starting scheduled syncs");
        ran += 1;
        for sync in &syncs.accounts {
            if shutdown.stop_claiming.is_cancelled() {
                break;
            }
            let mut options = syncs.options.clone();
            options.shutdown = shutdown.child();
            let account = &sync.account;
            match run_sync(&sync.deps, &options).await {
                Ok(report) => {
                    if let Some(err) = &report.error {
                        tracing::error!(error = %err, %account, "the scheduled sync stopped early");
                    }
                    on_sync(account, report.exit_code());
                }
                Err(e) => {
                    tracing::error!(error = %e, %account, "the ledger failed during a scheduled sync");
                    on_sync(account, 1);
                }
            }
        }
    }
    ran
}

/// What the pass scheduler runs.
pub struct ScheduledPasses {
    pub schedule: cron::Schedule,
    /// Each account's pass, as `run` prepares them; each round gives every pass its own
    /// child of the process's shutdown.
    pub passes: Vec<AccountPass>,
    pub metrics: Targets,
}

/// Parses a schedule (`sec min hour day-of-month month day-of-week [year]`).
pub fn parse_schedule(text: &str) -> Result<cron::Schedule, String> {
    cron::Schedule::from_str(text.trim()).map_err(|e| {
        format!("schedule {text:?}: {e} (six fields with seconds, e.g. \"0 */15 * * * *\")")
    })
}

/// Runs rounds of passes on the schedule until `shutdown` stops claiming; `on_pass` hears
/// each account's exit code. Returns how many rounds ran.
pub async fn run_scheduled(
    mut passes: ScheduledPasses,
    shutdown: Shutdown,
    on_pass: impl Fn(&AccountName, i32),
) -> u64 {
    let mut ran = 0;
    while let Some(next) = next_tick(&passes.schedule, &shutdown, "pass").await {
        tracing::info!(scheduled = %next, "starting scheduled passes");
        ran += 1;
        for pass in &mut passes.passes {
            pass.opts.shutdown = shutdown.child();
        }
        let results = run_accounts(&passes.passes).await;
        for (pass, result) in passes.passes.iter().zip(results) {
            on_pass(&pass.account, finished(&pass.account, result));
        }
        crate::metrics::publish_passes(&passes.passes, &passes.metrics).await;
    }
    ran
}

/// Logs how one account's scheduled pass ended; its exit code.
fn finished(
    account: &AccountName,
    result: Result<crate::archive::RunResult, crate::ledger::LedgerError>,
) -> i32 {
    match result {
        Ok(result) => {
            let code = result.exit_code();
            tracing::info!(
                %account,
                run = %result.report.run_id,
                archived = result.report.archived,
                not_archived = result.report.not_archived(),
                exit_code = code,
                "scheduled pass finished"
            );
            if let Some(err) = &result.error {
                tracing::error!(error = %err, %account, "the scheduled pass stopped early");
            }
            code
        }
        Err(e) => {
            tracing::error!(error = %e, %account, "the ledger failed during a scheduled pass");
            1
        }
    }
}

/// Waits for the schedule's next time; `None` when it has none or claiming stopped first.
async fn next_tick(
    schedule: &cron::Schedule,
    shutdown: &Shutdown,
    what: &str,
) -> Option<chrono::DateTime<Utc>> {
    let Some(next) = schedule.upcoming(Utc).next() else {
        tracing::info!("the {what} schedule has no further times");
        return None;
    };
    let wait = (next - Utc::now()).to_std().unwrap_or_default();
    tokio::select! {
        () = tokio::time::sleep(wait) => Some(next),
        () = shutdown.stop_claiming.cancelled() => None,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_schedule;

    #[test]
    fn schedules_need_seconds_and_say_so() {
        assert!(parse_schedule("0 */15 * * * *").is_ok());
        assert!(parse_schedule("*/2 * * * * *").is_ok());
        let err = parse_schedule("every minute").unwrap_err();
        assert!(err.contains("six fields"), "{err}");
    }
}
