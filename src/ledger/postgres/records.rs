//! PostgreSQL: call records coming in (import, upsert by uuid) and being looked at.
//!
//! Before anything is written, the calls of the batch are locked (transaction-level
//! advisory locks on their bill ids and record file names, which `sync` takes too) and the
//! rows sync found for them are taken over (see `sync.rs`). Then an import is two statements whatever the batch size (a CSV batch is a thousand
//! records): one `INSERT … SELECT FROM unnest(…) ON CONFLICT (uuid) DO NOTHING` for the
//! first occurrence of each uuid, then one `UPDATE` for late recordings. The outcomes are
//! those of importing the records one by one, as the SQLite ledger does. Two receivers
//! importing the same record at once give one row and one `New`: the second insert waits
//! for the first transaction and then does nothing. Rows are inserted in uuid order, so two
//! overlapping batches take their row locks in the same order.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::error::{Ctx, retry_conflicts};
use super::{PgLedger, at, parse_state, parse_uuid, record_from_row, sync};
use crate::domain::{CallRecord, CallUuid, RecordState, RunId};
use crate::ledger::BackendKind;
use crate::ledger::search::{refresh_batch, with_import};
use crate::ledger::{ImportOutcome, LedgerError, LedgerRow, Records};

#[async_trait]
impl Records for PgLedger {
    async fn import(
        &self,
        records: &[CallRecord],
        now: DateTime<Utc>,
    ) -> Result<Vec<ImportOutcome>, LedgerError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let plan = ImportPlan::new(records);
        let (inserted, added, merged) =
            retry_conflicts(|| self.import_once(records, &plan, now)).await?;
        let mut outcomes = plan.outcomes(records, &inserted, &added);
        for &i in &plan.firsts {
            if merged.contains(records[i].uuid.as_str()) {
                outcomes[i] = ImportOutcome::MatchedBill;
            }
        }
        Ok(outcomes)
    }

    async fn get(&self, uuid: &CallUuid) -> Result<Option<LedgerRow>, LedgerError> {
        const CONTEXT: &str = "reading a call record";
        let row = sqlx::query(
            "SELECT uuid, company_code, record_file, call_start, billsec, raw_json, bill_id, notes,
                    origin, imported_at, state, attempts,
                    next_attempt_at, lease_owner, object_key, size_bytes, sha256, content_type, etag,
                    archived_at, last_error_code, last_error, manifest_seq, last_verify_result,
                    bill_seen_at
             FROM calls WHERE uuid = $1",
        )
        .bind(uuid.as_str())
        .fetch_optional(&self.pool)
        .await
        .ctx(CONTEXT)?;
        let Some(row) = row else { return Ok(None) };
        let state: String = row.try_get("state").ctx(CONTEXT)?;
        Ok(Some(LedgerRow {
            record: record_from_row(&row)?,
            state: parse_state(&state)?,
            attempts: row.try_get("attempts").ctx(CONTEXT)?,
            next_attempt_at: row.try_get("next_attempt_at").ctx(CONTEXT)?,
            lease_owner: row
                .try_get::<Option<String>, _>("lease_owner")
                .ctx(CONTEXT)?
                .map(RunId::from),
            object_key: row.try_get("object_key").ctx(CONTEXT)?,
            size_bytes: row.try_get("size_bytes").ctx(CONTEXT)?,
            sha256: row.try_get("sha256").ctx(CONTEXT)?,
            content_type: row.try_get("content_type").ctx(CONTEXT)?,
            etag: row.try_get("etag").ctx(CONTEXT)?,
            archived_at: row.try_get("archived_at").ctx(CONTEXT)?,
            last_error_code: row.try_get("last_error_code").ctx(CONTEXT)?,
            last_error: row.try_get("last_error").ctx(CONTEXT)?,
            manifest_seq: row.try_get("manifest_seq").ctx(CONTEXT)?,
            last_verify_result: row.try_get("last_verify_result").ctx(CONTEXT)?,
            bill_seen_at: row.try_get("bill_seen_at").ctx(CONTEXT)?,
        }))
    }

    /// Oldest call first, undated calls first of all (SQLite's order: NULL sorts lowest).
    async fn uuids_in_state(&self, state: RecordState) -> Result<Vec<CallUuid>, LedgerError> {
        let uuids: Vec<String> = sqlx::query_scalar(
            "SELECT uuid FROM calls WHERE state = $1 ORDER BY call_start ASC NULLS FIRST, uuid",
        )
        .bind(state.as_str())
        .fetch_all(&self.pool)
        .await
        .ctx("listing records by state")?;
        uuids.iter().map(|u| parse_uuid(u)).collect()
    }
}

/// Which occurrence of each uuid in a batch does what, so that one insert and one update
/// give the outcomes of importing the records one by one.
#[derive(Debug)]
struct ImportPlan {
    /// The first occurrence of each uuid, in uuid order: the rows to insert.
    firsts: Vec<usize>,
    /// Per uuid: the first occurrence with a recording that could make a known
    /// unanswered call pending. After the insert, a uuid just inserted without a
    /// recording takes its first later occurrence with one; any other uuid its first
    /// occurrence with one (it becomes `RecordingAdded` if the row was `no_recording`).
    late_if_new: HashMap<String, usize>,
    late_if_known: HashMap<String, usize>,
}

impl ImportPlan {
    fn new(records: &[CallRecord]) -> Self {
        let mut first: HashMap<&str, usize> = HashMap::new();
        let mut late_if_new = HashMap::new();
        let mut late_if_known = HashMap::new();
        for (i, rec) in records.iter().enumerate() {
            let uuid = rec.uuid.as_str();
            let first_index = *first.entry(uuid).or_insert(i);
            if !rec.has_recording() {
                continue;
            }
            late_if_known.entry(uuid.to_owned()).or_insert(i);
            if i != first_index && !records[first_index].has_recording() {
                late_if_new.entry(uuid.to_owned()).or_insert(i);
            }
        }
        let mut firsts: Vec<usize> = first.into_values().collect();
        firsts.sort_by(|a, b| records[*a].uuid.cmp(&records[*b].uuid));
        Self {
            firsts,
            late_if_new,
            late_if_known,
        }
    }

    /// The occurrence whose recording would be added, once the insert says whether the
    /// uuid was new.
    fn late(&self, uuid: &str, new: bool) -> Option<usize> {
        if new {
            self.late_if_new.get(uuid).copied()
        } else {
            self.late_if_known.get(uuid).copied()
        }
    }

    fn outcomes(
        &self,
        records: &[CallRecord],
        inserted: &HashSet<String>,
        added: &HashSet<String>,
    ) -> Vec<ImportOutcome> {
        let firsts: HashSet<usize> = self.firsts.iter().copied().collect();
        records
            .iter()
            .enumerate()
            .map(|(i, rec)| {
                let uuid = rec.uuid.as_str();
                let new = inserted.contains(uuid);
                if new && firsts.contains(&i) {
                    ImportOutcome::New
                } else if added.contains(uuid) && self.late(uuid, new) == Some(i) {
                    ImportOutcome::RecordingAdded
                } else {
                    ImportOutcome::Known
                }
            })
            .collect()
    }
}

impl PgLedger {
    /// One attempt at the import's transaction: the uuids inserted, those whose late
    /// recording was added, and those that took over a row found by sync.
    async fn import_once(
        &self,
        records: &[CallRecord],
        plan: &ImportPlan,
        now: DateTime<Utc>,
    ) -> Result<(HashSet<String>, HashSet<String>, HashSet<String>), LedgerError> {
        let now = at(now);
        let firsts = plan.firsts.iter().map(|&i| &records[i]);
        let mut tx = self.pool.begin().await.ctx("starting an import")?;
        let first_records: Vec<&CallRecord> = firsts.clone().collect();
        let merged = sync::take_over_bill_rows(&mut tx, &first_records, now).await?;
        let inserted: Vec<String> = sqlx::query_scalar(
            "INSERT INTO calls (uuid, company_code, record_file, call_start, billsec, raw_json, state,
                                next_attempt_at, imported_at, updated_at, bill_id, notes, origin)
             SELECT r.uuid, r.company_code, r.record_file, r.call_start, r.billsec, r.raw_json,
                    r.state, $8, $8, $8, r.bill_id, r.notes, 'callback'
             FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[],
                         $6::text[], $7::text[], $9::text[], $10::text[])
                  WITH ORDINALITY AS r (uuid, company_code, record_file, call_start, billsec,
                                        raw_json, state, bill_id, notes, ord)
             ORDER BY r.ord
             ON CONFLICT (uuid) DO NOTHING
             RETURNING uuid",
        )
        .bind(firsts.clone().map(|r| r.uuid.as_str()).collect::<Vec<_>>())
        .bind(firsts.clone().map(|r| r.company_code.as_str()).collect::<Vec<_>>())
        .bind(firsts.clone().map(|r| r.record_file.trim()).collect::<Vec<_>>())
        .bind(firsts.clone().map(|r| r.call_start.map(at)).collect::<Vec<_>>())
        .bind(firsts.clone().map(|r| r.billsec).collect::<Vec<_>>())
        .bind(firsts.clone().map(|r| r.raw_json.as_str()).collect::<Vec<_>>())
        .bind(
            firsts
                .map(|r| {
                    if r.has_recording() {
                        RecordState::Pending.as_str()
                    } else {
                        RecordState::NoRecording.as_str()
                    }
                })
                .collect::<Vec<_>>(),
        )
        .bind(now)
        .bind(first_records.iter().map(|r| r.bill_id.as_deref()).collect::<Vec<_>>())
        .bind(first_records.iter().map(|r| r.notes.as_deref()).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await
        .ctx("importing call records")?;
        let inserted: HashSet<String> = inserted.into_iter().collect();

        let mut late: Vec<&CallRecord> = plan
            .firsts
            .iter()
            .filter_map(|&i| {
                let uuid = records[i].uuid.as_str();
                plan.late(uuid, inserted.contains(uuid))
            })
            .map(|i| &records[i])
            .collect();
        let mut added = HashSet::new();
        if !late.is_empty() {
            late.sort_by(|a, b| a.uuid.cmp(&b.uuid));
            let rows: Vec<String> = sqlx::query_scalar(
                "UPDATE calls AS c
                 SET record_file = r.record_file, raw_json = r.raw_json, state = 'pending',
                     next_attempt_at = $4, updated_at = $4
                 FROM unnest($1::text[], $2::text[], $3::text[])
                      AS r (uuid, record_file, raw_json)
                 WHERE c.uuid = r.uuid AND c.state = 'no_recording'
                 RETURNING c.uuid",
            )
            .bind(late.iter().map(|r| r.uuid.as_str()).collect::<Vec<_>>())
            .bind(
                late.iter()
                    .map(|r| r.record_file.trim())
                    .collect::<Vec<_>>(),
            )
            .bind(late.iter().map(|r| r.raw_json.as_str()).collect::<Vec<_>>())
            .bind(now)
            .fetch_all(&mut *tx)
            .await
            .ctx("adding late recordings")?;
            added.extend(rows);
        }
        let mut tx = super::PgTx(tx);
        refresh_batch(&mut tx, BackendKind::Postgres, with_import(records.len())).await?;
        tx.0.commit().await.ctx("committing an import")?;
        Ok((inserted, added, merged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(uuid: &str, file: &str) -> CallRecord {
        CallRecord::new(
            CallUuid::parse(uuid).unwrap_or_else(|| panic!("test uuid {uuid:?}")),
            "c",
            file,
            "{}",
        )
    }

    fn set(items: &[&str]) -> HashSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    use ImportOutcome::{Known, New, RecordingAdded};

    #[test]
    fn a_batch_reads_as_if_imported_one_by_one() {
        // b: new without a recording, then one arrives (added), then another (known).
        // a: known, twice with a recording (only the first can add it). c: new with one.
        let records = [
            rec("b", ""),
            rec("a", "x.wav"),
            rec("b", "y.wav"),
            rec("c", "z.wav"),
            rec("a", "x2.wav"),
            rec("b", "y2.wav"),
            rec("c", ""),
        ];
        let plan = ImportPlan::new(&records);
        let firsts: Vec<&str> = plan
            .firsts
            .iter()
            .map(|&i| records[i].uuid.as_str())
            .collect();
        assert_eq!(firsts, ["a", "b", "c"]);
        assert_eq!(plan.late("b", true), Some(2));
        assert_eq!(plan.late("a", false), Some(1));
        assert_eq!(plan.late("c", true), None);
        let outcomes = plan.outcomes(&records, &set(&["b", "c"]), &set(&["b", "a"]));
        assert_eq!(
            outcomes,
            [
                New,
                RecordingAdded,
                RecordingAdded,
                New,
                Known,
                Known,
                Known
            ]
        );
        // `a` was known and not unanswered: nothing added.
        let outcomes = plan.outcomes(&records, &set(&["b", "c"]), &set(&["b"]));
        assert_eq!(outcomes[1], Known);
    }

    #[test]
    fn a_new_record_with_its_recording_needs_no_late_one() {
        let records = [rec("a", "x.wav"), rec("a", "x.wav")];
        let plan = ImportPlan::new(&records);
        assert_eq!(plan.late("a", true), None);
        assert_eq!(plan.late("a", false), Some(0));
        assert_eq!(
            plan.outcomes(&records, &set(&["a"]), &set(&[])),
            [New, Known]
        );
        assert_eq!(
            plan.outcomes(&records, &set(&[]), &set(&[])),
            [Known, Known]
        );
    }
}
