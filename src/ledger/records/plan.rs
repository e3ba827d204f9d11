//! An import's plan, made before it runs: a batch may name a uuid several times, and the
//! statements that write it see each uuid once.

use std::collections::{HashMap, HashSet};

use super::ImportOutcome;
use crate::domain::CallRecord;

/// Which occurrence of each uuid in a batch does what, so that one insert and one update
/// give the outcomes of importing the records one by one.
#[derive(Debug)]
pub(super) struct ImportPlan {
    /// The first occurrence of each uuid, in uuid order: the rows to insert.
    pub firsts: Vec<usize>,
    /// Per uuid: the first occurrence with a recording that could make a known
    /// unanswered call pending. After the insert, a uuid just inserted without a
    /// recording takes its first later occurrence with one; any other uuid its first
    /// occurrence with one (it becomes `RecordingAdded` if the row was `no_recording`).
    late_if_new: HashMap<String, usize>,
    late_if_known: HashMap<String, usize>,
}

impl ImportPlan {
    pub fn new(records: &[CallRecord]) -> Self {
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

    /// The records whose recording may be added after the insert, which gave the uuids
    /// `inserted` (one per uuid at most).
    pub fn late_records<'r>(
        &'r self,
        records: &'r [CallRecord],
        inserted: &'r HashSet<String>,
    ) -> impl Iterator<Item = &'r CallRecord> + 'r {
        self.firsts
            .iter()
            .filter_map(|&i| {
                let uuid = records[i].uuid.as_str();
                self.late(uuid, inserted.contains(uuid))
            })
            .map(|i| &records[i])
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

    pub fn outcomes(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CallUuid;

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
