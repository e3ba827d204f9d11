//! PostgreSQL: finding calls through the search terms, one call's whole story, and keeping
//! the terms up to date with the calls the triggers queued. Several processes may index at
//! once: each takes its batch of the queue with `FOR UPDATE SKIP LOCKED`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{PgConnection, Postgres};

use super::error::Ctx;
use super::{PgLedger, at, parse_state, parse_uuid};
use crate::domain::{AttemptOutcome, CallUuid};
use crate::ledger::search::{Arg, SearchSql, parts, search_sql};
use crate::ledger::{
    AttemptView, CallDetail, CallParties, CallQuery, CallSummary, LedgerError, ManifestRef, Search,
};

/// Calls whose terms are rewritten per transaction while catching up.
const REFRESH_BATCH: u32 = 5_000;

/// How many queued calls an import of `n` records indexes in its own transaction (as on
/// SQLite: its own and as many again of any backlog).
pub(super) fn with_import(n: usize) -> u32 {
    u32::try_from(n.saturating_mul(2))
        .unwrap_or(u32::MAX)
        .clamp(64, REFRESH_BATCH)
}

fn bind_args(sql: &SearchSql) -> sqlx::query::Query<'_, Postgres, PgArguments> {
    sql.args.iter().fold(
        sqlx::query(sqlx::AssertSqlSafe(sql.text.as_str())),
        |query, arg| match arg {
            Arg::Text(s) => query.bind(s.as_str()),
            Arg::Time(t) => query.bind(at(*t)),
            Arg::Int(n) => query.bind(*n),
        },
    )
}

/// A row holding [`crate::ledger::search::SUMMARY_COLUMNS`].
fn summary_from_row(row: &PgRow) -> Result<CallSummary, LedgerError> {
    const CONTEXT: &str = "reading a found call";
    let uuid: String = row.try_get("uuid").ctx(CONTEXT)?;
    let state: String = row.try_get("state").ctx(CONTEXT)?;
    let raw: String = row.try_get("raw_json").ctx(CONTEXT)?;
    Ok(CallSummary {
        uuid: parse_uuid(&uuid)?,
        call_start: row.try_get("call_start").ctx(CONTEXT)?,
        company: row.try_get("company_code").ctx(CONTEXT)?,
        parties: CallParties::of(&raw),
        billsec: row.try_get("billsec").ctx(CONTEXT)?,
        state: parse_state(&state)?,
        size_bytes: row.try_get("size_bytes").ctx(CONTEXT)?,
        sha256: row.try_get("sha256").ctx(CONTEXT)?,
    })
}

/// Takes up to `batch` calls off the queue and rewrites their terms; how many it took.
pub(super) async fn refresh_batch(conn: &mut PgConnection, batch: u32) -> Result<u64, LedgerError> {
    const CONTEXT: &str = "indexing calls for search";
    let queued: Vec<(String, Option<DateTime<Utc>>, Option<String>)> = sqlx::query_as(
        "WITH taken AS (
             DELETE FROM call_terms_stale
             WHERE uuid IN (SELECT uuid FROM call_terms_stale ORDER BY uuid LIMIT $1
                            FOR UPDATE SKIP LOCKED)
             RETURNING uuid
         )
         SELECT taken.uuid, c.call_start, c.raw_json
         FROM taken LEFT JOIN calls AS c ON c.uuid = taken.uuid",
    )
    .bind(i64::from(batch))
    .fetch_all(&mut *conn)
    .await
    .ctx(CONTEXT)?;
    if queued.is_empty() {
        return Ok(0);
    }
    let uuids: Vec<&str> = queued.iter().map(|(u, _, _)| u.as_str()).collect();
    sqlx::query("DELETE FROM call_terms WHERE uuid = ANY($1)")
        .bind(&uuids)
        .execute(&mut *conn)
        .await
        .ctx(CONTEXT)?;
    let (mut t_uuid, mut t_field, mut t_term, mut t_start) = (vec![], vec![], vec![], vec![]);
    for (uuid, start, raw) in &queued {
        let Some(raw) = raw else { continue };
        for (field, term) in CallParties::of(raw).terms() {
            t_uuid.push(uuid.as_str());
            t_field.push(field.as_str());
            t_term.push(term);
            t_start.push(*start);
        }
    }
    sqlx::query(
        "INSERT INTO call_terms (uuid, field, term, call_start)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&t_uuid)
    .bind(&t_field)
    .bind(&t_term)
    .bind(&t_start)
    .execute(&mut *conn)
    .await
    .ctx(CONTEXT)?;
    Ok(queued.len() as u64)
}

#[async_trait]
impl Search for PgLedger {
    async fn find_calls(&self, query: &CallQuery) -> Result<Vec<CallSummary>, LedgerError> {
        self.refresh_terms(REFRESH_BATCH).await?;
        let limit = query.page_size();
        let mut found = Vec::new();
        for part in parts(query) {
            let want = limit - u32::try_from(found.len()).unwrap_or(limit);
            if want == 0 {
                break;
            }
            let sql = search_sql(query, part, want);
            let rows = bind_args(&sql)
                .fetch_all(&self.pool)
                .await
                .ctx("searching calls")?;
            for row in &rows {
                found.push(summary_from_row(row)?);
            }
        }
        Ok(found)
    }

    async fn call_detail(&self, uuid: &CallUuid) -> Result<Option<CallDetail>, LedgerError> {
        const CONTEXT: &str = "reading a call's details";
        let row = sqlx::query(
            "SELECT c.uuid, c.company_code, c.call_start, c.billsec, c.raw_json, c.state,
                    c.size_bytes, c.sha256, c.record_file, c.bill_id, c.attempts, c.object_key,
                    c.content_type, c.archived_at, c.last_error_code, c.last_error,
                    c.last_verify_result, c.last_verified_at, c.media_duration_ms, c.media_note,
                    c.manifest_seq
             FROM calls AS c WHERE c.uuid = $1",
        )
        .bind(uuid.as_str())
        .fetch_optional(&self.pool)
        .await
        .ctx(CONTEXT)?;
        let Some(row) = row else { return Ok(None) };
        let attempts = sqlx::query(
            "SELECT run_id, started_at, finished_at, outcome, error_code, message, bytes
             FROM attempts WHERE call_uuid = $1 ORDER BY started_at, id",
        )
        .bind(uuid.as_str())
        .fetch_all(&self.pool)
        .await
        .ctx(CONTEXT)?
        .iter()
        .map(|a| {
            let outcome: String = a.try_get("outcome").ctx(CONTEXT)?;
            Ok(AttemptView {
                run_id: a.try_get("run_id").ctx(CONTEXT)?,
                started_at: a.try_get("started_at").ctx(CONTEXT)?,
                finished_at: a.try_get("finished_at").ctx(CONTEXT)?,
                outcome: AttemptOutcome::parse(&outcome)
                    .ok_or_else(|| LedgerError::Corrupt(format!("attempt outcome {outcome:?}")))?,
                error_code: a.try_get("error_code").ctx(CONTEXT)?,
                message: a.try_get("message").ctx(CONTEXT)?,
                bytes: a.try_get("bytes").ctx(CONTEXT)?,
            })
        })
        .collect::<Result<Vec<_>, LedgerError>>()?;
        let seq: Option<i64> = row.try_get("manifest_seq").ctx(CONTEXT)?;
        let manifests = match seq {
            None => Vec::new(),
            Some(seq) => sqlx::query(
                "SELECT seq, object_key, sha256, written_at FROM manifests WHERE seq = $1",
            )
            .bind(seq)
            .fetch_all(&self.pool)
            .await
            .ctx(CONTEXT)?
            .iter()
            .map(|m| {
                Ok(ManifestRef {
                    seq: m.try_get("seq").ctx(CONTEXT)?,
                    object_key: m.try_get("object_key").ctx(CONTEXT)?,
                    sha256: m.try_get("sha256").ctx(CONTEXT)?,
                    written_at: m.try_get("written_at").ctx(CONTEXT)?,
                })
            })
            .collect::<Result<Vec<_>, LedgerError>>()?,
        };
        Ok(Some(CallDetail {
            summary: summary_from_row(&row)?,
            record_file: row.try_get("record_file").ctx(CONTEXT)?,
            bill_id: row.try_get("bill_id").ctx(CONTEXT)?,
            attempts_made: row.try_get("attempts").ctx(CONTEXT)?,
            object_key: row.try_get("object_key").ctx(CONTEXT)?,
            content_type: row.try_get("content_type").ctx(CONTEXT)?,
            archived_at: row.try_get("archived_at").ctx(CONTEXT)?,
            last_error_code: row.try_get("last_error_code").ctx(CONTEXT)?,
            last_error: row.try_get("last_error").ctx(CONTEXT)?,
            last_verify_result: row.try_get("last_verify_result").ctx(CONTEXT)?,
            last_verified_at: row.try_get("last_verified_at").ctx(CONTEXT)?,
            media_duration_ms: row.try_get("media_duration_ms").ctx(CONTEXT)?,
            media_note: row.try_get("media_note").ctx(CONTEXT)?,
            raw_json: row.try_get("raw_json").ctx(CONTEXT)?,
            attempts,
            manifests,
        }))
    }

    async fn refresh_terms(&self, batch: u32) -> Result<u64, LedgerError> {
        let batch = batch.max(1);
        let mut total = 0;
        loop {
            let queued: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM call_terms_stale)")
                .fetch_one(&self.pool)
                .await
                .ctx("looking for calls to index")?;
            if !queued {
                return Ok(total);
            }
            let mut tx = self.pool.begin().await.ctx("starting to index calls")?;
            let n = refresh_batch(&mut tx, batch).await?;
            tx.commit()
                .await
                .ctx("committing the calls' search terms")?;
            total += n;
            if n < u64::from(batch) {
                return Ok(total);
            }
        }
    }
}
