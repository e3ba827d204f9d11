//! SQLite: runs, and the figures `status` and `/metrics` read. Per-state counts come from
//! `state_counts`, kept by triggers (one writer at a time, so no contention).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{QueryContext, SqliteLedger, col, time_col};
use crate::domain::{RecordState, RunId, RunStatus};
use crate::ledger::{LastRun, LedgerError, LedgerFigures, RunRecord, Runs};
use crate::timefmt::{from_ledger, to_ledger};

#[async_trait]
impl Runs for SqliteLedger {
    async fn start_run(&self, run: &RunRecord) -> Result<(), LedgerError> {
        sqlx::query(
            "INSERT INTO runs (id, started_at, status, host, pid, options) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(run.id.as_str())
        .bind(to_ledger(run.started_at))
        .bind(RunStatus::Running.as_str())
        .bind(&run.host)
        .bind(i64::from(run.pid))
        .bind(&run.options)
        .execute(&self.pool)
        .await
        .ctx("recording the start of a run")?;
        Ok(())
    }

    async fn finish_run(
        &self,
        id: &RunId,
        status: RunStatus,
        summary: &serde_json::Value,
        exit_code: i32,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        sqlx::query("UPDATE runs SET finished_at = $1, status = $2, summary = $3, exit_code = $4 WHERE id = $5")
            .bind(to_ledger(now))
            .bind(status.as_str())
            .bind(summary.to_string())
            .bind(exit_code)
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .ctx("recording the end of a run")?;
        Ok(())
    }

    async fn figures(&self, risk_line: DateTime<Utc>) -> Result<LedgerFigures, LedgerError> {
        // Kept by triggers (migration 20261123000005): six rows, however large the ledger.
        let rows = sqlx::query("SELECT state, n FROM state_counts")
            .fetch_all(&self.pool)
            .await
            .ctx("counting records")?;
        let mut counts = Vec::with_capacity(rows.len());
        for row in &rows {
            let state: String = col(row, "state")?;
            let state = RecordState::parse(&state)
                .ok_or_else(|| LedgerError::Corrupt(format!("state {state:?}")))?;
            counts.push((state, col(row, "n")?));
        }
        let oldest: Option<String> = sqlx::query_scalar(
            "SELECT MIN(call_start) FROM calls WHERE state IN ('pending', 'in_progress') AND call_start IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await
        .ctx("finding the oldest pending call")?;
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
        let media_flagged: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM calls WHERE state = 'archived' AND media_note IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await
        .ctx("counting flagged recordings")?;
        Ok(LedgerFigures {
            counts,
            oldest_pending_call: oldest.and_then(|s| from_ledger(&s)),
            at_risk,
            media_flagged,
            last_run: self.last_run().await?,
            last_success_at: last_success.and_then(|s| from_ledger(&s)),
        })
    }
}

impl SqliteLedger {
    async fn last_run(&self) -> Result<Option<LastRun>, LedgerError> {
        let row = sqlx::query(
            "SELECT id, started_at, finished_at, status, exit_code, summary FROM runs ORDER BY started_at DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .ctx("reading the last run")?;
        let Some(row) = row else { return Ok(None) };
        let status: String = col(&row, "status")?;
        Ok(Some(LastRun {
            id: RunId::from(col::<String>(&row, "id")?),
            started_at: time_col(&row, "started_at")?,
            finished_at: time_col(&row, "finished_at")?,
            status: RunStatus::parse(&status)
                .ok_or_else(|| LedgerError::Corrupt(format!("run status {status:?}")))?,
            exit_code: col(&row, "exit_code")?,
            summary: col::<Option<String>>(&row, "summary")?
                .and_then(|s| serde_json::from_str(&s).ok()),
        }))
    }
}
