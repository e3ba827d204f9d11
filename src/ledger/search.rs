//! Finding calls the way the people who ask for them search: by a phone number (or its last
//! digits), an extension, an agent, a company, a date range, a state or a uuid; and one
//! call's whole story. Used by `callvault find`, the web page, and by the commands that act
//! on a selection of calls (holds, erasure), so the query type is the one way to name "these
//! calls".
//!
//! Numbers, extensions and agents exist only in the callback's raw JSON; the ledger keeps
//! them as search terms (`call_terms`, see the migration `*_access_log.sql`), a number's
//! digits reversed so that a suffix is an index range. The terms are derived here, in Rust,
//! with the callback's lenient parser ([`CallParties::of`]); the ledger rewrites the terms
//! of the calls its triggers queued before it searches ([`refresh_batch`]), and each import
//! indexes its own calls in its own transaction ([`with_import`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::sql::{self, Db, Row, Stmt, Tx, pick};
use super::{BackendKind, LedgerError};
use crate::domain::{AttemptOutcome, CallUuid, RecordState};
use crate::timefmt::{from_ledger, to_ledger};

/// The most calls one page may hold.
pub const MAX_PAGE: u32 = 10_000;

/// A phone number as searched and indexed: its digits only (`+49 (0)30-1234` is
/// `490301234`). Never empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// The digits of `raw`; `None` when it has none.
    pub fn parse(raw: &str) -> Option<Self> {
        let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
        (!digits.is_empty()).then_some(Self(digits))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits in reverse: how the ledger indexes a number, so that "ends with" is a
    /// prefix of the reversed text.
    pub fn reversed(&self) -> String {
        self.0.chars().rev().collect()
    }
}

/// Where a search resumes: after the last call of the previous page, in the order calls are
/// listed (dated calls by start then uuid, then undated calls by uuid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallCursor {
    Dated(DateTime<Utc>, CallUuid),
    Undated(CallUuid),
}

impl CallCursor {
    /// The cursor that continues after `call`.
    pub fn after(call: &CallSummary) -> Self {
        match call.call_start {
            Some(start) => Self::Dated(start, call.uuid.clone()),
            None => Self::Undated(call.uuid.clone()),
        }
    }

    /// `START/UUID` (start in the ledger's UTC text) or `-/UUID` for an undated call:
    /// printed by `find` for the next page, read back by `--after`.
    pub fn parse(raw: &str) -> Option<Self> {
        let (start, uuid) = raw.split_once('/')?;
        let uuid = CallUuid::parse(uuid)?;
        match start {
            "-" => Some(Self::Undated(uuid)),
            s => Some(Self::Dated(from_ledger(s)?, uuid)),
        }
    }
}

impl std::fmt::Display for CallCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dated(start, uuid) => write!(f, "{}/{uuid}", to_ledger(*start)),
            Self::Undated(uuid) => write!(f, "-/{uuid}"),
        }
    }
}

/// Which calls: every filter set must hold (AND). Calls come sorted by call start (oldest
/// first, undated calls last), then uuid; `limit` of them after `after`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallQuery {
    /// Caller, callee or displayed number equal to, or ending with, these digits.
    pub number: Option<PhoneNumber>,
    /// The extension (`extnumber`), exactly.
    pub extension: Option<String>,
    /// The agent (`crmid` or `userid`), exactly.
    pub agent: Option<String>,
    pub company: Option<String>,
    /// Calls that started at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Calls that started before this instant.
    pub until: Option<DateTime<Utc>>,
    /// Any of these states (none: any state).
    pub states: Vec<RecordState>,
    /// Any of these calls (none: any call).
    pub uuids: Vec<CallUuid>,
    /// At most this many calls (at least 1, at most [`MAX_PAGE`]).
    pub limit: u32,
    pub after: Option<CallCursor>,
}

impl CallQuery {
    /// A query for every call, `limit` at a time.
    pub fn all(limit: u32) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    /// Whether no filter is set (every call matches): commands that change calls refuse it.
    pub fn selects_everything(&self) -> bool {
        self.number.is_none()
            && self.extension.is_none()
            && self.agent.is_none()
            && self.company.is_none()
            && self.since.is_none()
            && self.until.is_none()
            && self.states.is_empty()
            && self.uuids.is_empty()
    }

    /// The page size actually used.
    pub fn page_size(&self) -> u32 {
        self.limit.clamp(1, MAX_PAGE)
    }

    /// The filters as text, for the access log (`number=13692 agent=2001 since=…`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = &self.number {
            parts.push(format!("number={}", n.as_str()));
        }
        if let Some(e) = &self.extension {
            parts.push(format!("extension={e}"));
        }
        if let Some(a) = &self.agent {
            parts.push(format!("agent={a}"));
        }
        if let Some(c) = &self.company {
            parts.push(format!("company={c}"));
        }
        if let Some(t) = self.since {
            parts.push(format!("since={}", to_ledger(t)));
        }
        if let Some(t) = self.until {
            parts.push(format!("until={}", to_ledger(t)));
        }
        if !self.states.is_empty() {
            let states: Vec<&str> = self.states.iter().map(|s| s.as_str()).collect();
            parts.push(format!("state={}", states.join(",")));
        }
        if !self.uuids.is_empty() {
            let uuids: Vec<&str> = self.uuids.iter().map(|u| u.as_str()).collect();
            parts.push(format!("uuid={}", uuids.join(",")));
        }
        if let Some(after) = &self.after {
            parts.push(format!("after={after}"));
        }
        parts.push(format!("limit={}", self.page_size()));
        parts.join(" ")
    }
}

/// The people and numbers of a call, read from its raw record (the provider's fields:
/// `disnumber`/`displaynumber` shown, `destnumber`/`callee` called, `caller` calling,
/// `extnumber`, `crmid`, `userid`). Absent or empty fields are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallParties {
    /// The number shown (`disnumber`, a bill's `displaynumber`).
    pub display_number: Option<String>,
    /// The called number (`destnumber`, else `callee`).
    pub callee: Option<String>,
    /// The calling number (`caller`), when the record has one.
    pub caller: Option<String>,
    pub extension: Option<String>,
    /// The agent's employee number (`crmid`).
    pub crmid: Option<String>,
    /// The agent's user id (`userid`).
    pub userid: Option<String>,
}

impl CallParties {
    /// Reads `raw_json` strictly, else repaired as the callback parser repairs it; a record
    /// that cannot be read at all has no parties.
    pub fn of(raw_json: &str) -> Self {
        let value = serde_json::from_str::<Value>(raw_json)
            .or_else(|_| serde_json::from_str::<Value>(&crate::callback::repair(raw_json)));
        let Ok(Value::Object(map)) = value else {
            return Self::default();
        };
        let field = |names: &[&str]| names.iter().find_map(|n| text_of(&map, n));
        Self {
            display_number: field(&["disnumber", "displaynumber"]),
            callee: field(&["destnumber", "callee"]),
            caller: field(&["caller"]),
            extension: field(&["extnumber"]),
            crmid: field(&["crmid"]),
            userid: field(&["userid"]),
        }
    }

    /// The search terms of these parties: each number reversed (once, however many fields
    /// hold it), the extension and the agent ids.
    pub fn terms(&self) -> Vec<(TermField, String)> {
        let mut terms: Vec<(TermField, String)> = Vec::new();
        let numbers = [&self.display_number, &self.callee, &self.caller];
        for number in numbers.into_iter().flatten() {
            if let Some(n) = PhoneNumber::parse(number) {
                terms.push((TermField::Number, n.reversed()));
            }
        }
        terms.extend(self.extension.clone().map(|e| (TermField::Extension, e)));
        for agent in [&self.crmid, &self.userid].into_iter().flatten() {
            terms.push((TermField::Agent, agent.clone()));
        }
        terms.sort();
        terms.dedup();
        terms
    }
}

/// A field's value as text: strings trimmed, numbers as written; empty is none.
fn text_of(map: &Map<String, Value>, name: &str) -> Option<String> {
    let text = match map.get(name)? {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// What a search term stands for (`call_terms.field`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TermField {
    /// A phone number, digits reversed.
    Number,
    Extension,
    /// `crmid` or `userid`.
    Agent,
}

impl TermField {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Number => "number",
            Self::Extension => "extension",
            Self::Agent => "agent",
        }
    }
}

/// One call in a list of search results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallSummary {
    pub uuid: CallUuid,
    pub call_start: Option<DateTime<Utc>>,
    pub company: String,
    #[serde(flatten)]
    pub parties: CallParties,
    /// Talk time billed by the provider, seconds.
    pub billsec: Option<i64>,
    pub state: RecordState,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
}

/// One archival attempt, as a call's page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptView {
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: AttemptOutcome,
    pub error_code: Option<String>,
    pub message: Option<String>,
    pub bytes: i64,
}

/// The manifest that lists a call (its entry in the audit trail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestRef {
    pub seq: i64,
    pub object_key: String,
    /// `None` while the manifest is being written.
    pub sha256: Option<String>,
    pub written_at: Option<DateTime<Utc>>,
}

/// Everything the ledger knows about one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallDetail {
    #[serde(flatten)]
    pub summary: CallSummary,
    pub record_file: String,
    pub bill_id: Option<String>,
    pub attempts_made: i64,
    /// The object in the store, once archived.
    pub object_key: Option<String>,
    pub content_type: Option<String>,
    pub archived_at: Option<DateTime<Utc>>,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
    /// What `verify` last found (`ok`, `missing`, `changed`, `unreadable`) and when.
    pub last_verify_result: Option<String>,
    pub last_verified_at: Option<DateTime<Utc>>,
    pub media_duration_ms: Option<i64>,
    pub media_note: Option<String>,
    /// The callback (or bill) exactly as received.
    pub raw_json: String,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptView>,
    /// The manifest(s) listing this call (one, once listed; none before).
    pub manifests: Vec<ManifestRef>,
}

#[async_trait]
pub trait Search: Send + Sync {
    /// One page of the calls `query` selects, sorted by call start (undated last), then
    /// uuid. Brings the search terms up to date first.
    async fn find_calls(&self, query: &CallQuery) -> Result<Vec<CallSummary>, LedgerError>;

    /// One call's fields, state, attempts, checksum, object, verification and manifest.
    async fn call_detail(&self, uuid: &CallUuid) -> Result<Option<CallDetail>, LedgerError>;

    /// Rewrites the search terms of every call queued since the last time (new calls,
    /// changed records), at most `batch` per transaction; returns how many calls it read.
    async fn refresh_terms(&self, batch: u32) -> Result<u64, LedgerError>;
}

/// A value bound to a search statement's placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Arg {
    Text(String),
    Time(DateTime<Utc>),
    Int(i64),
}

/// Which part of the listing a statement reads: the dated calls, or the undated ones after
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Dated,
    Undated,
}

/// The columns a search statement selects (from `calls AS c`), for [`CallSummary`].
pub(crate) const SUMMARY_COLUMNS: &str = "c.uuid, c.company_code, c.call_start, c.billsec, \
     c.raw_json, c.state, c.size_bytes, c.sha256";

/// A search statement with `$n` placeholders, the same text on both backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SearchSql {
    pub text: String,
    pub args: Vec<Arg>,
}

impl SearchSql {
    fn bind(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    /// The statement to run.
    fn stmt(self) -> Stmt {
        let stmt = Stmt::new(self.text, "searching calls");
        self.args.into_iter().fold(stmt, |stmt, arg| {
            stmt.bind(match arg {
                Arg::Text(s) => sql::Arg::from(s),
                Arg::Time(t) => sql::Arg::from(t),
                Arg::Int(n) => sql::Arg::from(n),
            })
        })
    }
}

/// Which parts a query reads, in order: dated calls first, then (when no date bound
/// excludes them and the cursor is not past them) the undated ones.
pub(crate) fn parts(query: &CallQuery) -> Vec<Part> {
    let dated = !matches!(query.after, Some(CallCursor::Undated(_)));
    let undated = query.since.is_none() && query.until.is_none();
    let mut parts = Vec::new();
    if dated {
        parts.push(Part::Dated);
    }
    if undated {
        parts.push(Part::Undated);
    }
    parts
}

/// The statement reading `part` of `query`'s results, at most `limit` rows.
///
/// The driving table is chosen so that the first page is read in order without sorting
/// every match: with an extension or agent (and no number) the term index
/// `(field, term, call_start, uuid)` is walked; otherwise `calls`, through the company or
/// start index; a number's suffix range is matched in the term index and the few calls
/// it finds are sorted.
pub(crate) fn search_sql(account: &str, query: &CallQuery, part: Part, limit: u32) -> SearchSql {
    let mut sql = SearchSql {
        text: String::new(),
        args: Vec::new(),
    };
    let account = sql.bind(Arg::Text(account.to_owned()));
    let mut conditions: Vec<String> = vec![format!("c.account = {account}")];
    let driver = match (&query.number, &query.extension, &query.agent) {
        (None, Some(ext), _) => Some((TermField::Extension, ext.clone())),
        (None, None, Some(agent)) => Some((TermField::Agent, agent.clone())),
        _ => None,
    };
    // The table whose call_start and uuid order the rows.
    let (from, order) = match &driver {
        Some((field, term)) => {
            let term = sql.bind(Arg::Text(term.clone()));
            conditions.push(format!(
                "d.account = {account} AND d.field = '{}' AND d.term = {term}",
                field.as_str()
            ));
            (
                "call_terms AS d JOIN calls AS c ON c.account = d.account AND c.uuid = d.uuid",
                "d",
            )
        }
        None => ("calls AS c", "c"),
    };
    let driven = driver.as_ref().map(|(field, _)| *field);
    filter_conditions(&mut sql, &mut conditions, query, driven, &account);
    part_conditions(&mut sql, &mut conditions, query, part, order);
    let limit = sql.bind(Arg::Int(i64::from(limit)));
    // A number matches few calls: they are found through the term index and sorted. Their
    // order is written so that no index of `calls` can give it, or a planner that knows the
    // ledger's statistics walks the start index in call order and tests each of a million
    // calls against the few numbers (SQLite after `PRAGMA optimize`: 149 ms at 1,000,000
    // calls, against 2 ms at 10,000; BENCHMARKS.md "Issue 20").
    let start = if query.number.is_some() {
        format!("coalesce({order}.call_start, NULL)")
    } else {
        format!("{order}.call_start")
    };
    sql.text = format!(
        "SELECT {SUMMARY_COLUMNS} FROM {from} WHERE {} \
         ORDER BY {start}, {order}.uuid LIMIT {limit}",
        conditions.join(" AND ")
    );
    sql
}

/// The conditions of `query`'s filters on `calls AS c` (all but the dates), but for the
/// term whose index drives the statement (`driven`).
fn filter_conditions(
    sql: &mut SearchSql,
    conditions: &mut Vec<String>,
    query: &CallQuery,
    driven: Option<TermField>,
    account: &str,
) {
    // The account as the placeholder `account`, not `t.account = c.account`: a correlated
    // subquery would be run once per call instead of read once through its index.
    let term_filter = |sql: &mut SearchSql, field: TermField, value: &str| {
        let value = sql.bind(Arg::Text(value.to_owned()));
        format!(
            "c.uuid IN (SELECT t.uuid FROM call_terms AS t \
             WHERE t.account = {account} AND t.field = '{}' AND t.term = {value})",
            field.as_str()
        )
    };
    if let Some(number) = &query.number {
        let low = number.reversed();
        // Digits only: every term with this prefix sorts below the prefix followed by ':'.
        let high = format!("{low}:");
        let low = sql.bind(Arg::Text(low));
        let high = sql.bind(Arg::Text(high));
        conditions.push(format!(
            "c.uuid IN (SELECT t.uuid FROM call_terms AS t \
             WHERE t.account = {account} AND t.field = 'number' \
             AND t.term >= {low} AND t.term < {high})"
        ));
    }
    if let Some(ext) = &query.extension
        && driven != Some(TermField::Extension)
    {
        let c = term_filter(sql, TermField::Extension, ext);
        conditions.push(c);
    }
    if let Some(agent) = &query.agent
        && driven != Some(TermField::Agent)
    {
        let c = term_filter(sql, TermField::Agent, agent);
        conditions.push(c);
    }
    if let Some(company) = &query.company {
        let p = sql.bind(Arg::Text(company.clone()));
        conditions.push(format!("c.company_code = {p}"));
    }
    if !query.states.is_empty() {
        let list: Vec<String> = query
            .states
            .iter()
            .map(|s| sql.bind(Arg::Text(s.as_str().to_owned())))
            .collect();
        conditions.push(format!("c.state IN ({})", list.join(", ")));
    }
    if !query.uuids.is_empty() {
        let list: Vec<String> = query
            .uuids
            .iter()
            .map(|u| sql.bind(Arg::Text(u.as_str().to_owned())))
            .collect();
        conditions.push(format!("c.uuid IN ({})", list.join(", ")));
    }
}

/// The conditions that read `part` of the listing from the ordering table `order`: its
/// date bounds and where the cursor left off.
fn part_conditions(
    sql: &mut SearchSql,
    conditions: &mut Vec<String>,
    query: &CallQuery,
    part: Part,
    order: &str,
) {
    match part {
        Part::Dated => {
            conditions.push(format!("{order}.call_start IS NOT NULL"));
            if let Some(since) = query.since {
                let p = sql.bind(Arg::Time(since));
                conditions.push(format!("{order}.call_start >= {p}"));
            }
            if let Some(until) = query.until {
                let p = sql.bind(Arg::Time(until));
                conditions.push(format!("{order}.call_start < {p}"));
            }
            if let Some(CallCursor::Dated(start, uuid)) = &query.after {
                let s = sql.bind(Arg::Time(*start));
                let u = sql.bind(Arg::Text(uuid.as_str().to_owned()));
                conditions.push(format!("({order}.call_start, {order}.uuid) > ({s}, {u})"));
            }
        }
        Part::Undated => {
            conditions.push(format!("{order}.call_start IS NULL"));
            if let Some(CallCursor::Undated(uuid)) = &query.after {
                let u = sql.bind(Arg::Text(uuid.as_str().to_owned()));
                conditions.push(format!("{order}.uuid > {u}"));
            }
        }
    }
}

/// Calls whose terms are rewritten per transaction while catching up.
const REFRESH_BATCH: u32 = 5_000;

/// How many queued calls an import of `n` records indexes in its own transaction: its own
/// and as many again of any backlog, so the queue drains with the imports and a search
/// rarely finds much to do, while one import never waits on a whole backlog.
pub(crate) fn with_import(n: usize) -> u32 {
    u32::try_from(n.saturating_mul(2))
        .unwrap_or(u32::MAX)
        .clamp(64, IMPORT_REFRESH_MAX)
}

/// The most queued calls one import transaction indexes: above the largest batch an
/// import writes (about 14,000 callbacks on SQLite), so an import never leaves its own
/// calls behind.
const IMPORT_REFRESH_MAX: u32 = 32_768;

/// Takes the first `$1` queued calls with their raw record (none for a call gone since).
/// On PostgreSQL several processes may index at once: each takes its batch off the queue
/// with `FOR UPDATE SKIP LOCKED`, in the same statement. On SQLite the write lock, held
/// from the start of the transaction, makes the first `$1` queued uuids the same set for
/// this statement and [`DROP_TAKEN_SQLITE`].
const TAKE_SQLITE: &str = "SELECT s.account, s.uuid, c.raw_json
 FROM call_terms_stale AS s LEFT JOIN calls AS c ON c.account = s.account AND c.uuid = s.uuid
 ORDER BY s.uuid, s.account LIMIT $1";
const TAKE_POSTGRES: &str = "WITH taken AS (
     DELETE FROM call_terms_stale
     WHERE (account, uuid) IN (SELECT account, uuid FROM call_terms_stale
                               ORDER BY uuid, account LIMIT $1 FOR UPDATE SKIP LOCKED)
     RETURNING account, uuid
 )
 SELECT taken.account, taken.uuid, c.raw_json
 FROM taken LEFT JOIN calls AS c ON c.account = taken.account AND c.uuid = taken.uuid";
const DROP_TAKEN_SQLITE: &str = "DELETE FROM call_terms_stale
 WHERE (account, uuid) IN (SELECT account, uuid FROM call_terms_stale
                           ORDER BY uuid, account LIMIT $1)";

/// Writes the terms in `$1`, a JSON array of `[account, uuid, field, term]`, each with its call's
/// start. One statement for a whole batch, the terms in one argument: a batch holds tens of
/// thousands, and placeholders by the thousand cost SQLite's binding the square of their
/// number (see [`sql::max_params`]). Several PostgreSQL indexers may write terms of the same
/// call (requeued while another had it): the first write stands.
const INSERT_TERMS_SQLITE: &str = "INSERT INTO call_terms (account, uuid, field, term, call_start)
 SELECT t.value ->> 0, t.value ->> 1, t.value ->> 2, t.value ->> 3, c.call_start
 FROM json_each($1) AS t
 JOIN calls AS c ON c.account = t.value ->> 0 AND c.uuid = t.value ->> 1";
const INSERT_TERMS_POSTGRES: &str =
    "INSERT INTO call_terms (account, uuid, field, term, call_start)
 SELECT t ->> 0, t ->> 1, t ->> 2, t ->> 3, c.call_start
 FROM jsonb_array_elements($1::jsonb) AS t
 JOIN calls AS c ON c.account = t ->> 0 AND c.uuid = t ->> 1
 ON CONFLICT DO NOTHING";

/// Takes up to `batch` calls off the queue and rewrites their terms, inside `tx` (of a
/// `kind` ledger; on SQLite, a transaction that holds the write lock); how many it took.
pub(crate) async fn refresh_batch(
    tx: &mut impl Tx,
    kind: BackendKind,
    batch: u32,
) -> Result<u64, LedgerError> {
    const CONTEXT: &str = "indexing calls for search";
    let take = Stmt::new(pick(kind, TAKE_SQLITE, TAKE_POSTGRES), CONTEXT).bind(batch);
    let taken = tx.fetch_all(take).await?;
    if taken.is_empty() {
        return Ok(0);
    }
    if kind == BackendKind::Sqlite {
        tx.execute(Stmt::new(DROP_TAKEN_SQLITE, CONTEXT).bind(batch))
            .await?;
    }
    let mut by_account: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut terms: Vec<(String, String, &str, String)> = Vec::new();
    for row in &taken {
        let (account, uuid) = (row.text("account")?, row.text("uuid")?);
        if let Some(raw) = row.opt_text("raw_json")? {
            let parties = CallParties::of(&raw).terms().into_iter();
            terms.extend(
                parties.map(|(field, term)| (account.clone(), uuid.clone(), field.as_str(), term)),
            );
        }
        by_account.entry(account).or_default().push(uuid);
    }
    // The old terms, by the uuids as one JSON argument ([`sql::JsonRows::contains`]): a
    // list of placeholders, whose length PostgreSQL's planner sees, was taken before
    // `call_terms` was first analyzed to match every term, and each row of a sequential scan
    // was compared with each of the list's 1,745 uuids (11.6 s for one import batch at
    // 400,000 terms).
    let delete = format!(
        "DELETE FROM call_terms WHERE account = $1 AND {}",
        sql::JsonRows::new(kind, 2).contains("uuid")
    );
    for (account, uuids) in &by_account {
        let stmt = Stmt::new(delete.clone(), CONTEXT)
            .bind(account)
            .bind(sql::json_arg(uuids)?);
        tx.execute(stmt).await?;
    }
    if !terms.is_empty() {
        let terms = serde_json::to_string(&terms)
            .map_err(|e| LedgerError::Corrupt(format!("search terms as JSON: {e}")))?;
        let insert = pick(kind, INSERT_TERMS_SQLITE, INSERT_TERMS_POSTGRES);
        tx.execute(Stmt::new(insert, CONTEXT).bind(terms)).await?;
    }
    Ok(taken.len() as u64)
}

/// A row holding [`SUMMARY_COLUMNS`].
fn summary_from_row(row: &impl Row) -> Result<CallSummary, LedgerError> {
    Ok(CallSummary {
        uuid: row.uuid("uuid")?,
        call_start: row.opt_time("call_start")?,
        company: row.text("company_code")?,
        parties: CallParties::of(&row.text("raw_json")?),
        billsec: row.opt_int("billsec")?,
        state: row.state("state")?,
        size_bytes: row.opt_int("size_bytes")?,
        sha256: row.opt_text("sha256")?,
    })
}

#[async_trait]
impl<D: Db> Search for D {
    async fn find_calls(&self, query: &CallQuery) -> Result<Vec<CallSummary>, LedgerError> {
        self.refresh_terms(REFRESH_BATCH).await?;
        let limit = query.page_size();
        let mut found = Vec::new();
        for part in parts(query) {
            let want = limit - u32::try_from(found.len()).unwrap_or(limit);
            if want == 0 {
                break;
            }
            let sql = search_sql(self.account(), query, part, want);
            let rows = self.fetch_all(sql.stmt()).await?;
            for row in &rows {
                found.push(summary_from_row(row)?);
            }
        }
        Ok(found)
    }

    async fn call_detail(&self, uuid: &CallUuid) -> Result<Option<CallDetail>, LedgerError> {
        let Some(row) = self
            .fetch_optional(detail_stmt(self.account(), uuid))
            .await?
        else {
            return Ok(None);
        };
        let attempts = attempts_of(self, uuid).await?;
        let manifests = match row.opt_int("manifest_seq")? {
            None => Vec::new(),
            Some(seq) => manifests_of(self, seq).await?,
        };
        Ok(Some(CallDetail {
            summary: summary_from_row(&row)?,
            record_file: row.text("record_file")?,
            bill_id: row.opt_text("bill_id")?,
            attempts_made: row.int("attempts")?,
            object_key: row.opt_text("object_key")?,
            content_type: row.opt_text("content_type")?,
            archived_at: row.opt_time("archived_at")?,
            last_error_code: row.opt_text("last_error_code")?,
            last_error: row.opt_text("last_error")?,
            last_verify_result: row.opt_text("last_verify_result")?,
            last_verified_at: row.opt_time("last_verified_at")?,
            media_duration_ms: row.opt_int("media_duration_ms")?,
            media_note: row.opt_text("media_note")?,
            raw_json: row.text("raw_json")?,
            attempts,
            manifests,
        }))
    }

    async fn refresh_terms(&self, batch: u32) -> Result<u64, LedgerError> {
        let batch = batch.max(1);
        let mut total = 0;
        loop {
            // Without the write lock when nothing is queued (the usual case).
            let queued = self
                .fetch_optional(Stmt::new(
                    "SELECT 1 AS queued FROM call_terms_stale LIMIT 1",
                    "looking for calls to index",
                ))
                .await?;
            if queued.is_none() {
                return Ok(total);
            }
            let mut tx = self.begin_write("starting to index calls").await?;
            let n = refresh_batch(&mut tx, self.dialect(), batch).await?;
            tx.commit().await?;
            total += n;
            if n < u64::from(batch) {
                return Ok(total);
            }
        }
    }
}

const DETAIL_CONTEXT: &str = "reading a call's details";

fn detail_stmt(account: &str, uuid: &CallUuid) -> Stmt {
    Stmt::new(
        "SELECT c.uuid, c.company_code, c.call_start, c.billsec, c.raw_json, c.state,
                c.size_bytes, c.sha256, c.record_file, c.bill_id, c.attempts, c.object_key,
                c.content_type, c.archived_at, c.last_error_code, c.last_error,
                c.last_verify_result, c.last_verified_at, c.media_duration_ms, c.media_note,
                c.manifest_seq
         FROM calls AS c WHERE c.account = $2 AND c.uuid = $1",
        DETAIL_CONTEXT,
    )
    .bind(uuid)
    .bind(account)
}

/// Every attempt at `uuid`, oldest first.
async fn attempts_of(db: &impl Db, uuid: &CallUuid) -> Result<Vec<AttemptView>, LedgerError> {
    let rows = db
        .fetch_all(
            Stmt::new(
                "SELECT run_id, started_at, finished_at, outcome, error_code, message, bytes
                 FROM attempts WHERE account = $2 AND call_uuid = $1 ORDER BY started_at, id",
                DETAIL_CONTEXT,
            )
            .bind(uuid)
            .bind(db.account()),
        )
        .await?;
    rows.iter()
        .map(|a| {
            let outcome = a.text("outcome")?;
            Ok(AttemptView {
                run_id: a.text("run_id")?,
                started_at: a.time("started_at")?,
                finished_at: a.opt_time("finished_at")?,
                outcome: AttemptOutcome::parse(&outcome)
                    .ok_or_else(|| LedgerError::Corrupt(format!("attempt outcome {outcome:?}")))?,
                error_code: a.opt_text("error_code")?,
                message: a.opt_text("message")?,
                bytes: a.int("bytes")?,
            })
        })
        .collect()
}

/// Manifest `seq`, as a call's page names it.
async fn manifests_of(db: &impl Db, seq: i64) -> Result<Vec<ManifestRef>, LedgerError> {
    let rows = db
        .fetch_all(
            Stmt::new(
                "SELECT seq, object_key, sha256, written_at FROM manifests
                 WHERE account = $2 AND seq = $1",
                DETAIL_CONTEXT,
            )
            .bind(seq)
            .bind(db.account()),
        )
        .await?;
    rows.iter()
        .map(|m| {
            Ok(ManifestRef {
                seq: m.int("seq")?,
                object_key: m.text("object_key")?,
                sha256: m.opt_text("sha256")?,
                written_at: m.opt_time("written_at")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LedgerOptions;
    use crate::ledger::sqlite::SqliteLedger;

    const DOC_EXAMPLE: &str = r#"{
"crmid": "2001",
"disnumber": "02566823420",
"destnumber": "015029913692",
"extnumber": "7003"
"uuid": "cda5c6c4-0a17-11e8-b177-e7cbf2bd1f36"
"userid": 17
}"#;

    #[test]
    fn parties_are_read_from_a_record_missing_commas() {
        let parties = CallParties::of(DOC_EXAMPLE);
        assert_eq!(parties.callee.as_deref(), Some("015029913692"));
        assert_eq!(parties.display_number.as_deref(), Some("02566823420"));
        assert_eq!(parties.extension.as_deref(), Some("7003"));
        assert_eq!(parties.userid.as_deref(), Some("17"));
        assert_eq!(
            parties.terms(),
            [
                (TermField::Number, "02432866520".to_owned()),
                (TermField::Number, "296319920510".to_owned()),
                (TermField::Extension, "7003".to_owned()),
                (TermField::Agent, "17".to_owned()),
                (TermField::Agent, "2001".to_owned()),
            ]
        );
        assert_eq!(CallParties::of("not json"), CallParties::default());
    }

    #[test]
    fn a_number_is_its_digits() {
        let n = PhoneNumber::parse("+49 (0)30-13692").unwrap_or_else(|| panic!("digits"));
        assert_eq!(n.as_str(), "4903013692");
        assert_eq!(n.reversed(), "2963103094");
        assert_eq!(PhoneNumber::parse("abc"), None);
    }

    #[test]
    fn cursors_read_back_what_they_print() {
        let uuid = CallUuid::parse("u-1").unwrap_or_else(|| panic!("uuid"));
        let t = from_ledger("2026-03-01T10:00:00.000Z").unwrap_or_else(|| panic!("time"));
        for cursor in [
            CallCursor::Dated(t, uuid.clone()),
            CallCursor::Undated(uuid),
        ] {
            assert_eq!(CallCursor::parse(&cursor.to_string()), Some(cursor));
        }
        assert_eq!(CallCursor::parse("nonsense"), None);
    }

    #[test]
    fn an_agent_search_walks_the_term_index_and_a_number_search_the_calls() {
        let agent = CallQuery {
            agent: Some("2001".into()),
            ..CallQuery::all(50)
        };
        let sql = search_sql("default", &agent, Part::Dated, 50);
        assert!(sql.text.contains("FROM call_terms AS d JOIN calls AS c"));
        assert!(sql.text.contains("ORDER BY d.call_start, d.uuid"));
        let both = CallQuery {
            number: PhoneNumber::parse("13692"),
            agent: Some("2001".into()),
            ..CallQuery::all(50)
        };
        let sql = search_sql("default", &both, Part::Dated, 50);
        assert!(
            sql.text
                .starts_with(&format!("SELECT {SUMMARY_COLUMNS} FROM calls AS c"))
        );
        assert_eq!(sql.args[0], Arg::Text("default".into()));
        assert_eq!(sql.args[1], Arg::Text("29631".into()));
        assert_eq!(sql.args[2], Arg::Text("29631:".into()));
    }

    #[test]
    fn a_date_bound_leaves_the_undated_calls_out() {
        assert_eq!(parts(&CallQuery::all(5)), [Part::Dated, Part::Undated]);
        let bounded = CallQuery {
            since: Some(Utc::now()),
            ..CallQuery::all(5)
        };
        assert_eq!(parts(&bounded), [Part::Dated]);
        let past_dated = CallQuery {
            after: CallQuery::all(1).after.or(Some(CallCursor::Undated(
                CallUuid::parse("x").unwrap_or_else(|| panic!("uuid")),
            ))),
            ..CallQuery::all(5)
        };
        assert_eq!(parts(&past_dated), [Part::Undated]);
    }

    /// SQLite's plan for `query`'s dated part, one line per step.
    async fn plan(ledger: &SqliteLedger, query: &CallQuery) -> Vec<String> {
        let stmt = search_sql("default", query, Part::Dated, 50).stmt();
        crate::ledger::sqlite::query_plan(ledger, stmt).await
    }

    /// Searches that walk an index in call order (no sort).
    fn searches_in_call_order(t: DateTime<Utc>, uuid: &CallUuid) -> [(&'static str, CallQuery); 5] {
        let q = CallQuery::all(50);
        [
            (
                "agent",
                CallQuery {
                    agent: Some("2001".into()),
                    ..q.clone()
                },
            ),
            (
                "extension and company after a cursor",
                CallQuery {
                    extension: Some("7001".into()),
                    company: Some("c".into()),
                    after: Some(CallCursor::Dated(t, uuid.clone())),
                    ..q.clone()
                },
            ),
            (
                "date range",
                CallQuery {
                    since: Some(t),
                    until: Some(t + chrono::Duration::days(1)),
                    ..q.clone()
                },
            ),
            (
                "company",
                CallQuery {
                    company: Some("c".into()),
                    ..q.clone()
                },
            ),
            ("everything", q.clone()),
        ]
    }

    /// Searches that sort the few calls they match.
    fn searches_that_sort(t: DateTime<Utc>, uuid: &CallUuid) -> [(&'static str, CallQuery); 3] {
        let q = CallQuery::all(50);
        [
            (
                "number suffix",
                CallQuery {
                    number: PhoneNumber::parse("13692"),
                    ..q.clone()
                },
            ),
            (
                "number suffix and agent in a month",
                CallQuery {
                    number: PhoneNumber::parse("13692"),
                    agent: Some("2001".into()),
                    since: Some(t),
                    until: Some(t + chrono::Duration::days(30)),
                    ..q.clone()
                },
            ),
            (
                "uuids",
                CallQuery {
                    uuids: vec![uuid.clone()],
                    ..q.clone()
                },
            ),
        ]
    }

    /// Every search reads through an index: no step scans a whole table, and the searches
    /// that can walk an index in call order do so without sorting what they found.
    #[tokio::test]
    async fn every_search_is_answered_from_an_index() {
        let ledger = SqliteLedger::open("sqlite::memory:", &LedgerOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let t = chrono::DateTime::from_timestamp(1_780_000_000, 0).unwrap_or_default();
        let uuid = CallUuid::parse("u").unwrap_or_else(|| panic!("uuid"));
        let in_order = searches_in_call_order(t, &uuid);
        for (name, query) in &in_order {
            let steps = plan(&ledger, query).await;
            assert!(
                steps
                    .iter()
                    .all(|s| !s.starts_with("SCAN ") && !s.contains("TEMP B-TREE")),
                "{name}: {steps:?}"
            );
        }
        let sorted_matches = searches_that_sort(t, &uuid);
        for (name, query) in &sorted_matches {
            let steps = plan(&ledger, query).await;
            assert!(
                steps.iter().all(|s| !s.starts_with("SCAN ")),
                "{name}: {steps:?}"
            );
        }
        let number = plan(&ledger, &sorted_matches[0].1).await.join("\n");
        assert!(
            number.contains("call_terms_search (account=? AND field=? AND term>? AND term<?)"),
            "{number}"
        );
        // The calls a number found are read by key, not by walking an index of the
        // account's calls in call order (a search, not a scan, to SQLite, since the
        // account is a key: 149 ms at 1,000,000 calls).
        assert!(
            number
                .lines()
                .any(|s| s.starts_with("SEARCH c ") && s.contains("uuid=?")),
            "{number}"
        );
    }
}
