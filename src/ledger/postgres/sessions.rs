//! PostgreSQL: the web page's sessions, and recordings archived per day for its dashboard.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Row;

use super::PgLedger;
use super::error::Ctx;
use crate::ledger::{LedgerError, Sessions, UiSession};

#[async_trait]
impl Sessions for PgLedger {
    async fn create_session(
        &self,
        token_sha256: &str,
        session: &UiSession,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        const CONTEXT: &str = "recording a session";
        let mut tx = self.pool.begin().await.ctx(CONTEXT)?;
        sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await
            .ctx("dropping sessions that ran out")?;
        sqlx::query(
            "INSERT INTO ui_sessions (token_sha256, username, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_sha256)
        .bind(&session.username)
        .bind(session.created_at)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await
        .ctx(CONTEXT)?;
        tx.commit().await.ctx(CONTEXT)
    }

    async fn session(
        &self,
        token_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<UiSession>, LedgerError> {
        const CONTEXT: &str = "reading a session";
        let row = sqlx::query(
            "SELECT username, created_at, expires_at FROM ui_sessions \
             WHERE token_sha256 = $1 AND expires_at > $2",
        )
        .bind(token_sha256)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .ctx(CONTEXT)?;
        row.map(|row| {
            Ok(UiSession {
                username: row.try_get("username").ctx(CONTEXT)?,
                created_at: row.try_get("created_at").ctx(CONTEXT)?,
                expires_at: row.try_get("expires_at").ctx(CONTEXT)?,
            })
        })
        .transpose()
    }

    async fn end_session(&self, token_sha256: &str) -> Result<bool, LedgerError> {
        let done = sqlx::query("DELETE FROM ui_sessions WHERE token_sha256 = $1")
            .bind(token_sha256)
            .execute(&self.pool)
            .await
            .ctx("ending a session")?;
        Ok(done.rows_affected() > 0)
    }

    async fn archived_per_day(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(NaiveDate, i64)>, LedgerError> {
        const CONTEXT: &str = "counting recordings archived per day";
        let rows = sqlx::query(
            "SELECT (archived_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n FROM calls \
             WHERE state = 'archived' AND archived_at >= $1 GROUP BY day ORDER BY day",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .ctx(CONTEXT)?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("day").ctx(CONTEXT)?,
                    row.try_get("n").ctx(CONTEXT)?,
                ))
            })
            .collect()
    }
}
