//! Who looked at which recording: the access log regulators expect (PCI DSS requirement 10,
//! MiFID II record-keeping). Every find, get, link, and every view, play and download of
//! the web page is appended here before its answer is given. callvault only ever appends:
//! the trait has no way to change or remove an entry, and both backends refuse UPDATE and
//! DELETE on the tables with a trigger.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::LedgerError;
use super::sql::{Arg, Db, Row, Stmt, Tx, listed, params};
use crate::domain::CallUuid;

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessAction {
    /// A search (`callvault find`, the web page's search).
    Find,
    /// Recordings copied out of the store (`callvault get`).
    Get,
    /// A presigned URL handed out (`callvault link`).
    Link,
    /// A call's page (or details) looked at.
    View,
    /// A recording streamed to a player.
    Play,
    /// A recording downloaded from the web page.
    Download,
    /// The access log itself read.
    ReadLog,
    /// A user logged in to the web page.
    Login,
    /// A login refused (wrong name or password, or rate-limited).
    LoginFailed,
    Logout,
    /// A call or recording refused because it belongs to an account the user may not see
    /// (answered as an unknown call would be), or a user the users file does not list.
    Refused,
    /// Calls handed over in a bundle (`callvault export`).
    Export,
}

impl AccessAction {
    pub const ALL: [AccessAction; 12] = [
        Self::Find,
        Self::Get,
        Self::Link,
        Self::View,
        Self::Play,
        Self::Download,
        Self::ReadLog,
        Self::Login,
        Self::LoginFailed,
        Self::Logout,
        Self::Refused,
        Self::Export,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Find => "find",
            Self::Get => "get",
            Self::Link => "link",
            Self::View => "view",
            Self::Play => "play",
            Self::Download => "download",
            Self::ReadLog => "read_log",
            Self::Login => "login",
            Self::LoginFailed => "login_failed",
            Self::Logout => "logout",
            Self::Refused => "refused",
            Self::Export => "export",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for AccessAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One access, as it is appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessEntry {
    pub at: DateTime<Utc>,
    /// Who: the `--actor` (or `CALLVAULT_ACTOR`, or the OS user), the web page's user.
    pub actor: String,
    pub action: AccessAction,
    /// From where: `cli@HOST` for a command, the remote address for the web page.
    pub source: String,
    /// Why, when the actor said (`--reason`).
    pub reason: Option<String>,
    /// What was asked, as text (a search's filters, a link's expiry, a page's path).
    pub query: Option<String>,
    /// The calls it touched (a search: those it answered with).
    pub calls: Vec<CallUuid>,
}

/// An entry read back, with its place in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggedAccess {
    pub id: i64,
    #[serde(flatten)]
    pub entry: AccessEntry,
}

/// Which entries to read back: every filter set must hold. Oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessQuery {
    /// Entries at or after this instant.
    pub since: Option<DateTime<Utc>>,
    pub actor: Option<String>,
    /// Entries that touched this call.
    pub uuid: Option<CallUuid>,
    /// Entries with an id greater than this (paging).
    pub after_id: Option<i64>,
    /// At most this many (at least 1, at most [`super::MAX_PAGE`]).
    pub limit: u32,
}

#[async_trait]
pub trait AccessLog: Send + Sync {
    /// Appends one entry (and the calls it names) in one transaction; returns its id.
    async fn log_access(&self, entry: &AccessEntry) -> Result<i64, LedgerError>;

    /// Entries `query` selects, oldest first, each with its calls.
    async fn access_entries(&self, query: &AccessQuery) -> Result<Vec<LoggedAccess>, LedgerError>;
}

/// How many calls one statement appends to an entry (well under either engine's limit on
/// placeholders).
const CALLS_PER_STATEMENT: usize = 500;

#[async_trait]
impl<D: Db> AccessLog for D {
    /// The entry and its calls are appended together or not at all.
    async fn log_access(&self, entry: &AccessEntry) -> Result<i64, LedgerError> {
        const CONTEXT: &str = "appending to the access log";
        let mut tx = self.begin(CONTEXT).await?;
        let id = tx
            .fetch_one(
                Stmt::new(
                    "INSERT INTO access_log (at, actor, action, source, reason, query, calls,
                                             account)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                    CONTEXT,
                )
                .bind(entry.at)
                .bind(entry.actor.as_str())
                .bind(entry.action.as_str())
                .bind(entry.source.as_str())
                .bind(entry.reason.as_deref())
                .bind(entry.query.as_deref())
                .bind(entry.calls.len() as u64)
                .bind(self.account()),
            )
            .await?
            .int("id")?;
        for chunk in entry.calls.chunks(CALLS_PER_STATEMENT) {
            let values = listed(chunk.len(), |i| format!("($1, $2, ${})", i + 3));
            let stmt = Stmt::new(
                format!(
                    "INSERT INTO access_log_calls (entry_id, account, call_uuid) VALUES {values}"
                ),
                CONTEXT,
            )
            .bind(id)
            .bind(self.account());
            tx.execute(chunk.iter().fold(stmt, Stmt::bind)).await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    async fn access_entries(&self, query: &AccessQuery) -> Result<Vec<LoggedAccess>, LedgerError> {
        let rows = self.fetch_all(entries_stmt(self.account(), query)).await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.int("id")).collect::<Result<_, _>>()?;
        let mut calls = calls_of_entries(self, &ids).await?.into_iter().peekable();
        let mut entries = Vec::with_capacity(rows.len());
        for (row, id) in rows.iter().zip(ids) {
            let action = row.text("action")?;
            let mut touched = Vec::new();
            while let Some((_, uuid)) = calls.next_if(|(entry, _)| *entry == id) {
                touched.push(uuid);
            }
            entries.push(LoggedAccess {
                id,
                entry: AccessEntry {
                    at: row.time("at")?,
                    actor: row.text("actor")?,
                    action: AccessAction::parse(&action)
                        .ok_or_else(|| LedgerError::Corrupt(format!("access action {action:?}")))?,
                    source: row.text("source")?,
                    reason: row.opt_text("reason")?,
                    query: row.opt_text("query")?,
                    calls: touched,
                },
            });
        }
        Ok(entries)
    }
}

/// The entries `query` selects, oldest first: only the filters set are written, so each
/// combination is planned with its own index.
fn entries_stmt(account: &str, query: &AccessQuery) -> Stmt {
    let mut sql = String::from(
        "SELECT a.id, a.at, a.actor, a.action, a.source, a.reason, a.query
         FROM access_log AS a WHERE a.id > $1 AND a.account = $2",
    );
    let mut args: Vec<Arg> = vec![query.after_id.unwrap_or(0).into(), account.into()];
    let mut and = |condition: &str, arg: Arg| {
        args.push(arg);
        sql.push_str(" AND ");
        sql.push_str(&condition.replace('?', &format!("${}", args.len())));
    };
    if let Some(since) = query.since {
        and("a.at >= ?", since.into());
    }
    if let Some(actor) = &query.actor {
        and("a.actor = ?", actor.into());
    }
    if let Some(uuid) = &query.uuid {
        and(
            "a.id IN (SELECT entry_id FROM access_log_calls
                      WHERE account = a.account AND call_uuid = ?)",
            uuid.into(),
        );
    }
    sql.push_str(&format!(" ORDER BY a.id LIMIT ${}", args.len() + 1));
    args.push(i64::from(query.limit.clamp(1, super::MAX_PAGE)).into());
    Stmt {
        text: sql.into(),
        args,
        context: "reading the access log",
    }
}

/// The calls of the entries `ids`, by entry then in the order they were appended.
async fn calls_of_entries<D: Db>(db: &D, ids: &[i64]) -> Result<Vec<(i64, CallUuid)>, LedgerError> {
    let mut calls = Vec::new();
    for chunk in ids.chunks(CALLS_PER_STATEMENT) {
        let stmt = Stmt::new(
            format!(
                "SELECT entry_id, call_uuid FROM access_log_calls
                 WHERE entry_id IN ({}) ORDER BY entry_id, id",
                params(1, chunk.len())
            ),
            "reading the access log's calls",
        );
        let rows = db
            .fetch_all(chunk.iter().fold(stmt, |s, id| s.bind(*id)))
            .await?;
        for row in &rows {
            calls.push((row.int("entry_id")?, row.uuid("call_uuid")?));
        }
    }
    Ok(calls)
}
