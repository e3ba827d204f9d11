//! Reconciliation with the provider's bill list: the bills `sync` reads, matched to the calls
//! the ledger already holds (by uuid, else by bill id within the company, else by record
//! file name) so that no call is ever stored twice; the syncs themselves (window, progress,
//! findings) with the checkpoint the next sync continues from; and the completeness report
//! built from both.
//!
//! A receiver and a sync (in two processes, on any machines) may store the same call at
//! once, one from its callback, one from its bill, under different keys (the bill often has
//! no uuid). A transaction that stores calls therefore begins through
//! [`StoreCalls::begin_storing`], which holds off every other transaction storing the same
//! calls until it ends, and only then looks for their rows: whichever comes second sees the
//! first's row and joins it, so a call is never stored twice. How that is held is the one
//! thing the backends do differently (SQLite's write lock, PostgreSQL's advisory locks);
//! the matching, the rows written and the reports are written once, here.

use std::collections::HashSet;
use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde::Serialize;

use super::sql::{Db, JsonRows, Row, Stmt, Tx, json_arg, pick, retry_conflicts};
use super::{BackendKind, ImportOutcome, LedgerError, Table};
use crate::domain::{CallRecord, RecordState};

/// The id of one `callvault sync` (or scheduled sync).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct SyncId(String);

impl SyncId {
    /// A fresh id: `sync-<UTC time>-<8 hex digits>`, sortable by start.
    pub fn generate() -> Self {
        Self(format!(
            "sync-{}-{}",
            Utc::now().format("%Y%m%dT%H%M%SZ"),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ))
    }

    pub fn from_ledger(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SyncId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    /// Still running, or its process died (its `covered_until` still counts).
    Running,
    /// Read every bill of its window.
    Completed,
    /// Stopped by a provider or ledger problem; what it covered counts.
    Failed,
    /// The provider refused the credentials.
    CredentialsRefused,
}

impl SyncStatus {
    pub const ALL: [SyncStatus; 4] = [
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::CredentialsRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::CredentialsRefused => "credentials_refused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// What a sync has done so far; written after every window, so a sync that dies keeps what
/// it covered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncProgress {
    /// Every bill of a call that started before this has been read and matched.
    pub covered_until: Option<DateTime<Utc>>,
    /// Bills read (after de-duplication within the sync).
    pub bills: i64,
    /// Calls the ledger did not know: their callback never came.
    pub found: i64,
    /// Calls known without a recording that the bill gave one.
    pub recordings_added: i64,
    /// Bills that named no call (neither uuid nor id) and could not be matched.
    pub unreadable: i64,
    /// Requests made to the provider (pages, logins).
    pub requests: i64,
}

/// One sync as the ledger keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct SyncRow {
    pub id: SyncId,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: SyncStatus,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub exit_code: Option<i64>,
    #[serde(flatten)]
    pub progress: SyncProgress,
}

/// What `status` and `/metrics` show of the syncs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncFigures {
    pub last_sync: Option<SyncRow>,
    /// When the last sync that read its whole window finished.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Calls known only from the bill list: their callback never came.
    pub found_by_sync: i64,
    /// Calls stored with fields that could not be read (see their `notes`).
    pub noted: i64,
}

/// One day (in the provider's zone) of one company in the completeness report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DayCompleteness {
    pub day: Option<NaiveDate>,
    pub company_code: String,
    /// Calls a sync saw in the provider's bill list.
    pub provider_listed: i64,
    /// Calls in the ledger.
    pub in_ledger: i64,
    pub archived: i64,
    /// Pending or in progress.
    pub pending: i64,
    /// Failed or expired.
    pub failed: i64,
    pub no_recording: i64,
    /// Known only from the bill list: the callback never came.
    pub found_by_sync: i64,
    /// Not archived (and with a recording) and within 14 days of the provider's deletion.
    pub at_risk: i64,
}

impl DayCompleteness {
    /// Every call of the day is either archived or has no recording, and the ledger holds
    /// at least every call the provider listed.
    pub fn complete(&self) -> bool {
        self.archived + self.no_recording == self.in_ledger
            && self.in_ledger >= self.provider_listed
    }
}

#[async_trait]
pub trait Syncs: Send + Sync {
    /// Matches each bill to the call the ledger holds (by uuid, else bill id within the
    /// company, else record file name) and notes that the provider listed it; a call the
    /// ledger lacks is stored (`New`: pending with a recording, else `no_recording`), one
    /// known without a recording gets the bill's (`RecordingAdded`); a call's callback data
    /// is never replaced by its bill's. Safe against callbacks of the same calls arriving at
    /// once (one row per call).
    async fn import_bills(
        &self,
        bills: &[CallRecord],
        now: DateTime<Utc>,
    ) -> Result<Vec<ImportOutcome>, LedgerError>;

    async fn start_sync(&self, sync: &SyncRow) -> Result<(), LedgerError>;

    async fn record_sync_progress(
        &self,
        id: &SyncId,
        progress: &SyncProgress,
    ) -> Result<(), LedgerError>;

    async fn finish_sync(
        &self,
        id: &SyncId,
        status: SyncStatus,
        progress: &SyncProgress,
        exit_code: i32,
        finished_at: DateTime<Utc>,
    ) -> Result<(), LedgerError>;

    /// Where the bill list has been read up to: the newest `covered_until` of any sync.
    async fn sync_checkpoint(&self) -> Result<Option<DateTime<Utc>>, LedgerError>;

    async fn sync_figures(&self) -> Result<SyncFigures, LedgerError>;

    /// Applies the callbacks kept for calls a pass held when they came (see
    /// [`super::takeovers`]) to the rows no pass holds now; how many it applied. Run at the
    /// end of every pass and before every sync.
    async fn apply_takeovers(&self, now: DateTime<Utc>) -> Result<u64, LedgerError>;

    /// Per day (calls by start in `tz`; undated calls by the day they were received) and
    /// company, for calls in `[since, until)`; `risk_line` as in `status`.
    async fn completeness(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        tz: FixedOffset,
        risk_line: DateTime<Utc>,
    ) -> Result<Vec<DayCompleteness>, LedgerError>;
}

/// What storing calls asks of a backend besides running statements.
#[async_trait]
pub(crate) trait StoreCalls: Db {
    /// Begins a transaction that stores `records`' calls, holding off any other transaction
    /// storing the same calls until it ends (see the module documentation).
    async fn begin_storing(&self, records: &[&CallRecord]) -> Result<Self::Tx, LedgerError>;

    /// Indexes for search, in `tx`, the calls queued for it: those `imported` records
    /// queued, and as many again of any backlog.
    async fn index_for_search(
        &self,
        tx: &mut Self::Tx,
        imported: usize,
    ) -> Result<(), LedgerError> {
        super::search::refresh_batch(tx, self.dialect(), super::search::with_import(imported))
            .await?;
        Ok(())
    }
}

/// The sync columns [`sync_from_row`] reads.
macro_rules! sync_columns {
    () => {
        "id, started_at, finished_at, status, since, until, exit_code, covered_until, bills, \
         found, recordings_added, unreadable, requests"
    };
}

/// The account's last sync (`status`), from `syncs_started`.
pub(crate) const LAST_SYNC: &str = concat!(
    "SELECT ",
    sync_columns!(),
    " FROM syncs WHERE account = $1 ORDER BY started_at DESC, id DESC LIMIT 1"
);

fn sync_from_row(row: &impl Row) -> Result<SyncRow, LedgerError> {
    let status = row.text("status")?;
    Ok(SyncRow {
        id: SyncId::from_ledger(row.text("id")?),
        started_at: row.time("started_at")?,
        finished_at: row.opt_time("finished_at")?,
        status: SyncStatus::parse(&status)
            .ok_or_else(|| LedgerError::Corrupt(format!("sync status {status:?}")))?,
        since: row.time("since")?,
        until: row.time("until")?,
        exit_code: row.opt_int("exit_code")?,
        progress: SyncProgress {
            covered_until: row.opt_time("covered_until")?,
            bills: row.int("bills")?,
            found: row.int("found")?,
            recordings_added: row.int("recordings_added")?,
            unreadable: row.int("unreadable")?,
            requests: row.int("requests")?,
        },
    })
}

/// The figures besides the last sync, in one statement. The two counts are answered from
/// their partial indexes (`calls_from_bills`, `calls_noted`: migrations `*_perf.sql`), so
/// `status` costs the same with ten thousand calls as with ten million; keep their `WHERE`
/// as it is, or the planner no longer sees that the index covers it.
pub(crate) const SYNC_FIGURES: &str = "SELECT
     (SELECT max(finished_at) FROM syncs WHERE account = $1 AND status = 'completed')
         AS last_success,
     (SELECT count(*) FROM calls WHERE origin = 'bill' AND account = $1) AS found_by_sync,
     (SELECT count(*) FROM calls WHERE notes IS NOT NULL AND account = $1) AS noted";

/// The completeness report's statement with `$day` the day (`YYYY-MM-DD` text) in the
/// provider's zone of a call filed at `filed`, `$3` the zone's offset in seconds.
macro_rules! completeness_sql {
    ($day:literal) => {
        concat!(
            "SELECT ",
            $day,
            " AS day, company_code,
                    count(*) FILTER (WHERE bill_seen_at IS NOT NULL) AS listed,
                    count(*) AS in_ledger,
                    count(*) FILTER (WHERE state = 'archived') AS archived,
                    count(*) FILTER (WHERE state IN ('pending', 'in_progress')) AS pending,
                    count(*) FILTER (WHERE state IN ('failed', 'expired')) AS failed,
                    count(*) FILTER (WHERE state = 'no_recording') AS no_recording,
                    count(*) FILTER (WHERE origin = 'bill') AS found_by_sync,
                    count(*) FILTER (WHERE state IN ('pending', 'in_progress', 'failed')
                                       AND filed < $4) AS at_risk
             FROM (SELECT COALESCE(call_start, imported_at) AS filed, company_code, state,
                          origin, bill_seen_at
                   FROM calls WHERE account = $5) AS c
             WHERE filed >= $1 AND filed < $2
             GROUP BY day, company_code ORDER BY day, company_code"
        )
    };
}

/// SQLite shifts its time text with a date modifier (`'28800 seconds'`); PostgreSQL shifts
/// the UTC wall time by an interval.
const COMPLETENESS_SQLITE: &str = completeness_sql!("date(filed, $3 || ' seconds')");
const COMPLETENESS_POSTGRES: &str = completeness_sql!(
    "to_char((filed AT TIME ZONE 'UTC') + make_interval(secs => $3), 'YYYY-MM-DD')"
);

fn day_from_row(row: &impl Row) -> Result<DayCompleteness, LedgerError> {
    let day = row.opt_text("day")?;
    Ok(DayCompleteness {
        day: day.and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok()),
        company_code: row.text("company_code")?,
        provider_listed: row.int("listed")?,
        in_ledger: row.int("in_ledger")?,
        archived: row.int("archived")?,
        pending: row.int("pending")?,
        failed: row.int("failed")?,
        no_recording: row.int("no_recording")?,
        found_by_sync: row.int("found_by_sync")?,
        at_risk: row.int("at_risk")?,
    })
}

#[async_trait]
impl<D: StoreCalls> Syncs for D {
    async fn apply_takeovers(&self, now: DateTime<Utc>) -> Result<u64, LedgerError> {
        retry_conflicts(|| super::takeovers::apply(self, now)).await
    }

    async fn import_bills(
        &self,
        bills: &[CallRecord],
        now: DateTime<Utc>,
    ) -> Result<Vec<ImportOutcome>, LedgerError> {
        if bills.is_empty() {
            return Ok(Vec::new());
        }
        let records: Vec<&CallRecord> = bills.iter().collect();
        retry_conflicts(|| async {
            let mut tx = self.begin_storing(&records).await?;
            let mut outcomes = Vec::with_capacity(bills.len());
            for bill in bills {
                outcomes.push(import_bill(&mut tx, bill, now).await?);
            }
            self.index_for_search(&mut tx, bills.len()).await?;
            tx.commit().await?;
            Ok(outcomes)
        })
        .await
    }

    async fn start_sync(&self, sync: &SyncRow) -> Result<(), LedgerError> {
        self.execute(
            Stmt::new(
                "INSERT INTO syncs (id, started_at, status, since, until, account)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                "recording the start of a sync",
            )
            .bind(sync.id.as_str())
            .bind(sync.started_at)
            .bind(sync.status.as_str())
            .bind(sync.since)
            .bind(sync.until)
            .bind(self.account()),
        )
        .await?;
        Ok(())
    }

    async fn record_sync_progress(&self, id: &SyncId, p: &SyncProgress) -> Result<(), LedgerError> {
        self.execute(
            Stmt::new(
                "UPDATE syncs SET covered_until = $2, bills = $3, found = $4,
                        recordings_added = $5, unreadable = $6, requests = $7
                 WHERE id = $1",
                "recording a sync's progress",
            )
            .bind(id.as_str())
            .bind(p.covered_until)
            .bind(p.bills)
            .bind(p.found)
            .bind(p.recordings_added)
            .bind(p.unreadable)
            .bind(p.requests),
        )
        .await?;
        Ok(())
    }

    async fn finish_sync(
        &self,
        id: &SyncId,
        status: SyncStatus,
        p: &SyncProgress,
        exit_code: i32,
        finished_at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.record_sync_progress(id, p).await?;
        self.execute(
            Stmt::new(
                "UPDATE syncs SET status = $2, exit_code = $3, finished_at = $4 WHERE id = $1",
                "recording the end of a sync",
            )
            .bind(id.as_str())
            .bind(status.as_str())
            .bind(exit_code)
            .bind(finished_at),
        )
        .await?;
        Ok(())
    }

    async fn sync_checkpoint(&self) -> Result<Option<DateTime<Utc>>, LedgerError> {
        self.fetch_one(
            Stmt::new(
                "SELECT max(covered_until) AS newest FROM syncs WHERE account = $1",
                "reading the sync checkpoint",
            )
            .bind(self.account()),
        )
        .await?
        .opt_time("newest")
    }

    async fn sync_figures(&self) -> Result<SyncFigures, LedgerError> {
        const CONTEXT: &str = "reading the sync figures";
        let last = self
            .fetch_optional(Stmt::new(LAST_SYNC, CONTEXT).bind(self.account()))
            .await?;
        let figures = self
            .fetch_one(Stmt::new(SYNC_FIGURES, CONTEXT).bind(self.account()))
            .await?;
        Ok(SyncFigures {
            last_sync: last.as_ref().map(sync_from_row).transpose()?,
            last_success_at: figures.opt_time("last_success")?,
            found_by_sync: figures.int("found_by_sync")?,
            noted: figures.int("noted")?,
        })
    }

    async fn completeness(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        tz: FixedOffset,
        risk_line: DateTime<Utc>,
    ) -> Result<Vec<DayCompleteness>, LedgerError> {
        let sql = pick(self.dialect(), COMPLETENESS_SQLITE, COMPLETENESS_POSTGRES);
        let rows = self
            .fetch_all(
                Stmt::new(sql, "reading the completeness report")
                    .bind(since)
                    .bind(until)
                    .bind(i64::from(tz.local_minus_utc()))
                    .bind(risk_line)
                    .bind(self.account()),
            )
            .await?;
        rows.iter().map(day_from_row).collect()
    }
}

/// The call a bill names ($1 uuid, $2 bill id, $3 company, $4 record file; $5 the
/// account, whose rows are the only ones looked at): by uuid, else
/// by bill id within the company, else by record file name. `record_file <> ''` is
/// written out, though `$4 <> ''` implies it, so that the planner may use the partial
/// index `calls_record_file` without knowing `$4`.
const MATCH_BILL: &str = "SELECT uuid, state FROM (
         SELECT uuid, state, 0 AS rank FROM calls WHERE account = $5 AND uuid = $1
         UNION ALL
         SELECT uuid, state, 1 AS rank FROM calls
         WHERE $2 IS NOT NULL AND company_code = $3 AND bill_id = $2 AND account = $5
         UNION ALL
         SELECT uuid, state, 2 AS rank FROM calls
         WHERE $4 <> '' AND record_file <> '' AND record_file = $4 AND account = $5
     ) AS matches ORDER BY rank, uuid LIMIT 1";

/// Matches one bill and records what it tells (see [`Syncs::import_bills`]).
async fn import_bill<T: Tx>(
    tx: &mut T,
    bill: &CallRecord,
    now: DateTime<Utc>,
) -> Result<ImportOutcome, LedgerError> {
    const CONTEXT: &str = "matching a bill to its call";
    let found = tx
        .fetch_optional(
            Stmt::new(MATCH_BILL, CONTEXT)
                .bind(&bill.uuid)
                .bind(bill.bill_id.as_deref())
                .bind(&bill.company_code)
                .bind(bill.record_file.trim())
                .bind(tx.account().to_owned()),
        )
        .await?;
    let Some(found) = found else {
        store_found_call(tx, bill, now).await?;
        return Ok(ImportOutcome::New);
    };
    let (uuid, state) = (found.text("uuid")?, found.state("state")?);
    // What the callback could not tell is filled in from the bill; nothing it told changes.
    tx.execute(
        Stmt::new(
            "UPDATE calls SET bill_seen_at = $2, bill_id = COALESCE(bill_id, $3),
                    company_code = CASE WHEN company_code = '' THEN $4 ELSE company_code END,
                    call_start = COALESCE(call_start, $5), billsec = COALESCE(billsec, $6)
             WHERE account = $7 AND uuid = $1",
            CONTEXT,
        )
        .bind(&uuid)
        .bind(now)
        .bind(bill.bill_id.as_deref())
        .bind(&bill.company_code)
        .bind(bill.call_start)
        .bind(bill.billsec)
        .bind(tx.account().to_owned()),
    )
    .await?;
    if state != RecordState::NoRecording || !bill.has_recording() {
        return Ok(ImportOutcome::Known);
    }
    tx.execute(
        Stmt::new(
            "UPDATE calls SET record_file = $2, state = 'pending', next_attempt_at = $3,
                    updated_at = $3
             WHERE account = $4 AND uuid = $1 AND state = 'no_recording'",
            "adding a recording a bill names",
        )
        .bind(&uuid)
        .bind(bill.record_file.trim())
        .bind(now)
        .bind(tx.account().to_owned()),
    )
    .await?;
    Ok(ImportOutcome::RecordingAdded)
}

/// Stores a call the ledger lacked: pending if its bill names a recording, else
/// `no_recording`; known only from the bill list (`origin = 'bill'`) until its callback
/// comes.
async fn store_found_call<T: Tx>(
    tx: &mut T,
    bill: &CallRecord,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let state = if bill.has_recording() {
        RecordState::Pending
    } else {
        RecordState::NoRecording
    };
    tx.execute(
        Stmt::new(
            "INSERT INTO calls (uuid, company_code, record_file, call_start, billsec, raw_json,
                                state, next_attempt_at, imported_at, updated_at, bill_id, notes,
                                origin, bill_seen_at, account)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $8, $9, $10, 'bill', $8, $11)",
            "storing a call found by sync",
        )
        .bind(&bill.uuid)
        .bind(&bill.company_code)
        .bind(bill.record_file.trim())
        .bind(bill.call_start)
        .bind(bill.billsec)
        .bind(&bill.raw_json)
        .bind(state.as_str())
        .bind(now)
        .bind(bill.bill_id.as_deref())
        .bind(bill.notes.as_deref())
        .bind(tx.account().to_owned()),
    )
    .await?;
    Ok(())
}

/// Records matched per statement when callbacks look for the rows sync found (each list one
/// JSON argument; a record's candidate is looked for among the chunk's bill-only rows).
const MATCHES_PER_STATEMENT: usize = 1_000;

/// A row known only from the bill list that a callback may take over.
struct BillRow {
    uuid: String,
    company: String,
    bill_id: Option<String>,
    file: String,
    /// A pass holds it: the callback waits (see [`super::takeovers`]).
    in_progress: bool,
}

/// Lets each of `records` (callbacks, in a transaction begun by
/// [`StoreCalls::begin_storing`]) take over the row sync found for its call, if any: the
/// row of its uuid if that one came from a bill; else, while its uuid has no row, a
/// bill-only row with its bill id in its company, else with its record file name (the
/// lowest uuid first). Returns the uuids that did; a uuid repeated in `records` is matched
/// once, for its first record.
pub(crate) async fn take_over_bill_rows<T: Tx>(
    tx: &mut T,
    kind: BackendKind,
    records: &[&CallRecord],
    now: DateTime<Utc>,
) -> Result<HashSet<String>, LedgerError> {
    let mut merged = HashSet::new();
    let mut seen = HashSet::new();
    let firsts: Vec<&CallRecord> = records
        .iter()
        .copied()
        .filter(|r| seen.insert(r.uuid.as_str()))
        .collect();
    for chunk in firsts.chunks(MATCHES_PER_STATEMENT) {
        let (mut candidates, existing) = known_rows(tx, kind, chunk).await?;
        for rec in chunk {
            let Some(index) = pick_bill_row(&candidates, rec, &existing) else {
                continue;
            };
            // `remove` keeps the others in uuid order.
            let bill_row = candidates.remove(index);
            // Read without a lock: a pass may have claimed it since (its attempt would then
            // name the uuid this takeover deletes).
            if bill_row.in_progress || super::takeovers::held(tx, &bill_row.uuid).await? {
                super::takeovers::defer(tx, &bill_row.uuid, rec, now).await?;
            } else {
                take_over(tx, &bill_row.uuid, rec, now).await?;
            }
            merged.insert(rec.uuid.as_str().to_owned());
        }
    }
    Ok(merged)
}

/// Which of `candidates` (by uuid) `rec` takes over, if any.
fn pick_bill_row(
    candidates: &[BillRow],
    rec: &CallRecord,
    existing: &HashSet<String>,
) -> Option<usize> {
    let own = rec.uuid.as_str();
    if existing.contains(own) {
        return candidates.iter().position(|c| c.uuid == own);
    }
    let by_bill = rec.bill_id.as_deref().and_then(|id| {
        candidates
            .iter()
            .position(|c| c.company == rec.company_code && c.bill_id.as_deref() == Some(id))
    });
    let file = rec.record_file.trim();
    by_bill.or_else(|| {
        candidates
            .iter()
            .position(|c| !file.is_empty() && c.file == file)
    })
}

/// The rows `records` may match, in one statement whose every branch probes its own index
/// (the primary key, `calls_bill`, `calls_record_file`); `origin` is checked on the rows,
/// not in SQL, where it would let the planner walk every bill-only row instead. Returns the
/// bill-only rows, by uuid, and which of `records`' uuids have a row at all.
async fn known_rows<T: Tx>(
    tx: &mut T,
    kind: BackendKind,
    records: &[&CallRecord],
) -> Result<(Vec<BillRow>, HashSet<String>), LedgerError> {
    let own: HashSet<&str> = records.iter().map(|r| r.uuid.as_str()).collect();
    let (mut candidates, mut existing) = (Vec::new(), HashSet::new());
    let stmt = known_rows_stmt(kind, tx.account(), records)?;
    for row in tx.fetch_all(stmt).await? {
        let uuid = row.text("uuid")?;
        if own.contains(uuid.as_str()) {
            existing.insert(uuid.clone());
        }
        if row.text("origin")? == "bill" {
            candidates.push(BillRow {
                uuid,
                company: row.text("company_code")?,
                bill_id: row.opt_text("bill_id")?,
                file: row.text("record_file")?,
                in_progress: row.text("state")? == RecordState::InProgress.as_str(),
            });
        }
    }
    // In uuid order here, not in SQL: an `ORDER BY` would make SQLite walk each branch
    // through the primary key (already in uuid order within the account) instead of the
    // bill and file indexes.
    candidates.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    Ok((candidates, existing))
}

/// The statement [`known_rows`] runs: rows by uuid, by bill id within the companies named,
/// by record file name; each list one JSON argument ([`JsonRows::contains`]).
fn known_rows_stmt(
    kind: BackendKind,
    account: &str,
    records: &[&CallRecord],
) -> Result<Stmt, LedgerError> {
    const COLUMNS: &str =
        "SELECT uuid, origin, company_code, bill_id, record_file, state FROM calls";
    let mut companies: Vec<&str> = Vec::new();
    let mut bill_ids: Vec<&str> = Vec::new();
    for r in records {
        if let Some(id) = r.bill_id.as_deref() {
            companies.push(&r.company_code);
            bill_ids.push(id);
        }
    }
    companies.sort_unstable();
    companies.dedup();
    let files: Vec<&str> = records
        .iter()
        .map(|r| r.record_file.trim())
        .filter(|f| !f.is_empty())
        .collect();
    let uuids: Vec<&str> = records.iter().map(|r| r.uuid.as_str()).collect();
    let is_in = |column, n| JsonRows::new(kind, n).contains(column);
    let mut sql = format!("{COLUMNS} WHERE account = $1 AND {}", is_in("uuid", 2));
    if !bill_ids.is_empty() {
        sql.push_str(&format!(
            " UNION {COLUMNS} WHERE account = $1 AND {} AND {}",
            is_in("company_code", 3),
            is_in("bill_id", 4)
        ));
    }
    if !files.is_empty() {
        sql.push_str(&format!(
            " UNION {COLUMNS} WHERE account = $1 AND record_file <> '' AND {}",
            is_in("record_file", 5)
        ));
    }
    let stmt = Stmt::new(sql, "matching callbacks to calls found by sync").bind(account);
    [uuids, companies, bill_ids, files]
        .iter()
        .try_fold(stmt, |s, values| Ok(s.bind(json_arg(values)?)))
}

/// Copies a call's row under another uuid: every column but the uuid.
static COPY_CALL: LazyLock<String> = LazyLock::new(|| {
    let others = Table::Calls
        .columns()
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| *c != "uuid")
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO calls (uuid, {others}) SELECT $1, {others} FROM calls
         WHERE account = $3 AND uuid = $2"
    )
});

/// Gives the row `from` (found by sync) `rec`'s uuid, raw record and the fields it could
/// read; the row keeps its archival state, attempts and object, and its recording if it had
/// one. A row without a recording that now has one becomes pending. The uuid moves by
/// copying the row, moving its attempts and deleting the old one, so the per-state counts
/// (kept by triggers; PostgreSQL's statement triggers join old and new rows on uuid) stay
/// exact.
pub(crate) async fn take_over<T: Tx>(
    tx: &mut T,
    from: &str,
    rec: &CallRecord,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    const CONTEXT: &str = "joining a callback to the call sync found";
    if from != rec.uuid.as_str() {
        let copy: &'static str = &COPY_CALL;
        let account = tx.account().to_owned();
        tx.execute(
            Stmt::new(copy, CONTEXT)
                .bind(&rec.uuid)
                .bind(from)
                .bind(&account),
        )
        .await?;
        tx.execute(
            Stmt::new(
                "UPDATE attempts SET call_uuid = $1 WHERE account = $3 AND call_uuid = $2",
                CONTEXT,
            )
            .bind(&rec.uuid)
            .bind(from)
            .bind(&account),
        )
        .await?;
        tx.execute(
            Stmt::new(
                "DELETE FROM calls WHERE account = $2 AND uuid = $1",
                CONTEXT,
            )
            .bind(from)
            .bind(&account),
        )
        .await?;
    }
    tx.execute(
        Stmt::new(
            "UPDATE calls SET raw_json = $2,
                    company_code = CASE WHEN $3 <> '' THEN $3 ELSE company_code END,
                    call_start = COALESCE($4, call_start), billsec = COALESCE($5, billsec),
                    bill_id = COALESCE($6, bill_id), notes = $7, origin = 'callback',
                    record_file = CASE WHEN record_file = '' THEN $8 ELSE record_file END,
                    updated_at = $9
             WHERE account = $10 AND uuid = $1",
            CONTEXT,
        )
        .bind(&rec.uuid)
        .bind(&rec.raw_json)
        .bind(&rec.company_code)
        .bind(rec.call_start)
        .bind(rec.billsec)
        .bind(rec.bill_id.as_deref())
        .bind(rec.notes.as_deref())
        .bind(rec.record_file.trim())
        .bind(now)
        .bind(tx.account().to_owned()),
    )
    .await?;
    tx.execute(
        Stmt::new(
            "UPDATE calls SET state = 'pending', next_attempt_at = $2, updated_at = $2
             WHERE account = $3 AND uuid = $1 AND state = 'no_recording' AND record_file <> ''",
            CONTEXT,
        )
        .bind(&rec.uuid)
        .bind(now)
        .bind(tx.account().to_owned()),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CallUuid;
    use crate::ledger::LedgerOptions;
    use crate::ledger::sqlite::SqliteLedger;

    fn found(uuid: &str, company: &str, bill_id: Option<&str>, file: &str) -> BillRow {
        BillRow {
            uuid: uuid.to_owned(),
            company: company.to_owned(),
            bill_id: bill_id.map(str::to_owned),
            file: file.to_owned(),
            in_progress: false,
        }
    }

    fn callback(uuid: &str, company: &str, bill_id: Option<&str>, file: &str) -> CallRecord {
        let uuid = CallUuid::parse(uuid).unwrap_or_else(|| panic!("test uuid {uuid:?}"));
        let mut rec = CallRecord::new(uuid, company, file, "{}");
        rec.bill_id = bill_id.map(str::to_owned);
        rec
    }

    #[test]
    fn a_callback_takes_over_its_own_row_else_its_bill_in_its_company_else_its_file() {
        // By uuid, as the matcher keeps them.
        let candidates = [
            found("b-1", "acme", Some("7"), "x.wav"),
            found("b-2", "other", Some("9"), "y.wav"),
            found("b-3", "other", Some("7"), "z.wav"),
            found("own", "acme", None, ""),
        ];
        let none = HashSet::new();
        let exists = |uuid: &str| HashSet::from([uuid.to_owned()]);
        let cases = [
            // A known uuid joins only its own row, if that one came from a bill.
            (
                callback("own", "acme", Some("7"), "z.wav"),
                exists("own"),
                Some(3),
            ),
            (
                callback("cb", "acme", Some("7"), "x.wav"),
                exists("cb"),
                None,
            ),
            // A new uuid: its bill id within its company first, then its file name.
            (
                callback("cb", "other", Some("7"), "x.wav"),
                none.clone(),
                Some(2),
            ),
            (
                callback("cb", "acme", Some("9"), "y.wav"),
                none.clone(),
                Some(1),
            ),
            (callback("cb", "acme", None, "z.wav"), none.clone(), Some(2)),
            // Unanswered (no file) and no bill id: nothing to match by.
            (callback("cb", "acme", None, ""), none.clone(), None),
        ];
        for (rec, existing, expected) in cases {
            assert_eq!(
                pick_bill_row(&candidates, &rec, &existing),
                expected,
                "{rec:?}"
            );
        }
    }

    use crate::ledger::sqlite::query_plan as plan;

    /// Matching bills and callbacks probes indexes (no step scans `calls`), and the sync
    /// figures count from their partial indexes.
    #[tokio::test]
    async fn matching_reads_through_indexes_and_figures_through_partial_ones() {
        let ledger = SqliteLedger::open("sqlite::memory:", &LedgerOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let a = callback("a", "acme", Some("7"), "a.wav");
        let b = callback("b", "other", Some("8"), "b.wav");
        let matching = [
            plan(
                &ledger,
                known_rows_stmt(BackendKind::Sqlite, "default", &[&a, &b])
                    .unwrap_or_else(|e| panic!("{e}")),
            )
            .await,
            plan(
                &ledger,
                Stmt::new(MATCH_BILL, "test")
                    .bind(&a.uuid)
                    .bind(a.bill_id.as_deref())
                    .bind(&a.company_code)
                    .bind(a.record_file.as_str())
                    .bind("default"),
            )
            .await,
        ];
        for steps in &matching {
            assert!(
                steps.iter().all(|s| !s.starts_with("SCAN calls")),
                "{steps:?}"
            );
            for index in [
                "(account=? AND uuid=?)",
                "calls_bill (",
                "calls_record_file (",
            ] {
                assert!(
                    steps.iter().any(|s| s.contains(index)),
                    "{index}: {steps:?}"
                );
            }
        }
        let figures = plan(&ledger, Stmt::new(SYNC_FIGURES, "test").bind("default"))
            .await
            .join("\n");
        assert!(figures.contains("calls_noted"), "{figures}");
        assert!(
            figures.contains("calls_origin") || figures.contains("calls_from_bills"),
            "{figures}"
        );
    }
}
