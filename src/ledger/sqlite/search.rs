//! SQLite: finding calls through the search terms, one call's whole story, and keeping the
//! terms up to date with the calls the triggers queued.

use async_trait::async_trait;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Sqlite, SqliteConnection};

use super::{QueryContext, SqliteLedger, col, time_col, uuid_col};
use crate::domain::{AttemptOutcome, CallUuid, RecordState};
use crate::ledger::search::{Arg, SearchSql, parts, search_sql};
use crate::ledger::{
    AttemptView, CallDetail, CallParties, CallQuery, CallSummary, LedgerError, ManifestRef, Search,
    TermField,
};
use crate::timefmt::to_ledger;

/// Calls whose terms are rewritten per transaction while catching up.
const REFRESH_BATCH: u32 = 5_000;

/// How many queued calls an import of `n` records indexes in its own transaction: its own
/// and as many again of any backlog, so the queue drains with the imports and a search
/// rarely finds much to do, while one import never waits on a whole backlog.
pub(super) fn with_import(n: usize) -> u32 {
    u32::try_from(n.saturating_mul(2))
        .unwrap_or(u32::MAX)
        .clamp(64, REFRESH_BATCH)
}

fn bind_args<'q>(sql: &'q SearchSql) -> sqlx::query::Query<'q, Sqlite, SqliteArguments> {
    sql.args.iter().fold(
        sqlx::query(sqlx::AssertSqlSafe(sql.text.as_str())),
        |query, arg| match arg {
            Arg::Text(s) => query.bind(s.as_str()),
            Arg::Time(t) => query.bind(to_ledger(*t)),
            Arg::Int(n) => query.bind(*n),
        },
    )
}

/// A row holding [`crate::ledger::search::SUMMARY_COLUMNS`].
fn summary_from_row(row: &SqliteRow) -> Result<CallSummary, LedgerError> {
    let state: String = col(row, "state")?;
    let raw: String = col(row, "raw_json")?;
    Ok(CallSummary {
        uuid: uuid_col(row, "uuid")?,
        call_start: time_col(row, "call_start")?,
        company: col(row, "company_code")?,
        parties: CallParties::of(&raw),
        billsec: col(row, "billsec")?,
        state: RecordState::parse(&state)
            .ok_or_else(|| LedgerError::Corrupt(format!("record state {state:?}")))?,
        size_bytes: col(row, "size_bytes")?,
        sha256: col(row, "sha256")?,
    })
}

/// Term rows per INSERT statement (4 parameters a row, well under SQLite's 32766).
const TERMS_PER_INSERT: usize = 1_000;

/// Rewrites the terms of up to `batch` queued calls in one write transaction; how many it
/// took off the queue. The batch is the first `batch` queued uuids, the same set for every
/// statement below (the write lock is held from `BEGIN IMMEDIATE`).
pub(super) async fn refresh_batch(
    conn: &mut SqliteConnection,
    batch: u32,
) -> Result<u64, LedgerError> {
    const CONTEXT: &str = "indexing calls for search";
    const QUEUED: &str = "SELECT uuid FROM call_terms_stale ORDER BY uuid LIMIT $1";
    let queued: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT s.uuid, c.call_start, c.raw_json
         FROM call_terms_stale AS s LEFT JOIN calls AS c ON c.uuid = s.uuid
         ORDER BY s.uuid LIMIT $1",
    )
    .bind(i64::from(batch))
    .fetch_all(&mut *conn)
    .await
    .ctx(CONTEXT)?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM call_terms WHERE uuid IN ({QUEUED})"
    )))
    .bind(i64::from(batch))
    .execute(&mut *conn)
    .await
    .ctx(CONTEXT)?;
    let terms: Vec<(&str, TermField, String, Option<&str>)> = queued
        .iter()
        .filter_map(|(uuid, start, raw)| Some((uuid, start, raw.as_deref()?)))
        .flat_map(|(uuid, start, raw)| {
            CallParties::of(raw)
                .terms()
                .into_iter()
                .map(move |(field, term)| (uuid.as_str(), field, term, start.as_deref()))
        })
        .collect();
    for chunk in terms.chunks(TERMS_PER_INSERT) {
        let mut insert = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO call_terms (uuid, field, term, call_start) ",
        );
        insert.push_values(chunk, |mut row, (uuid, field, term, start)| {
            row.push_bind(*uuid)
                .push_bind(field.as_str())
                .push_bind(term.as_str())
                .push_bind(*start);
        });
        insert.build().execute(&mut *conn).await.ctx(CONTEXT)?;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM call_terms_stale WHERE uuid IN ({QUEUED})"
    )))
    .bind(i64::from(batch))
    .execute(&mut *conn)
    .await
    .ctx(CONTEXT)?;
    Ok(queued.len() as u64)
}

#[async_trait]
impl Search for SqliteLedger {
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
            let outcome: String = col(a, "outcome")?;
            Ok(AttemptView {
                run_id: col(a, "run_id")?,
                started_at: time_col(a, "started_at")?
                    .ok_or_else(|| LedgerError::Corrupt("attempt without a start".into()))?,
                finished_at: time_col(a, "finished_at")?,
                outcome: AttemptOutcome::parse(&outcome)
                    .ok_or_else(|| LedgerError::Corrupt(format!("attempt outcome {outcome:?}")))?,
                error_code: col(a, "error_code")?,
                message: col(a, "message")?,
                bytes: col(a, "bytes")?,
            })
        })
        .collect::<Result<Vec<_>, LedgerError>>()?;
        let seq: Option<i64> = col(&row, "manifest_seq")?;
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
                    seq: col(m, "seq")?,
                    object_key: col(m, "object_key")?,
                    sha256: col(m, "sha256")?,
                    written_at: time_col(m, "written_at")?,
                })
            })
            .collect::<Result<Vec<_>, LedgerError>>()?,
        };
        Ok(Some(CallDetail {
            summary: summary_from_row(&row)?,
            record_file: col(&row, "record_file")?,
            bill_id: col(&row, "bill_id")?,
            attempts_made: col(&row, "attempts")?,
            object_key: col(&row, "object_key")?,
            content_type: col(&row, "content_type")?,
            archived_at: time_col(&row, "archived_at")?,
            last_error_code: col(&row, "last_error_code")?,
            last_error: col(&row, "last_error")?,
            last_verify_result: col(&row, "last_verify_result")?,
            last_verified_at: time_col(&row, "last_verified_at")?,
            media_duration_ms: col(&row, "media_duration_ms")?,
            media_note: col(&row, "media_note")?,
            raw_json: col(&row, "raw_json")?,
            attempts,
            manifests,
        }))
    }

    async fn refresh_terms(&self, batch: u32) -> Result<u64, LedgerError> {
        let batch = batch.max(1);
        let mut total = 0;
        loop {
            // Without the write lock when nothing is queued (the usual case).
            let queued: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM call_terms_stale)")
                .fetch_one(&self.pool)
                .await
                .ctx("looking for calls to index")?;
            if !queued {
                return Ok(total);
            }
            let mut tx = self
                .pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .ctx("starting to index calls")?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::search::Part;
    use crate::ledger::{CallCursor, LedgerOptions, PhoneNumber};

    /// SQLite's plan for `query`'s dated part, one line per step.
    async fn plan(ledger: &SqliteLedger, query: &CallQuery) -> Vec<String> {
        let sql = search_sql(query, Part::Dated, 50);
        let explain = SearchSql {
            text: format!("EXPLAIN QUERY PLAN {}", sql.text),
            args: sql.args,
        };
        bind_args(&explain)
            .fetch_all(&ledger.pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(|row| col::<String>(row, "detail").unwrap_or_else(|e| panic!("{e}")))
            .collect()
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
        let q = CallQuery::all(50);
        let in_order = [
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
        ];
        for (name, query) in &in_order {
            let steps = plan(&ledger, query).await;
            assert!(
                steps
                    .iter()
                    .all(|s| !s.starts_with("SCAN ") && !s.contains("TEMP B-TREE")),
                "{name}: {steps:?}"
            );
        }
        let sorted_matches = [
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
        ];
        for (name, query) in &sorted_matches {
            let steps = plan(&ledger, query).await;
            assert!(
                steps.iter().all(|s| !s.starts_with("SCAN ")),
                "{name}: {steps:?}"
            );
        }
        let number = plan(&ledger, &sorted_matches[0].1).await.join("\n");
        assert!(
            number.contains("call_terms_search (field=? AND term>? AND term<?)"),
            "{number}"
        );
    }
}
