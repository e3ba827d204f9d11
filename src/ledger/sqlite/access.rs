//! SQLite: appending to the access log and reading it back.

use async_trait::async_trait;

use super::{QueryContext, SqliteLedger, col, time_col, uuid_col};
use crate::ledger::{AccessAction, AccessEntry, AccessLog, AccessQuery, LedgerError, LoggedAccess};
use crate::timefmt::to_ledger;

#[async_trait]
impl AccessLog for SqliteLedger {
    async fn log_access(&self, entry: &AccessEntry) -> Result<i64, LedgerError> {
        const CONTEXT: &str = "appending to the access log";
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.ctx(CONTEXT)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO access_log (at, actor, action, source, reason, query, calls)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(to_ledger(entry.at))
        .bind(&entry.actor)
        .bind(entry.action.as_str())
        .bind(&entry.source)
        .bind(entry.reason.as_deref())
        .bind(entry.query.as_deref())
        .bind(i64::try_from(entry.calls.len()).unwrap_or(i64::MAX))
        .fetch_one(&mut *tx)
        .await
        .ctx(CONTEXT)?;
        for uuid in &entry.calls {
            sqlx::query("INSERT INTO access_log_calls (entry_id, call_uuid) VALUES ($1, $2)")
                .bind(id)
                .bind(uuid.as_str())
                .execute(&mut *tx)
                .await
                .ctx(CONTEXT)?;
        }
        tx.commit().await.ctx(CONTEXT)?;
        Ok(id)
    }

    async fn access_entries(&self, query: &AccessQuery) -> Result<Vec<LoggedAccess>, LedgerError> {
        const CONTEXT: &str = "reading the access log";
        let limit = i64::from(query.limit.clamp(1, crate::ledger::MAX_PAGE));
        let rows = sqlx::query(
            "SELECT id, at, actor, action, source, reason, query FROM access_log AS a
             WHERE ($1 IS NULL OR a.at >= $1) AND ($2 IS NULL OR a.actor = $2)
               AND ($3 IS NULL OR a.id IN (SELECT entry_id FROM access_log_calls WHERE call_uuid = $3))
               AND a.id > $4
             ORDER BY a.id LIMIT $5",
        )
        .bind(query.since.map(to_ledger))
        .bind(query.actor.as_deref())
        .bind(query.uuid.as_ref().map(|u| u.as_str()))
        .bind(query.after_id.unwrap_or(0))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .ctx(CONTEXT)?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = col(row, "id")?;
            let action: String = col(row, "action")?;
            let calls = sqlx::query(
                "SELECT call_uuid FROM access_log_calls WHERE entry_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .ctx(CONTEXT)?
            .iter()
            .map(|r| uuid_col(r, "call_uuid"))
            .collect::<Result<Vec<_>, _>>()?;
            entries.push(LoggedAccess {
                id,
                entry: AccessEntry {
                    at: time_col(row, "at")?.ok_or_else(|| {
                        LedgerError::Corrupt("access entry without a time".into())
                    })?,
                    actor: col(row, "actor")?,
                    action: AccessAction::parse(&action)
                        .ok_or_else(|| LedgerError::Corrupt(format!("access action {action:?}")))?,
                    source: col(row, "source")?,
                    reason: col(row, "reason")?,
                    query: col(row, "query")?,
                    calls,
                },
            });
        }
        Ok(entries)
    }
}
