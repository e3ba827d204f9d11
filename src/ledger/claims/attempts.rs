//! Attempts: the first of each claimed record starts in the claim's own commit (closing any
//! a killed run left running); later ones start on their own.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::INTERRUPTED_MESSAGE;
use crate::domain::{AttemptId, CallRecord, Claim, RunId};
use crate::ledger::LedgerError;
use crate::ledger::sql::{Row, Stmt, Tx, listed};

/// Claimed records per statement (well under either engine's limit on placeholders:
/// 32,766 on SQLite, 65,535 on PostgreSQL).
const PER_STATEMENT: usize = 500;

/// Inside the claim's transaction, for the records it claimed (each with the attempts
/// counted before the claim): an attempt left running by a killed run ends here, honestly
/// labelled; then each record's first attempt of this claim starts, in the same commit.
/// Two statements per [`PER_STATEMENT`] records.
pub(super) async fn start_claimed<T: Tx>(
    tx: &mut T,
    claimed: Vec<(CallRecord, i64)>,
    owner: &RunId,
    now: DateTime<Utc>,
) -> Result<Vec<Claim>, LedgerError> {
    let mut ids: HashMap<String, i64> = HashMap::with_capacity(claimed.len());
    for chunk in claimed.chunks(PER_STATEMENT) {
        let uuids = chunk.iter().map(|(record, _)| &record.uuid);
        let account = tx.account().to_owned();
        let uuids_listed = listed(chunk.len(), |i| format!("${}", i + 4));
        let close = Stmt::new(
            format!(
                "UPDATE attempts SET outcome = 'interrupted', finished_at = $1, message = $2
                 WHERE account = $3 AND call_uuid IN ({uuids_listed}) AND outcome = 'running'"
            ),
            "closing interrupted attempts",
        )
        .bind(now)
        .bind(INTERRUPTED_MESSAGE)
        .bind(&account);
        tx.execute(uuids.clone().fold(close, Stmt::bind)).await?;
        let values = listed(chunk.len(), |i| {
            format!("($3, ${}, $1, $2, 'running')", i + 4)
        });
        let start = Stmt::new(
            format!(
                "INSERT INTO attempts (account, call_uuid, run_id, started_at, outcome)
                 VALUES {values}
                 RETURNING id, call_uuid"
            ),
            "starting the claims' attempts",
        )
        .bind(owner.as_str())
        .bind(now)
        .bind(&account);
        for row in tx.fetch_all(uuids.fold(start, Stmt::bind)).await? {
            ids.insert(row.text("call_uuid")?, row.int("id")?);
        }
    }
    claimed
        .into_iter()
        .map(|(record, previous_attempts)| {
            let id = ids.get(record.uuid.as_str()).copied().ok_or_else(|| {
                LedgerError::Corrupt(format!(
                    "no attempt started for claimed call {}",
                    record.uuid
                ))
            })?;
            Ok(Claim {
                record,
                previous_attempts,
                attempt: AttemptId(id),
            })
        })
        .collect()
}

/// Starting a later attempt: PostgreSQL counts it on the record and records it as `running`
/// in one statement; SQLite has no data-modifying `WITH`, so it runs [`COUNT_ATTEMPT`] and
/// then [`START_ATTEMPT`] in one transaction.
pub(super) const BEGIN_ATTEMPT_POSTGRES: &str =
    "WITH counted AS (UPDATE calls SET attempts = attempts + 1
                      WHERE account = $4 AND uuid = $1)
     INSERT INTO attempts (call_uuid, run_id, started_at, outcome, account)
     VALUES ($1, $2, $3, 'running', $4)
     RETURNING id";
pub(super) const COUNT_ATTEMPT: &str =
    "UPDATE calls SET attempts = attempts + 1 WHERE account = $2 AND uuid = $1";
pub(super) const START_ATTEMPT: &str =
    "INSERT INTO attempts (call_uuid, run_id, started_at, outcome, account)
     VALUES ($1, $2, $3, 'running', $4)
     RETURNING id";
