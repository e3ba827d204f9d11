//! The ledger's side of auditing: archived records to read back (and what the read-back
//! found), the records that failed, and putting chosen failed records back in the queue.
//! Batches (verify results, named uuids to retry) are a few statements over lists, with the
//! outcome of applying them one by one.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::manifests::entry_from_row;
use super::sql::{Db, Row, Stmt, Tx, max_params, params, retry_conflicts, value_rows};
use super::{ArchivedEntry, BackendKind, LedgerError, Slice};
use crate::domain::{CallUuid, RecordState};

/// A failed or expired record, with why.
#[derive(Debug, Clone, Serialize)]
pub struct FailedRecord {
    pub uuid: CallUuid,
    pub state: RecordState,
    pub company_code: String,
    pub record_file: String,
    pub call_start: Option<DateTime<Utc>>,
    pub attempts: i64,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Which failed records `retry` puts back.
#[derive(Debug, Clone, Copy)]
pub enum RetrySelection<'a> {
    Uuids(&'a [CallUuid]),
    ErrorCode(&'a str),
    All,
}

/// What `retry` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetryOutcome {
    pub requeued: u64,
    /// Named uuids left alone: unknown (`None`) or not in a state retry may touch.
    pub skipped: Vec<(CallUuid, Option<RecordState>)>,
}

/// What reading one object back found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyResult {
    Ok,
    Missing,
    Changed,
    Unreadable,
}

impl VerifyResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Missing => "missing",
            Self::Changed => "changed",
            Self::Unreadable => "unreadable",
        }
    }
}

#[async_trait]
pub trait Audit: Send + Sync {
    /// Up to `limit` archived records of `slice` after uuid `after`, by uuid.
    async fn archived_page(
        &self,
        slice: &Slice,
        after: Option<&CallUuid>,
        limit: i64,
    ) -> Result<Vec<ArchivedEntry>, LedgerError>;

    /// How many archived records `slice` holds.
    async fn archived_count(&self, slice: &Slice) -> Result<i64, LedgerError>;

    /// Records what reading objects back found.
    async fn record_verified(
        &self,
        results: &[(CallUuid, VerifyResult)],
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;

    /// Starts a `verify` in the audit trail.
    async fn start_verification(
        &self,
        id: &str,
        scope: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;

    async fn finish_verification(
        &self,
        id: &str,
        checked: u64,
        problems: u64,
        summary: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;

    /// Up to `limit` failed and expired records after uuid `after` (by uuid), optionally
    /// only those whose last error has `code`.
    async fn failures_page(
        &self,
        code: Option<&str>,
        after: Option<&CallUuid>,
        limit: i64,
    ) -> Result<Vec<FailedRecord>, LedgerError>;

    /// Puts the chosen failed (and, with `include_expired`, expired) records back to
    /// `pending`, due now, with their attempt count reset (the attempts table keeps the
    /// history). Never touches records in any other state.
    async fn retry_failed(
        &self,
        selection: RetrySelection<'_>,
        include_expired: bool,
        now: DateTime<Utc>,
    ) -> Result<RetryOutcome, LedgerError>;
}

/// Back to pending, due now (`$1`), from `failed` or from state `$2`, in account `$3`.
const REQUEUE: &str = "UPDATE calls SET state = 'pending', attempts = 0, next_attempt_at = $1,
        updated_at = $1, lease_owner = NULL, lease_until = NULL
 WHERE account = $3 AND state IN ('failed', $2)";

const FAILED_COLUMNS: &str = "uuid, state, company_code, record_file, call_start, attempts,
        last_error_code, last_error, updated_at";

/// The conditions `slice` sets, each as ` AND …`, over `$1` company, `$2` since and `$3`
/// until (see [`bind_slice`]). Only the bounds set are written, so that each combination is
/// planned with its bounds as index ranges instead of `($2 IS NULL OR …)`, which
/// PostgreSQL's generic plan cannot use.
fn slice_filter(slice: &Slice) -> String {
    let mut filter = String::new();
    if slice.company.is_some() {
        filter.push_str(" AND company_code = $1");
    }
    if slice.since.is_some() {
        filter.push_str(" AND call_start >= $2");
    }
    if slice.until.is_some() {
        filter.push_str(" AND call_start < $3");
    }
    filter
}

/// Binds a slice's `$1` company, `$2` since and `$3` until (NULL when unset).
fn bind_slice(stmt: Stmt, slice: &Slice) -> Stmt {
    stmt.bind(slice.company.as_deref())
        .bind(slice.since)
        .bind(slice.until)
}

#[async_trait]
impl<D: Db> Audit for D {
    async fn archived_page(
        &self,
        slice: &Slice,
        after: Option<&CallUuid>,
        limit: i64,
    ) -> Result<Vec<ArchivedEntry>, LedgerError> {
        let after_sql = if after.is_some() {
            " AND uuid > $5"
        } else {
            ""
        };
        let sql = format!(
            "SELECT uuid, object_key, size_bytes, sha256, archived_at FROM calls
             WHERE account = $6 AND state = 'archived'{}{after_sql}
             ORDER BY uuid LIMIT $4",
            slice_filter(slice)
        );
        let stmt = bind_slice(Stmt::new(sql, "listing archived records"), slice)
            .bind(limit.max(0))
            .bind(after.map(CallUuid::as_str))
            .bind(self.account());
        let rows = self.fetch_all(stmt).await?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn archived_count(&self, slice: &Slice) -> Result<i64, LedgerError> {
        let sql = format!(
            "SELECT count(*) AS n FROM calls WHERE account = $4 AND state = 'archived'{}",
            slice_filter(slice)
        );
        let stmt =
            bind_slice(Stmt::new(sql, "counting archived records"), slice).bind(self.account());
        self.fetch_one(stmt).await?.int("n")
    }

    /// A uuid named twice keeps its last result, as if recorded one by one.
    async fn record_verified(
        &self,
        results: &[(CallUuid, VerifyResult)],
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        if results.is_empty() {
            return Ok(());
        }
        let last: HashMap<&str, VerifyResult> =
            results.iter().map(|(u, r)| (u.as_str(), *r)).collect();
        let mut last: Vec<(&str, VerifyResult)> = last.into_iter().collect();
        // Rows locked in uuid order, as every batch does.
        last.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let last = &last;
        retry_conflicts(|| async move {
            let mut tx = self.begin("starting to record a verify").await?;
            for chunk in last.chunks((max_params(self.dialect()) - 2) / 2) {
                let stmt = Stmt::new(
                    format!(
                        "UPDATE calls SET last_verified_at = $1, last_verify_result = r.column2
                         FROM (VALUES {}) AS r
                         WHERE calls.account = $2 AND calls.uuid = r.column1",
                        value_rows(3, chunk.len(), 2)
                    ),
                    "recording verify results",
                )
                .bind(now)
                .bind(self.account());
                let stmt = chunk
                    .iter()
                    .fold(stmt, |s, (uuid, found)| s.bind(*uuid).bind(found.as_str()));
                tx.execute(stmt).await?;
            }
            tx.commit().await
        })
        .await
    }

    async fn start_verification(
        &self,
        id: &str,
        scope: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.execute(
            Stmt::new(
                "INSERT INTO verifications (id, started_at, scope, account)
                 VALUES ($1, $2, $3, $4)",
                "recording the start of a verify",
            )
            .bind(id)
            .bind(now)
            .bind(scope.to_string())
            .bind(self.account()),
        )
        .await?;
        Ok(())
    }

    async fn finish_verification(
        &self,
        id: &str,
        checked: u64,
        problems: u64,
        summary: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.execute(
            Stmt::new(
                "UPDATE verifications SET finished_at = $1, checked = $2, problems = $3,
                        summary = $4
                 WHERE id = $5",
                "recording the end of a verify",
            )
            .bind(now)
            .bind(checked)
            .bind(problems)
            .bind(summary.to_string())
            .bind(id),
        )
        .await?;
        Ok(())
    }

    async fn failures_page(
        &self,
        code: Option<&str>,
        after: Option<&CallUuid>,
        limit: i64,
    ) -> Result<Vec<FailedRecord>, LedgerError> {
        let code_sql = if code.is_some() {
            " AND last_error_code = $1"
        } else {
            ""
        };
        let after_sql = if after.is_some() {
            " AND uuid > $2"
        } else {
            ""
        };
        let stmt = Stmt::new(
            format!(
                "SELECT {FAILED_COLUMNS} FROM calls
                 WHERE account = $4 AND state IN ('failed', 'expired'){code_sql}{after_sql}
                 ORDER BY uuid LIMIT $3"
            ),
            "listing failed records",
        )
        .bind(code)
        .bind(after.map(CallUuid::as_str))
        .bind(limit.max(0))
        .bind(self.account());
        let rows = self.fetch_all(stmt).await?;
        rows.iter().map(failed_from_row).collect()
    }

    async fn retry_failed(
        &self,
        selection: RetrySelection<'_>,
        include_expired: bool,
        now: DateTime<Utc>,
    ) -> Result<RetryOutcome, LedgerError> {
        retry_conflicts(|| retry_once(self, selection, include_expired, now)).await
    }
}

fn failed_from_row(row: &impl Row) -> Result<FailedRecord, LedgerError> {
    Ok(FailedRecord {
        uuid: row.uuid("uuid")?,
        state: row.state("state")?,
        company_code: row.text("company_code")?,
        record_file: row.text("record_file")?,
        call_start: row.opt_time("call_start")?,
        attempts: row.int("attempts")?,
        last_error_code: row.opt_text("last_error_code")?,
        last_error: row.opt_text("last_error")?,
        updated_at: row.opt_time("updated_at")?,
    })
}

/// One transaction of [`Audit::retry_failed`].
async fn retry_once<D: Db>(
    db: &D,
    selection: RetrySelection<'_>,
    include_expired: bool,
    now: DateTime<Utc>,
) -> Result<RetryOutcome, LedgerError> {
    // `state IN ('failed', 'failed')` when expired records are not wanted.
    let second = if include_expired { "expired" } else { "failed" };
    let account = db.account();
    let requeue = |sql: String| {
        Stmt::new(sql, "requeueing failed records")
            .bind(now)
            .bind(second)
            .bind(account)
    };
    let mut tx = db.begin("starting a retry").await?;
    let outcome = match selection {
        RetrySelection::All => RetryOutcome {
            requeued: tx.execute(requeue(REQUEUE.to_owned())).await?,
            skipped: Vec::new(),
        },
        RetrySelection::ErrorCode(code) => {
            let stmt = requeue(format!("{REQUEUE} AND last_error_code = $4")).bind(code);
            RetryOutcome {
                requeued: tx.execute(stmt).await?,
                skipped: Vec::new(),
            }
        }
        RetrySelection::Uuids(uuids) => {
            requeue_named(&mut tx, db.dialect(), uuids, &requeue).await?
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Requeues the named calls that may be; the rest, in the order named, with the state that
/// kept them (a uuid named twice is skipped the second time: it is pending by then).
async fn requeue_named(
    tx: &mut impl Tx,
    kind: BackendKind,
    uuids: &[CallUuid],
    requeue: &(dyn Fn(String) -> Stmt + Send + Sync),
) -> Result<RetryOutcome, LedgerError> {
    let mut named: Vec<&str> = uuids.iter().map(CallUuid::as_str).collect();
    named.sort_unstable();
    named.dedup();
    let mut requeued: HashSet<String> = HashSet::new();
    let mut states: HashMap<String, RecordState> = HashMap::new();
    let account = tx.account().to_owned();
    for chunk in named.chunks(max_params(kind) - 3) {
        let list = params(4, chunk.len());
        let stmt = requeue(format!("{REQUEUE} AND uuid IN ({list}) RETURNING uuid"));
        for row in tx
            .fetch_all(chunk.iter().fold(stmt, |s, u| s.bind(*u)))
            .await?
        {
            requeued.insert(row.text("uuid")?);
        }
        let stmt = Stmt::new(
            format!(
                "SELECT uuid, state FROM calls WHERE account = $1 AND uuid IN ({})",
                params(2, chunk.len())
            ),
            "reading records' states",
        )
        .bind(&account);
        for row in tx
            .fetch_all(chunk.iter().fold(stmt, |s, u| s.bind(*u)))
            .await?
        {
            states.insert(row.text("uuid")?, row.state("state")?);
        }
    }
    let mut outcome = RetryOutcome {
        requeued: requeued.len() as u64,
        skipped: Vec::new(),
    };
    for uuid in uuids {
        if !requeued.remove(uuid.as_str()) {
            outcome
                .skipped
                .push((uuid.clone(), states.get(uuid.as_str()).copied()));
        }
    }
    Ok(outcome)
}
