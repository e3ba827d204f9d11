//! Settling a claim: the record's new state and, in the same transaction, the end of its
//! last attempt; every settlement checks that the lease is still the settler's.

use std::borrow::Cow;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};

use super::{AttemptEnd, Settlement, lease_lost_message};
use crate::domain::{AttemptOutcome, CallUuid, RunId};
use crate::ledger::sql::{Row, Stmt, Tx};
use crate::ledger::{BackendKind, LedgerError};

// The row is found by its primary key alone: the lease check is written so that no index
// can serve it (`IS NOT DISTINCT FROM` on a row value), or PostgreSQL's generic plan may walk
// `calls_lease` over every record in progress (and its dead entries) instead (120 buffers
// read to update one row, against 36; BENCHMARKS.md). SQLite plans it as the same
// primary-key search as `lease_owner = $2 AND state = 'in_progress'`.

/// `$4`..`$12`: the object and what the media check noted.
const ARCHIVED: &str =
    "UPDATE calls SET state = 'archived', lease_owner = NULL, lease_until = NULL, updated_at = $3,
        object_key = $4, size_bytes = $5, sha256 = $6, content_type = $7, etag = $8,
        object_version = $9, archived_at = $10, last_error_code = NULL, last_error = NULL,
        media_duration_ms = $11, media_note = $12
 WHERE account = $13 AND uuid = $1 AND (lease_owner, state) IS NOT DISTINCT FROM ($2, 'in_progress')";

/// Back to pending: `$4` next attempt, `$5` code, `$6` message.
const PENDING: &str =
    "UPDATE calls SET state = 'pending', lease_owner = NULL, lease_until = NULL, updated_at = $3,
        next_attempt_at = $4, last_error_code = $5, last_error = $6
 WHERE account = $7 AND uuid = $1 AND (lease_owner, state) IS NOT DISTINCT FROM ($2, 'in_progress')";

/// As [`PENDING`], and `$7` the attempts counted before the claim.
const RETURNED: &str =
    "UPDATE calls SET state = 'pending', lease_owner = NULL, lease_until = NULL, updated_at = $3,
        next_attempt_at = $4, last_error_code = $5, last_error = $6,
        attempts = $7
 WHERE account = $8 AND uuid = $1 AND (lease_owner, state) IS NOT DISTINCT FROM ($2, 'in_progress')";

/// Given up: `$4` the state, `$5` code, `$6` message.
const GIVEN_UP: &str =
    "UPDATE calls SET state = $4, lease_owner = NULL, lease_until = NULL, updated_at = $3,
        last_error_code = $5, last_error = $6
 WHERE account = $7 AND uuid = $1 AND (lease_owner, state) IS NOT DISTINCT FROM ($2, 'in_progress')";

/// The record's update of each kind of settlement, in [`variant`] order.
const UPDATES: [&str; 4] = [ARCHIVED, PENDING, RETURNED, GIVEN_UP];

/// Which of [`UPDATES`] settles `settlement`.
fn variant(settlement: &Settlement<'_>) -> usize {
    match settlement {
        Settlement::Archived(..) => 0,
        Settlement::Retry { .. } | Settlement::Released { .. } => 1,
        Settlement::Returned { .. } => 2,
        Settlement::Failed { .. } | Settlement::Expired { .. } => 3,
    }
}

/// The settlement's update of the record, which touches one row while `owner` holds it
/// (the account's placeholder follows the settlement's own).
fn settlement_stmt(
    account: &str,
    uuid: &CallUuid,
    owner: &RunId,
    settlement: &Settlement<'_>,
    now: DateTime<Utc>,
) -> Stmt {
    let text = UPDATES[variant(settlement)];
    let base = Stmt::new(text, "settling a record")
        .bind(uuid)
        .bind(owner.as_str())
        .bind(now);
    let stmt = match settlement {
        Settlement::Archived(obj, media) => base
            .bind(obj.key.as_str())
            .bind(obj.size)
            .bind(obj.sha256.as_str())
            .bind(obj.content_type.as_deref())
            .bind(obj.etag.as_deref())
            .bind(obj.version.as_deref())
            .bind(obj.archived_at)
            .bind(media.duration_ms)
            .bind(media.note.as_deref()),
        Settlement::Retry {
            next_attempt_at,
            code,
            message,
        } => base.bind(*next_attempt_at).bind(*code).bind(*message),
        Settlement::Released { message } => base.bind(now).bind("interrupted").bind(*message),
        Settlement::Returned {
            code,
            message,
            attempts_before,
        } => base
            .bind(now)
            .bind(*code)
            .bind(*message)
            .bind(*attempts_before),
        Settlement::Failed { code, message } => base.bind("failed").bind(*code).bind(*message),
        Settlement::Expired { code, message } => base.bind("expired").bind(*code).bind(*message),
    };
    stmt.bind(account)
}

/// One settlement inside the caller's transaction: the record's new state and, with it, the
/// end of its last attempt (one statement on PostgreSQL, [`in_one_statement`]). `false` when
/// `owner` no longer holds the lease.
pub(super) async fn settle_in<T: Tx>(
    tx: &mut T,
    kind: BackendKind,
    uuid: &CallUuid,
    owner: &RunId,
    settlement: &Settlement<'_>,
    last_attempt: Option<&AttemptEnd<'_>>,
    now: DateTime<Utc>,
) -> Result<bool, LedgerError> {
    if let Some(stmt) = in_one_statement(
        kind,
        tx.account(),
        uuid,
        owner,
        settlement,
        last_attempt,
        now,
    ) {
        return held(&tx.fetch_one(stmt).await?);
    }
    let stmt = settlement_stmt(tx.account(), uuid, owner, settlement, now);
    let held = tx.execute(stmt).await? == 1;
    match last_attempt {
        Some(end) if held => {
            tx.execute(finish_stmt(end, now)).await?;
        }
        // Another run holds the record now: the attempt's own outcome did not count.
        Some(end) => {
            let message = lease_lost_message(end.outcome);
            let lost = AttemptEnd {
                outcome: AttemptOutcome::LeaseLost,
                error_code: Some("lease_lost"),
                message: Some(&message),
                ..end.clone()
            };
            tx.execute(finish_stmt(&lost, now)).await?;
        }
        None => {}
    }
    Ok(held)
}

/// The end of an attempt, as the attempts table records it.
pub(super) fn finish_stmt(end: &AttemptEnd<'_>, now: DateTime<Utc>) -> Stmt {
    Stmt::new(
        "UPDATE attempts SET finished_at = $1, outcome = $2, error_code = $3, message = $4, bytes = $5
         WHERE id = $6",
        "ending an attempt",
    )
    .bind(now)
    .bind(end.outcome.as_str())
    .bind(end.error_code)
    .bind(end.message)
    .bind(end.bytes)
    .bind(end.id.0)
}

/// PostgreSQL: a settlement and the end of its last attempt in one statement (a
/// data-modifying `WITH`), so a lone settlement is one round trip committed on its own
/// instead of four (begin, two statements, commit). The attempt ends as `lease_lost` when
/// the record's update found the lease gone, as [`settle_in`] does in two statements.
/// Rows: one, `held` (1 or 0). `None` on SQLite, or with no attempt to end.
pub(super) fn in_one_statement(
    kind: BackendKind,
    account: &str,
    uuid: &CallUuid,
    owner: &RunId,
    settlement: &Settlement<'_>,
    last_attempt: Option<&AttemptEnd<'_>>,
    now: DateTime<Utc>,
) -> Option<Stmt> {
    let end = last_attempt.filter(|_| kind == BackendKind::Postgres)?;
    let update = settlement_stmt(account, uuid, owner, settlement, now);
    let text = &WITH_END[variant(settlement)];
    let stmt = Stmt {
        text: Cow::Borrowed(text.as_str()),
        ..update
    };
    Some(
        stmt.bind(now)
            .bind(end.outcome.as_str())
            .bind(end.error_code)
            .bind(end.message)
            .bind(lease_lost_message(end.outcome))
            .bind(end.bytes)
            .bind(end.id.0),
    )
}

/// Whether the one statement of [`in_one_statement`] found the lease still held.
pub(super) fn held(row: &impl Row) -> Result<bool, LedgerError> {
    Ok(row.int("held")? == 1)
}

/// [`in_one_statement`]'s text for each of [`UPDATES`].
static WITH_END: LazyLock<[String; 4]> = LazyLock::new(|| UPDATES.map(with_end));

/// `update` (placeholders `$1`..`$n`), then the attempt's end (`$n+1` finished at, `$n+2`
/// outcome, `$n+3` error code, `$n+4` message, `$n+5` the message if the lease was lost,
/// `$n+6` bytes, `$n+7` the attempt).
fn with_end(update: &str) -> String {
    let n = last_placeholder(update);
    let p = |i: usize| format!("${}", n + i);
    let held = "EXISTS (SELECT FROM settled)";
    format!(
        "WITH settled AS ({update} RETURNING uuid),
         ended AS (
             UPDATE attempts SET finished_at = {},
                 outcome = CASE WHEN {held} THEN {} ELSE 'lease_lost' END,
                 error_code = CASE WHEN {held} THEN {} ELSE 'lease_lost' END,
                 message = CASE WHEN {held} THEN {} ELSE {} END,
                 bytes = {}
             WHERE id = {})
         SELECT count(*) AS held FROM settled",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        p(6),
        p(7)
    )
}

/// The highest `$n` in `text`.
fn last_placeholder(text: &str) -> usize {
    text.split('$')
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attempts_end_is_numbered_after_the_update() {
        assert_eq!(last_placeholder(ARCHIVED), 13);
        assert_eq!(last_placeholder(PENDING), 7);
        assert_eq!(last_placeholder(RETURNED), 8);
        assert_eq!(last_placeholder(GIVEN_UP), 7);
        assert!(WITH_END[1].contains("WHERE id = $14)"));
    }
}
