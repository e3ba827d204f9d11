//! SQLite: the web page's sessions, and recordings archived per day for its dashboard.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use super::{QueryContext, SqliteLedger, col, time_col};
use crate::ledger::{LedgerError, Sessions, UiSession};
use crate::timefmt::to_ledger;

#[async_trait]
impl Sessions for SqliteLedger {
    async fn create_session(
        &self,
        token_sha256: &str,
        session: &UiSession,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let mut tx = self.pool.begin().await.ctx("starting a session")?;
        sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= $1")
            .bind(to_ledger(now))
            .execute(&mut *tx)
            .await
            .ctx("dropping sessions that ran out")?;
        sqlx::query(
            "INSERT INTO ui_sessions (token_sha256, username, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_sha256)
        .bind(&session.username)
        .bind(to_ledger(session.created_at))
        .bind(to_ledger(session.expires_at))
        .execute(&mut *tx)
        .await
        .ctx("recording a session")?;
        tx.commit().await.ctx("recording a session")
    }

    async fn session(
        &self,
        token_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<UiSession>, LedgerError> {
        let row = sqlx::query(
            "SELECT username, created_at, expires_at FROM ui_sessions \
             WHERE token_sha256 = $1 AND expires_at > $2",
        )
        .bind(token_sha256)
        .bind(to_ledger(now))
        .fetch_optional(&self.pool)
        .await
        .ctx("reading a session")?;
        row.map(|row| {
            let corrupt = || LedgerError::Corrupt("a session without its times".into());
            Ok(UiSession {
                username: col(&row, "username")?,
                created_at: time_col(&row, "created_at")?.ok_or_else(corrupt)?,
                expires_at: time_col(&row, "expires_at")?.ok_or_else(corrupt)?,
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
        let rows = sqlx::query(
            "SELECT substr(archived_at, 1, 10) AS day, COUNT(*) AS n FROM calls \
             WHERE state = 'archived' AND archived_at >= $1 GROUP BY day ORDER BY day",
        )
        .bind(to_ledger(since))
        .fetch_all(&self.pool)
        .await
        .ctx("counting recordings archived per day")?;
        rows.iter()
            .map(|row| {
                let day: String = col(row, "day")?;
                let date = NaiveDate::parse_from_str(&day, "%Y-%m-%d")
                    .map_err(|_| LedgerError::Corrupt(format!("archived_at day {day:?}")))?;
                Ok((date, col(row, "n")?))
            })
            .collect()
    }
}
