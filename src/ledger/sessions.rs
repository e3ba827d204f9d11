//! The web page's sessions (`serve --ui`), in the ledger so that several replicas behind one
//! address share them and a logout ends the session on all of them. Only a SHA-256 of the
//! cookie's random token is stored: the ledger never holds anything a browser could replay.
//! Also the one figure the page's dashboard needs that no other concern reads: recordings
//! archived per day.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use super::LedgerError;

/// A live session: whose it is and until when it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiSession {
    pub username: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[async_trait]
pub trait Sessions: Send + Sync {
    /// Records a new session under the SHA-256 (hex) of its token, and drops sessions that
    /// ran out before `now`.
    async fn create_session(
        &self,
        token_sha256: &str,
        session: &UiSession,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;

    /// The session with this token hash, if it exists and has not run out at `now`.
    async fn session(
        &self,
        token_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<UiSession>, LedgerError>;

    /// Ends a session (logout); whether there was one.
    async fn end_session(&self, token_sha256: &str) -> Result<bool, LedgerError>;

    /// How many recordings were archived on each UTC day from `since` on, oldest first; days
    /// without any are left out.
    async fn archived_per_day(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(NaiveDate, i64)>, LedgerError>;
}
