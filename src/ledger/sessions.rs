//! The web page's sessions (`serve --ui`), in the ledger so that several replicas behind one
//! address share them and a logout ends the session on all of them. Only a SHA-256 of the
//! cookie's random token is stored: the ledger never holds anything a browser could replay.
//! Also the one figure the page's dashboard needs that no other concern reads: recordings
//! archived per day.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use super::LedgerError;
use super::sql::{Db, Row, Stmt, Tx, pick};

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

#[async_trait]
impl<D: Db> Sessions for D {
    async fn create_session(
        &self,
        token_sha256: &str,
        session: &UiSession,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let mut tx = self.begin("recording a session").await?;
        tx.execute(
            Stmt::new(
                "DELETE FROM ui_sessions WHERE expires_at <= $1",
                "dropping sessions that ran out",
            )
            .bind(now),
        )
        .await?;
        tx.execute(
            Stmt::new(
                "INSERT INTO ui_sessions (token_sha256, username, created_at, expires_at)
                 VALUES ($1, $2, $3, $4)",
                "recording a session",
            )
            .bind(token_sha256)
            .bind(&session.username)
            .bind(session.created_at)
            .bind(session.expires_at),
        )
        .await?;
        tx.commit().await
    }

    async fn session(
        &self,
        token_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<UiSession>, LedgerError> {
        let row = self
            .fetch_optional(
                Stmt::new(
                    "SELECT username, created_at, expires_at FROM ui_sessions
                     WHERE token_sha256 = $1 AND expires_at > $2",
                    "reading a session",
                )
                .bind(token_sha256)
                .bind(now),
            )
            .await?;
        row.map(|row| {
            Ok(UiSession {
                username: row.text("username")?,
                created_at: row.time("created_at")?,
                expires_at: row.time("expires_at")?,
            })
        })
        .transpose()
    }

    async fn end_session(&self, token_sha256: &str) -> Result<bool, LedgerError> {
        let ended = self
            .execute(
                Stmt::new(
                    "DELETE FROM ui_sessions WHERE token_sha256 = $1",
                    "ending a session",
                )
                .bind(token_sha256),
            )
            .await?;
        Ok(ended > 0)
    }

    async fn archived_per_day(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(NaiveDate, i64)>, LedgerError> {
        // The UTC day as `YYYY-MM-DD` text: the first ten characters of SQLite's time text.
        let sql = pick(
            self.dialect(),
            "SELECT substr(archived_at, 1, 10) AS day, count(*) AS n FROM calls
             WHERE state = 'archived' AND archived_at >= $1 GROUP BY day ORDER BY day",
            "SELECT to_char(archived_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, count(*) AS n
             FROM calls WHERE state = 'archived' AND archived_at >= $1 GROUP BY day ORDER BY day",
        );
        let rows = self
            .fetch_all(Stmt::new(sql, "counting recordings archived per day").bind(since))
            .await?;
        rows.iter()
            .map(|row| {
                let day = row.text("day")?;
                let date = NaiveDate::parse_from_str(&day, "%Y-%m-%d")
                    .map_err(|_| LedgerError::Corrupt(format!("archived_at day {day:?}")))?;
                Ok((date, row.int("n")?))
            })
            .collect()
    }
}
