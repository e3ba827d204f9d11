//! PostgreSQL: runs, and the figures `status` and `/metrics` read, each through an index or
//! a table of bounded size, so that they cost the same with ten thousand calls as with ten
//! million. Per-state counts are the sums of the per-connection deltas the triggers of
//! migration 20261130000002 keep (at most 64 rows per state).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::error::Ctx;
use super::{PgLedger, at, parse_state};
use crate::domain::{RecordState, RunId, RunStatus};
use crate::ledger::{LastRun, LedgerError, LedgerFigures, RunRecord, Runs};

#[async_trait]
impl Runs for PgLedger {
    async fn start_run(&self, run: &RunRecord) -> Result<(), LedgerError> {
        sqlx::query(
            "INSERT INTO runs (id, started_at, status, host, pid, options) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(run.id.as_str())
        .bind(at(run.started_at))
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
        sqlx::query(
            "UPDATE runs SET finished_at = $1, status = $2, summary = $3, exit_code = $4 WHERE id = $5",
        )
        .bind(at(now))
        .bind(status.as_str())
        .bind(summary.to_string())
        .bind(i64::from(exit_code))
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .ctx("recording the end of a run")?;
        Ok(())
    }

    /// Read in one snapshot (a read-only repeatable-read transaction), so the figures agree
    /// with each other.
    async fn figures(&self, risk_line: DateTime<Utc>) -> Result<LedgerFigures, LedgerError> {
        const CONTEXT: &str = "reading the ledger's figures";
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .ctx(CONTEXT)?;
        let rows =
            sqlx::query("SELECT state, sum(n)::bigint AS n FROM state_count_deltas GROUP BY state")
                .fetch_all(&mut *tx)
                .await
                .ctx("counting records")?;
        let mut counts: Vec<(RecordState, i64)> =
            RecordState::ALL.iter().map(|s| (*s, 0)).collect();
        for row in &rows {
            let state = parse_state(&row.try_get::<String, _>("state").ctx(CONTEXT)?)?;
            let n: i64 = row.try_get("n").ctx(CONTEXT)?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == state) {
                slot.1 = n;
            }
        }
        // Each subquery is one index probe or one index range: the oldest waiting call is
        // the smaller of two index minimums (one per state, as `min` over `IN (…)` would
        // read every waiting call), and flagged recordings are a partial index.
        let row = sqlx::query(
            "SELECT
                 LEAST(
                     (SELECT min(call_start) FROM calls
                      WHERE state = 'pending' AND call_start IS NOT NULL),
                     (SELECT min(call_start) FROM calls
                      WHERE state = 'in_progress' AND call_start IS NOT NULL)) AS oldest,
                 (SELECT count(*) FROM calls
                  WHERE state IN ('pending', 'in_progress', 'failed')
                    AND call_start IS NOT NULL AND call_start < $1) AS at_risk,
                 (SELECT count(*) FROM calls
                  WHERE state = 'archived' AND media_note IS NOT NULL) AS media_flagged,
                 (SELECT max(finished_at) FROM runs WHERE exit_code = 0) AS last_success",
        )
        .bind(at(risk_line))
        .fetch_one(&mut *tx)
        .await
        .ctx(CONTEXT)?;
        let last_run = last_run(&mut tx).await?;
        tx.commit().await.ctx(CONTEXT)?;
        Ok(LedgerFigures {
            counts,
            oldest_pending_call: row.try_get("oldest").ctx(CONTEXT)?,
            at_risk: row.try_get("at_risk").ctx(CONTEXT)?,
            media_flagged: row.try_get("media_flagged").ctx(CONTEXT)?,
            last_run,
            last_success_at: row.try_get("last_success").ctx(CONTEXT)?,
        })
    }
}

/// The run that started last.
async fn last_run(conn: &mut sqlx::PgConnection) -> Result<Option<LastRun>, LedgerError> {
    const CONTEXT: &str = "reading the last run";
    let row = sqlx::query(
        "SELECT id, started_at, finished_at, status, exit_code, summary FROM runs
         ORDER BY started_at DESC, id DESC LIMIT 1",
    )
    .fetch_optional(conn)
    .await
    .ctx(CONTEXT)?;
    let Some(row) = row else { return Ok(None) };
    let status: String = row.try_get("status").ctx(CONTEXT)?;
    Ok(Some(LastRun {
        id: RunId::from(row.try_get::<String, _>("id").ctx(CONTEXT)?),
        started_at: row.try_get("started_at").ctx(CONTEXT)?,
        finished_at: row.try_get("finished_at").ctx(CONTEXT)?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| LedgerError::Corrupt(format!("run status {status:?}")))?,
        exit_code: row.try_get("exit_code").ctx(CONTEXT)?,
        // As the SQLite ledger: a summary that is not JSON is shown as none.
        summary: row
            .try_get::<Option<String>, _>("summary")
            .ctx(CONTEXT)?
            .and_then(|s| serde_json::from_str(&s).ok()),
    }))
}
