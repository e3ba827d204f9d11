//! Runs (one row per `callvault run` or scheduled pass) and the status report operators read.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::LedgerError;
use super::sql::{Db, Row, Stmt, Tx, pick};
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

/// Per-state counts: SQLite keeps one row per state (one writer at a time, so no
/// contention); PostgreSQL sums the per-connection deltas its triggers keep (at most 64
/// rows per state).
const STATE_COUNTS_SQLITE: &str = "SELECT state, n FROM state_counts WHERE account = $1";
const STATE_COUNTS_POSTGRES: &str = "SELECT state, sum(n)::bigint AS n FROM state_count_deltas
     WHERE account = $1 GROUP BY state";

/// The other figures, each one index probe or range. The oldest waiting call: PostgreSQL
/// takes the smaller of two index minimums (`min` over `IN (…)` would read every waiting
/// call there); SQLite's planner already answers the `IN` form from `calls_due`, and has no
/// `LEAST` (its two-argument `min` is NULL when either side is).
const FIGURES_SQLITE: &str = "SELECT
     (SELECT min(call_start) FROM calls
      WHERE account = $2 AND state IN ('pending', 'in_progress')
        AND call_start IS NOT NULL) AS oldest,
     (SELECT count(*) FROM calls
      WHERE account = $2 AND state IN ('pending', 'in_progress', 'failed')
        AND call_start IS NOT NULL AND call_start < $1) AS at_risk,
     (SELECT count(*) FROM calls
      WHERE account = $2 AND state = 'archived' AND media_note IS NOT NULL) AS media_flagged,
     (SELECT max(finished_at) FROM runs WHERE account = $2 AND exit_code = 0) AS last_success";
const FIGURES_POSTGRES: &str = "SELECT
     LEAST(
         (SELECT min(call_start) FROM calls
          WHERE account = $2 AND state = 'pending' AND call_start IS NOT NULL),
         (SELECT min(call_start) FROM calls
          WHERE account = $2 AND state = 'in_progress' AND call_start IS NOT NULL)) AS oldest,
     (SELECT count(*) FROM calls
      WHERE account = $2 AND state IN ('pending', 'in_progress', 'failed')
        AND call_start IS NOT NULL AND call_start < $1) AS at_risk,
     (SELECT count(*) FROM calls
      WHERE account = $2 AND state = 'archived' AND media_note IS NOT NULL) AS media_flagged,
     (SELECT max(finished_at) FROM runs WHERE account = $2 AND exit_code = 0) AS last_success";

#[async_trait]
impl<D: Db> Runs for D {
    async fn start_run(&self, run: &RunRecord) -> Result<(), LedgerError> {
        self.execute(
            Stmt::new(
                "INSERT INTO runs (id, started_at, status, host, pid, options, account)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                "recording the start of a run",
            )
            .bind(run.id.as_str())
            .bind(run.started_at)
            .bind(RunStatus::Running.as_str())
            .bind(&run.host)
            .bind(run.pid)
            .bind(&run.options)
            .bind(self.account()),
        )
        .await?;
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
        self.execute(
            Stmt::new(
                "UPDATE runs SET finished_at = $1, status = $2, summary = $3, exit_code = $4
                 WHERE id = $5",
                "recording the end of a run",
            )
            .bind(now)
            .bind(status.as_str())
            .bind(summary.to_string())
            .bind(exit_code)
            .bind(id.as_str()),
        )
        .await?;
        Ok(())
    }

    /// Read in one snapshot, so the figures agree with each other.
    async fn figures(&self, risk_line: DateTime<Utc>) -> Result<LedgerFigures, LedgerError> {
        const CONTEXT: &str = "reading the ledger's figures";
        let kind = self.dialect();
        let mut tx = self.begin_snapshot(CONTEXT).await?;
        let rows = tx
            .fetch_all(
                Stmt::new(
                    pick(kind, STATE_COUNTS_SQLITE, STATE_COUNTS_POSTGRES),
                    "counting records",
                )
                .bind(self.account()),
            )
            .await?;
        let mut counts: Vec<(RecordState, i64)> =
            RecordState::ALL.iter().map(|s| (*s, 0)).collect();
        for row in &rows {
            let state = row.state("state")?;
            let n = row.int("n")?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == state) {
                slot.1 = n;
            }
        }
        let row = tx
            .fetch_one(
                Stmt::new(pick(kind, FIGURES_SQLITE, FIGURES_POSTGRES), CONTEXT)
                    .bind(risk_line)
                    .bind(self.account()),
            )
            .await?;
        let last_run = last_run(&mut tx).await?;
        tx.commit().await?;
        Ok(LedgerFigures {
            counts,
            oldest_pending_call: row.opt_time("oldest")?,
            at_risk: row.int("at_risk")?,
            media_flagged: row.int("media_flagged")?,
            last_run,
            last_success_at: row.opt_time("last_success")?,
        })
    }
}

/// The account's run that started last, from `runs_started`.
const LAST_RUN: &str = "SELECT id, started_at, finished_at, status, exit_code, summary FROM runs
     WHERE account = $1 ORDER BY started_at DESC, id DESC LIMIT 1";

/// The run that started last.
async fn last_run(tx: &mut impl Tx) -> Result<Option<LastRun>, LedgerError> {
    let stmt = Stmt::new(LAST_RUN, "reading the last run").bind(tx.account().to_owned());
    let row = tx.fetch_optional(stmt).await?;
    let Some(row) = row else { return Ok(None) };
    let status = row.text("status")?;
    Ok(Some(LastRun {
        id: RunId::from(row.text("id")?),
        started_at: row.opt_time("started_at")?,
        finished_at: row.opt_time("finished_at")?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| LedgerError::Corrupt(format!("run status {status:?}")))?,
        exit_code: row.opt_int("exit_code")?,
        // A summary that is not JSON is shown as none.
        summary: row
            .opt_text("summary")?
            .and_then(|s| serde_json::from_str(&s).ok()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LedgerOptions;
    use crate::ledger::log::{PROOF_FIGURES, UNSTAMPED_FIGURES};
    use crate::ledger::sqlite::SqliteLedger;
    use crate::ledger::sync::{LAST_SYNC, SYNC_FIGURES};

    /// SQLite's plan for `sql` with the account as `$1` (and `$2`), a time as the other.
    async fn plan(ledger: &SqliteLedger, sql: &'static str, time_first: bool) -> Vec<String> {
        let stmt = Stmt::new(sql, "explaining");
        let stmt = if time_first {
            stmt.bind(Utc::now()).bind("default")
        } else {
            stmt.bind("default")
        };
        crate::ledger::sqlite::query_plan(ledger, stmt).await
    }

    /// Every statement `status` runs reads one account's rows through an index that leads
    /// with the account, never a whole table or a sort, and the log's figures come from the
    /// partial indexes over just the manifests they count: `status` at a million calls took
    /// 2.6 times as long as at ten thousand while the last run was a scan and a sort of
    /// every run, and the log's figures read every manifest (BENCHMARKS.md, issue 20).
    #[tokio::test]
    async fn status_reads_each_figure_through_the_accounts_index() {
        let ledger = SqliteLedger::open("sqlite::memory:", &LedgerOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let statements = [
            ("state counts", STATE_COUNTS_SQLITE, false),
            ("figures", FIGURES_SQLITE, true),
            ("last run", LAST_RUN, false),
            ("last sync", LAST_SYNC, false),
            ("sync figures", SYNC_FIGURES, false),
            ("log figures", PROOF_FIGURES, false),
            ("unstamped checkpoints", UNSTAMPED_FIGURES, false),
        ];
        for (name, sql, time_first) in statements {
            let steps = plan(&ledger, sql, time_first).await;
            for step in &steps {
                if step.starts_with("SCAN ") {
                    assert_eq!(step, "SCAN CONSTANT ROW", "{name} scans: {steps:?}");
                }
                assert!(!step.contains("TEMP B-TREE"), "{name} sorts: {steps:?}");
                if step.starts_with("SEARCH ") {
                    assert!(step.contains("(account=?"), "{name}: {steps:?}");
                }
                if step.starts_with("SEARCH manifests") {
                    assert!(
                        [
                            "manifests_logged",
                            "manifests_unlogged",
                            "manifests_unstamped"
                        ]
                        .iter()
                        .any(|index| step.contains(&format!("INDEX {index} "))),
                        "{name} reads every manifest: {steps:?}"
                    );
                }
            }
        }
    }
}
