//! Runs (one row per `callvault run` or scheduled pass) and the status report operators read.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::LedgerError;
use crate::domain::{RecordState, RunId, RunStatus};

/// The identity of a run as the ledger stores it.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub id: RunId,
    pub started_at: DateTime<Utc>,
    pub host: String,
    pub pid: u32,
    /// The run's options, as JSON, for the audit trail.
    pub options: String,
}

/// The latest run, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub id: RunId,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: RunStatus,
    pub exit_code: Option<i64>,
    pub summary: Option<serde_json::Value>,
}

/// The figures `status` and `/metrics` read, as the ledger gives them; see [`StatusReport`].
#[derive(Debug, Clone, Default)]
pub struct LedgerFigures {
    /// Records per state (every state present, zero included).
    pub counts: Vec<(RecordState, i64)>,
    /// Start of the oldest call still waiting (pending or in progress).
    pub oldest_pending_call: Option<DateTime<Utc>>,
    /// Calls not archived whose call started before the risk line.
    pub at_risk: i64,
    pub media_flagged: i64,
    pub last_run: Option<LastRun>,
    pub last_success_at: Option<DateTime<Utc>>,
}

/// Counts per state and the figures that tell whether the archive keeps up.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub counts: std::collections::BTreeMap<&'static str, i64>,
    pub total: i64,
    /// Start of the oldest call still waiting (pending or in progress).
    pub oldest_pending_call: Option<DateTime<Utc>>,
    pub oldest_pending_age_seconds: Option<i64>,
    /// Calls not archived whose recording the provider deletes within 14 days.
    pub at_risk_within_14_days: i64,
    /// Archived recordings whose duration disagrees with the call's billed seconds.
    pub media_flagged: i64,
    pub retention_days: i64,
    pub last_run: Option<LastRun>,
    /// When the last run that archived everything it claimed (exit code 0) finished.
    pub last_success_at: Option<DateTime<Utc>>,
}

impl StatusReport {
    /// The report for `now`, with `retention` the provider's deletion horizon.
    pub fn new(figures: LedgerFigures, now: DateTime<Utc>, retention: Duration) -> Self {
        let mut counts: std::collections::BTreeMap<&'static str, i64> =
            RecordState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for (state, n) in figures.counts {
            counts.insert(state.as_str(), n);
        }
        let oldest = figures.oldest_pending_call;
        Self {
            total: counts.values().sum(),
            counts,
            oldest_pending_call: oldest,
            oldest_pending_age_seconds: oldest.map(|t| (now - t).num_seconds()),
            at_risk_within_14_days: figures.at_risk,
            media_flagged: figures.media_flagged,
            retention_days: retention.num_days(),
            last_run: figures.last_run,
            last_success_at: figures.last_success_at,
        }
    }
}

/// The line a call must have started after for its recording to outlive the next 14 days.
pub fn risk_line(now: DateTime<Utc>, retention: Duration) -> DateTime<Utc> {
    now - retention + Duration::days(14)
}

#[async_trait]
pub trait Runs: Send + Sync {
    async fn start_run(&self, run: &RunRecord) -> Result<(), LedgerError>;

    async fn finish_run(
        &self,
        id: &RunId,
        status: RunStatus,
        summary: &serde_json::Value,
        exit_code: i32,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;

    /// The ledger's figures; calls that started before `risk_line` and are not archived
    /// count as at risk. Costs the same with ten thousand calls as with ten million.
    async fn figures(&self, risk_line: DateTime<Utc>) -> Result<LedgerFigures, LedgerError>;

    /// The status report; `retention` is the provider's deletion horizon.
    async fn status(
        &self,
        now: DateTime<Utc>,
        retention: Duration,
    ) -> Result<StatusReport, LedgerError> {
        let figures = self.figures(risk_line(now, retention)).await?;
        Ok(StatusReport::new(figures, now, retention))
    }
}
