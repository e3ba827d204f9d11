//! Which records are due, in claim order (oldest call first, undated calls last, then by
//! uuid), as statement text: the candidates a claim takes its batch from, the dry-run
//! listing and the count. One statement per combination of slice bounds ([`SliceSql`]),
//! so that a slice's bounds are index ranges on both engines.
//!
//! Parameters, the same in every statement here and in each backend's claim: `$1`..`$3`
//! the slice ([`crate::ledger::sql::Stmt::slice`]), `$4` now (leases that ran out before it
//! are taken over), `$5` due by (pending records whose next attempt falls before it), `$6`
//! the most records, `$7` the claimer (whose own lapsed leases are left alone). The account
//! whose records they are is the placeholder after each statement's last: `$7` in the
//! listing, `$5` in the count, `$9` in a claim (the caller writes it into `filter`).

use crate::ledger::sql::{RECORD_COLUMNS, SliceSql, by_slice};
use crate::ledger::{BackendKind, Slice};

/// The due records in claim order as the union of disjoint candidate sets, each read
/// through its own index in claim order and cut at `$6`, so that a batch costs one short
/// index walk however long the backlog or the ledger (a single `OR` query sorted every due
/// record on every claim). The sets differ by engine because the indexes' orders do:
///
/// - PostgreSQL, two sets. Pending records due by `$5`: `calls_due` (state, call_start,
///   uuid, next_attempt_at) holds them in exactly the claim order (`NULLS LAST` is the
///   index's own order), so the scan stops after `$6` due rows, and `next_attempt_at <= $5`
///   is checked on the index entry, so records not due yet cost no row read. Records whose
///   lease ran out before `$4`: `calls_lease` (state, lease_until), sorted (only records in
///   progress, a few per worker).
/// - SQLite, three sets: its indexes sort NULL first, so dated pending records (walking
///   `calls_due` (state, call_start, next_attempt_at) in call order, skipping those not due
///   yet without reading their rows) and undated ones are two walks; then lapsed leases.
///
/// `filter` holds the slice's conditions (see [`by_slice`]); `lock` is
/// ` FOR UPDATE SKIP LOCKED` when PostgreSQL claims, empty otherwise. `not_owner` excludes
/// the claimer's own lapsed leases (a claim passes ` AND lease_owner <> $7`): a run whose
/// renewals failed for a while must not take back a record one of its own workers is still
/// transferring.
pub(crate) fn due_candidates(
    kind: BackendKind,
    filter: &str,
    columns: &str,
    lock: &str,
    not_owner: &str,
) -> String {
    let filter = due_filter(kind, filter);
    let lapsed = format!(
        "SELECT {columns} FROM (
             SELECT {columns} FROM calls
             WHERE state = 'in_progress' AND lease_until < $4{not_owner}{filter}
             ORDER BY call_start ASC NULLS LAST, uuid LIMIT $6{lock}) AS lapsed"
    );
    match kind {
        BackendKind::Postgres => format!(
            "SELECT {columns} FROM (
                 SELECT {columns} FROM calls
                 WHERE state = 'pending' AND next_attempt_at <= $5{filter}
                 ORDER BY call_start ASC NULLS LAST, uuid LIMIT $6{lock}) AS due
             UNION ALL
             {lapsed}"
        ),
        BackendKind::Sqlite => format!(
            "SELECT {columns} FROM (
                 SELECT {columns} FROM calls
                 WHERE state = 'pending' AND call_start IS NOT NULL AND next_attempt_at <= $5{filter}
                 ORDER BY call_start, uuid LIMIT $6{lock}) AS dated
             UNION ALL
             SELECT {columns} FROM (
                 SELECT {columns} FROM calls
                 WHERE state = 'pending' AND call_start IS NULL AND next_attempt_at <= $5{filter}
                 ORDER BY uuid LIMIT $6{lock}) AS undated
             UNION ALL
             {lapsed}"
        ),
    }
}

/// A slice's conditions as `kind` best reads them beside a due record's state. SQLite's
/// planner, which has no statistics here, would walk a company's calls through
/// `calls_company_start` (its whole history, in call order) to find the few due ones;
/// there the company is checked on each due row instead (a `+` keeps the column from being
/// matched to an index), so the walk stays on `calls_due` or `calls_lease`, ranged by the
/// slice's dates.
fn due_filter(kind: BackendKind, filter: &str) -> String {
    match kind {
        BackendKind::Postgres => filter.to_owned(),
        BackendKind::Sqlite => filter.replace("company_code = $1", "+company_code = $1"),
    }
}

/// The records a claim would take now (`$4` = `$5` = now), without taking them.
fn due_texts(kind: BackendKind) -> [String; 8] {
    by_slice(|filter| {
        let filter = format!(" AND account = $7{filter}");
        format!(
            "SELECT {RECORD_COLUMNS} FROM ({}) AS candidates
             ORDER BY call_start ASC NULLS LAST, uuid LIMIT $6",
            due_candidates(kind, &filter, RECORD_COLUMNS, "", "")
        )
    })
}

/// How many records are due at `$4`: the two kinds counted through their indexes
/// (`calls_due` and `calls_lease`).
fn count_texts(kind: BackendKind) -> [String; 8] {
    by_slice(|filter| {
        let filter = due_filter(kind, &format!(" AND account = $5{filter}"));
        format!(
            "SELECT (SELECT count(*) FROM calls
                     WHERE state = 'pending' AND next_attempt_at <= $4{filter})
                  + (SELECT count(*) FROM calls
                     WHERE state = 'in_progress' AND lease_until < $4{filter}) AS n"
        )
    })
}

static DUE_SQLITE: SliceSql = SliceSql::new(|| due_texts(BackendKind::Sqlite));
static DUE_POSTGRES: SliceSql = SliceSql::new(|| due_texts(BackendKind::Postgres));
static COUNT_SQLITE: SliceSql = SliceSql::new(|| count_texts(BackendKind::Sqlite));
static COUNT_POSTGRES: SliceSql = SliceSql::new(|| count_texts(BackendKind::Postgres));

/// The statement listing the due records of `slice` (`$4` = `$5` = now, `$6` the most).
pub(super) fn due_sql(kind: BackendKind, slice: &Slice) -> &'static str {
    match kind {
        BackendKind::Sqlite => DUE_SQLITE.sql(slice),
        BackendKind::Postgres => DUE_POSTGRES.sql(slice),
    }
}

/// The statement counting the due records of `slice` (`$4` now), as `n`.
pub(super) fn count_sql(kind: BackendKind, slice: &Slice) -> &'static str {
    match kind {
        BackendKind::Sqlite => COUNT_SQLITE.sql(slice),
        BackendKind::Postgres => COUNT_POSTGRES.sql(slice),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LedgerOptions;
    use crate::ledger::claims::ClaimBatch;
    use crate::ledger::sql::Stmt;
    use crate::ledger::sqlite::SqliteLedger;

    /// SQLite's plan of `text` with the parameters of a due statement bound.
    async fn plan(ledger: &SqliteLedger, text: &str, slice: &Slice) -> Vec<String> {
        let t = chrono::DateTime::from_timestamp(1_780_000_000, 0).unwrap_or_default();
        let stmt = Stmt::new(text.to_owned(), "explaining")
            .slice(slice)
            .bind(t)
            .bind(t)
            .bind(16i64)
            .bind("run")
            .bind(t);
        crate::ledger::sqlite::query_plan(ledger, stmt).await
    }

    /// On SQLite, with any slice, the claim, the listing and the count find due records
    /// through an index on their state (`calls_due`, `calls_lease`; a slice's dates as
    /// their range), never by scanning `calls` or walking a company's whole history.
    #[tokio::test]
    async fn sqlite_finds_due_records_through_the_due_indexes() {
        let ledger = SqliteLedger::open("sqlite::memory:", &LedgerOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let t = chrono::DateTime::from_timestamp(1_780_000_000, 0);
        for mask in 0..8 {
            let slice = Slice {
                company: (mask & 1 != 0).then(|| "c".to_owned()),
                since: if mask & 2 != 0 { t } else { None },
                until: if mask & 4 != 0 { t } else { None },
            };
            let kind = BackendKind::Sqlite;
            for text in [
                ledger.claim_sql(&slice),
                due_sql(kind, &slice),
                count_sql(kind, &slice),
            ] {
                let steps = plan(&ledger, text, &slice).await;
                let reads: Vec<&String> = steps
                    .iter()
                    .filter(|s| s.contains(" calls ") || s.ends_with(" calls"))
                    .filter(|s| !s.contains("sqlite_autoindex_calls_1 (account=? AND uuid=?)"))
                    .collect();
                assert!(!reads.is_empty(), "{slice:?}: {steps:?}");
                assert!(
                    reads.iter().all(|s| s.starts_with("SEARCH calls USING")
                        && s.contains(" (account=? AND state=?")),
                    "{slice:?}: {steps:?}"
                );
            }
        }
    }
}
