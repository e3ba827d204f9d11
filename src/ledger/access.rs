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
}

impl AccessAction {
    pub const ALL: [AccessAction; 10] = [
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
