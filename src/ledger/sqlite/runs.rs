//! Runs (one row per `callvault run`) and the status report operators read.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{Ledger, LedgerError, QueryContext};
use crate::domain::RecordState;
use crate::timefmt::{from_ledger, to_ledger};

/// The identity of a run as the ledger stores it.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub host: String,
    pub pid: u32,
    /// The run's options, as JSON, for the audit trail.
    pub options: String,
}

/// The latest run, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub id: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: String,
    pub exit_code: Option<i64>,
    pub summary: Option<serde_json::Value>,
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

impl Ledger {
    pub async fn start_run(&self, run: &RunRecord) -> Result<(), LedgerError> {
        sqlx::query(
            "INSERT INTO runs (id, started_at, status, host, pid, options) VALUES ($1, $2, 'running', $3, $4, $5)",
        )
        .bind(&run.id)
        .bind(to_ledger(run.started_at))
        .bind(&run.host)
        .bind(i64::from(run.pid))
        .bind(&run.options)
        .execute(&self.pool)
        .await
        .ctx("recording the start of a run")?;
        Ok(())
    }

    pub async fn finish_run(
        &self,
        id: &str,
        status: &str,
        summary: &serde_json::Value,
        exit_code: i32,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        sqlx::query("UPDATE runs SET finished_at = $1, status = $2, summary = $3, exit_code = $4 WHERE id = $5")
            .bind(to_ledger(now))
            .bind(status)
            .bind(summary.to_string())
            .bind(exit_code)
            .bind(id)
            .execute(&self.pool)
            .await
            .ctx("recording the end of a run")?;
        Ok(())
    }

    /// The status report; `retention` is the provider's deletion horizon.
    pub async fn status(
        &self,
        now: DateTime<Utc>,
        retention: Duration,
    ) -> Result<StatusReport, LedgerError> {
        let mut counts: std::collections::BTreeMap<&'static str, i64> =
            RecordState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        // Kept by triggers (migration 20261123000005): six rows, however large the ledger.
        let rows = sqlx::query("SELECT state, n FROM state_counts")
            .fetch_all(&self.pool)
            .await
            .ctx("counting records")?;
        for row in &rows {
            let state: String = row.get("state");
            let state = RecordState::parse(&state)
                .ok_or_else(|| LedgerError::Corrupt(format!("state {state:?}")))?;
            counts.insert(state.as_str(), row.get("n"));
        }
        let oldest: Option<String> = sqlx::query_scalar(
            "SELECT MIN(call_start) FROM calls WHERE state IN ('pending', 'in_progress') AND call_start IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await
        .ctx("finding the oldest pending call")?;
        let oldest = oldest.and_then(|s| from_ledger(&s));
        let risk_line = now - retention + Duration::days(14);
        let at_risk: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM calls WHERE state IN ('pending', 'in_progress', 'failed')
                    AND call_start IS NOT NULL AND call_start < $1",
        )
        .bind(to_ledger(risk_line))
        .fetch_one(&self.pool)
        .await
        .ctx("counting calls near the retention horizon")?;
        let last_success: Option<String> =
            sqlx::query_scalar("SELECT MAX(finished_at) FROM runs WHERE exit_code = 0")
                .fetch_one(&self.pool)
                .await
                .ctx("finding the last successful run")?;
        Ok(StatusReport {
            total: counts.values().sum(),
            counts,
            oldest_pending_call: oldest,
            oldest_pending_age_seconds: oldest.map(|t| (now - t).num_seconds()),
            at_risk_within_14_days: at_risk,
            media_flagged: self.media_flagged().await?,
            retention_days: retention.num_days(),
            last_run: self.last_run().await?,
            last_success_at: last_success.and_then(|s| from_ledger(&s)),
        })
    }

    async fn last_run(&self) -> Result<Option<LastRun>, LedgerError> {
        let row = sqlx::query(
            "SELECT id, started_at, finished_at, status, exit_code, summary FROM runs ORDER BY started_at DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .ctx("reading the last run")?;
        Ok(row.map(|row| {
            let time = |col: &str| {
                row.get::<Option<String>, _>(col)
                    .and_then(|s| from_ledger(&s))
            };
            LastRun {
                id: row.get("id"),
                started_at: time("started_at"),
                finished_at: time("finished_at"),
                status: row.get("status"),
                exit_code: row.get("exit_code"),
                summary: row
                    .get::<Option<String>, _>("summary")
                    .and_then(|s| serde_json::from_str(&s).ok()),
            }
        }))
    }
}
