//! Archival passes and syncs on cron schedules inside `serve`: one pass (and one sync) at a
//! time (one that runs past the next tick makes that tick be skipped, not queued), stopping
//! with the process.

use std::str::FromStr;

use chrono::Utc;

use crate::archive::{Deps, RunOptions, Shutdown, run_pass};
use crate::metrics::Targets;
use crate::sync::{SyncDeps, SyncOptions, run_sync};

/// What the sync scheduler runs.
pub struct ScheduledSyncs {
    pub schedule: cron::Schedule,
    pub deps: SyncDeps,
    /// The options of every sync (without `since`: each continues from the checkpoint).
    pub options: SyncOptions,
}

/// Runs syncs on the schedule until `shutdown` stops claiming; `on_sync` hears each one's
/// exit code. Returns how many ran.
pub async fn run_scheduled_syncs(
    syncs: ScheduledSyncs,
    shutdown: Shutdown,
    on_sync: impl Fn(i32),
) -> u64 {
    let mut ran = 0;
    loop {
        let Some(next) = syncs.schedule.upcoming(Utc).next() else {
            tracing::info!("the sync schedule has no further times");
            return ran;
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.stop_claiming.cancelled() => return ran,
        }
        let mut options = syncs.options.clone();
        options.shutdown = shutdown.child();
        tracing::info!(scheduled = %next, "starting a scheduled sync");
        ran += 1;
        match run_sync(&syncs.deps, &options).await {
            Ok(report) => {
                if let Some(err) = &report.error {
                    tracing::error!(error = %err, "the scheduled sync stopped early");
                }
                on_sync(report.exit_code());
            }
            Err(e) => {
                tracing::error!(error = %e, "the ledger failed during a scheduled sync");
                on_sync(1);
            }
        }
    }
}

/// What the scheduler runs.
pub struct ScheduledPasses {
    pub schedule: cron::Schedule,
    pub deps: Deps,
    /// The options of every pass; each pass gets its own child of the process's shutdown.
    pub options: RunOptions,
    pub metrics: Targets,
}

/// Parses a schedule (`sec min hour day-of-month month day-of-week [year]`).
pub fn parse_schedule(text: &str) -> Result<cron::Schedule, String> {
    cron::Schedule::from_str(text.trim()).map_err(|e| {
        format!("schedule {text:?}: {e} (six fields with seconds, e.g. \"0 */15 * * * *\")")
    })
}

/// Runs passes on the schedule until `shutdown` stops claiming. Returns how many ran.
pub async fn run_scheduled(
    passes: ScheduledPasses,
    shutdown: Shutdown,
    on_pass: impl Fn(&str, i32),
) -> u64 {
    let mut ran = 0;
    loop {
        let Some(next) = passes.schedule.upcoming(Utc).next() else {
            tracing::info!("the schedule has no further times");
            return ran;
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.stop_claiming.cancelled() => return ran,
        }
        let mut options = passes.options.clone();
        options.shutdown = shutdown.child();
        tracing::info!(scheduled = %next, "starting a scheduled pass");
        match run_pass(&passes.deps, &options).await {
            Ok(result) => {
                ran += 1;
                let code = result.exit_code();
                tracing::info!(
                    run = %result.report.run_id,
                    archived = result.report.archived,
                    not_archived = result.report.not_archived(),
                    exit_code = code,
                    "scheduled pass finished"
                );
                if let Some(err) = &result.error {
                    tracing::error!(error = %err, "the scheduled pass stopped early");
                }
                on_pass(&result.report.run_id, code);
            }
            Err(e) => {
                tracing::error!(error = %e, "the ledger failed during a scheduled pass");
                on_pass("", 1);
            }
        }
        if let Err(e) =
            crate::metrics::publish(&passes.deps.ledger, options.retention, &passes.metrics).await
        {
            tracing::warn!(error = %e, "could not publish the pass's metrics");
        }
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
