//! PostgreSQL: appending to the access log and reading it back.

use async_trait::async_trait;
use sqlx::Row;

use super::error::Ctx;
use super::{PgLedger, at, parse_uuid};
use crate::ledger::{AccessAction, AccessEntry, AccessLog, AccessQuery, LedgerError, LoggedAccess};

#[async_trait]
impl AccessLog for PgLedger {
    async fn log_access(&self, entry: &AccessEntry) -> Result<i64, LedgerError> {
        const CONTEXT: &str = "appending to the access log";
        let uuids: Vec<&str> = entry.calls.iter().map(|u| u.as_str()).collect();
        // One statement: the entry and its calls are appended together or not at all.
        sqlx::query_scalar(
            "WITH entry AS (
                 INSERT INTO access_log (at, actor, action, source, reason, query, calls)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id
             ), touched AS (
                 INSERT INTO access_log_calls (entry_id, call_uuid)
                 SELECT entry.id, u.uuid
                 FROM entry, unnest($8::text[]) WITH ORDINALITY AS u (uuid, ord)
                 ORDER BY u.ord
             )
             SELECT id FROM entry",
        )
        .bind(at(entry.at))
        .bind(&entry.actor)
        .bind(entry.action.as_str())
        .bind(&entry.source)
        .bind(entry.reason.as_deref())
        .bind(entry.query.as_deref())
        .bind(i64::try_from(entry.calls.len()).unwrap_or(i64::MAX))
        .bind(&uuids)
        .fetch_one(&self.pool)
        .await
        .ctx(CONTEXT)
    }

    async fn access_entries(&self, query: &AccessQuery) -> Result<Vec<LoggedAccess>, LedgerError> {
        const CONTEXT: &str = "reading the access log";
        let limit = i64::from(query.limit.clamp(1, crate::ledger::MAX_PAGE));
        let rows = sqlx::query(
            "SELECT a.id, a.at, a.actor, a.action, a.source, a.reason, a.query,
                    ARRAY(SELECT l.call_uuid FROM access_log_calls AS l
                          WHERE l.entry_id = a.id ORDER BY l.id) AS touched
             FROM access_log AS a
             WHERE ($1::timestamptz IS NULL OR a.at >= $1) AND ($2::text IS NULL OR a.actor = $2)
               AND ($3::text IS NULL
                    OR a.id IN (SELECT entry_id FROM access_log_calls WHERE call_uuid = $3))
               AND a.id > $4
             ORDER BY a.id LIMIT $5",
        )
        .bind(query.since.map(at))
        .bind(query.actor.as_deref())
        .bind(query.uuid.as_ref().map(|u| u.as_str()))
        .bind(query.after_id.unwrap_or(0))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .ctx(CONTEXT)?;
        rows.iter()
            .map(|row| {
                let action: String = row.try_get("action").ctx(CONTEXT)?;
                let touched: Vec<String> = row.try_get("touched").ctx(CONTEXT)?;
                Ok(LoggedAccess {
                    id: row.try_get("id").ctx(CONTEXT)?,
                    entry: AccessEntry {
                        at: row.try_get("at").ctx(CONTEXT)?,
                        actor: row.try_get("actor").ctx(CONTEXT)?,
                        action: AccessAction::parse(&action).ok_or_else(|| {
                            LedgerError::Corrupt(format!("access action {action:?}"))
                        })?,
                        source: row.try_get("source").ctx(CONTEXT)?,
                        reason: row.try_get("reason").ctx(CONTEXT)?,
                        query: row.try_get("query").ctx(CONTEXT)?,
                        calls: touched
                            .iter()
                            .map(|u| parse_uuid(u))
                            .collect::<Result<Vec<_>, _>>()?,
                    },
                })
            })
            .collect()
    }
}
