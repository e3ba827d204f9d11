//! Reading archived objects back: each one streamed from the store and hashed, its SHA-256
//! and size compared with the ledger's. All archived records of a slice, or a random
//! sample of them; a few at a time; every result recorded on the record. With a retention
//! policy, each recording's and sidecar's Object Lock is read too and compared with what the
//! policy asks (missing, another mode, shorter). Erased calls are counted as erased: their
//! objects are meant to be gone.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::problems::ObjectProblem;
use crate::domain::CallUuid;
use crate::ledger::Ledger;
use crate::ledger::{ArchivedEntry, LedgerError, Slice, VerifyResult};
use crate::store::Store;

/// Records read from the ledger at a time.
const PAGE: i64 = 256;
/// Problems kept in the report (all are printed as found and recorded in the ledger).
const MAX_KEPT: usize = 10_000;

/// Which archived records to read back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    All,
    /// This many, picked at random.
    Count(u64),
    /// This share (0–100], picked at random, at least one.
    Percent(f64),
}

impl FromStr for Sample {
    type Err = String;

    /// `N` records or `P%` of them.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("sample {s:?}: not a percentage"))?;
            return if p > 0.0 && p <= 100.0 {
                Ok(Self::Percent(p))
            } else {
                Err(format!("sample {s:?}: a percentage must be in (0, 100]"))
            };
        }
        match s.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Self::Count(n)),
            _ => Err(format!(
                "sample {s:?}: expected a number of records (N) or a percentage (P%)"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub slice: Slice,
    pub sample: Sample,
    pub concurrency: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ObjectsReport {
    pub checked: u64,
    pub ok: u64,
    pub missing: u64,
    pub changed: u64,
    pub unreadable: u64,
    /// Objects whose Object Lock falls short of the retention policy (with one).
    pub lock_short: u64,
    /// Calls erased (their objects gone on purpose; tombstones in the ledger).
    pub erased: u64,
    pub bytes_read: u64,
    pub problems: Vec<ObjectProblem>,
    /// More problems were found than the report keeps.
    pub problems_truncated: bool,
}

impl ObjectsReport {
    pub fn problem_count(&self) -> u64 {
        self.missing + self.changed + self.unreadable + self.lock_short
    }

    fn add_lock(&mut self, problem: ObjectProblem) {
        self.lock_short += 1;
        if self.problems.len() < MAX_KEPT {
            self.problems.push(problem);
        } else {
            self.problems_truncated = true;
        }
    }

    fn add(&mut self, result: &Result<u64, ObjectProblem>) {
        self.checked += 1;
        match result {
            Ok(bytes) => {
                self.ok += 1;
                self.bytes_read += bytes;
            }
            Err(problem) => {
                match problem {
                    ObjectProblem::Missing { .. } => self.missing += 1,
                    ObjectProblem::Changed { .. } => self.changed += 1,
                    ObjectProblem::Unreadable { .. } => self.unreadable += 1,
                    ObjectProblem::LockShort { .. } => self.lock_short += 1,
                }
                if self.problems.len() < MAX_KEPT {
                    self.problems.push(problem.clone());
                } else {
                    self.problems_truncated = true;
                }
            }
        }
    }
}

/// Reads back the chosen archived records' objects; `on_problem` sees each problem as it
/// is found. Only the ledger failing is an error: the store's failures are problems.
pub async fn verify_objects(
    ledger: &Ledger,
    store: &Store,
    opts: &VerifyOptions,
    mut on_problem: impl FnMut(&ObjectProblem),
) -> Result<ObjectsReport, LedgerError> {
    let mut report = ObjectsReport {
        erased: u64::try_from(ledger.erasure_counts().await?.0).unwrap_or(0),
        ..Default::default()
    };
    let mut check = async |batch: Vec<ArchivedEntry>, report: &mut ObjectsReport| {
        for problem in check_locks(ledger, store, &batch, opts.concurrency).await? {
            on_problem(&problem);
            report.add_lock(problem);
        }
        let results: Vec<(CallUuid, Result<u64, ObjectProblem>)> = futures::stream::iter(batch)
            .map(|entry| async move { (entry.uuid.clone(), check_one(store, &entry).await) })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
        let mut labels = Vec::with_capacity(results.len());
        for (uuid, result) in &results {
            if let Err(problem) = result {
                on_problem(problem);
            }
            report.add(result);
            labels.push((
                uuid.clone(),
                result
                    .as_ref()
                    .map_or_else(ObjectProblem::result, |_| VerifyResult::Ok),
            ));
        }
        ledger.record_verified(&labels, Utc::now()).await
    };
    match opts.sample {
        Sample::All => {
            let mut after: Option<CallUuid> = None;
            loop {
                let page = ledger
                    .archived_page(&opts.slice, after.as_ref(), PAGE)
                    .await?;
                let Some(last) = page.last() else { break };
                after = Some(last.uuid.clone());
                check(page, &mut report).await?;
            }
        }
        Sample::Count(_) | Sample::Percent(_) => {
            let mut sample = reservoir(ledger, &opts.slice, opts.sample).await?;
            sample.sort_by(|a, b| a.uuid.cmp(&b.uuid));
            while !sample.is_empty() {
                let rest = sample.split_off(sample.len().min(PAGE as usize));
                check(std::mem::replace(&mut sample, rest), &mut report).await?;
            }
        }
    }
    Ok(report)
}

/// A uniform random sample of the slice's archived records (reservoir sampling over pages).
async fn reservoir(
    ledger: &Ledger,
    slice: &Slice,
    sample: Sample,
) -> Result<Vec<ArchivedEntry>, LedgerError> {
    let wanted = match sample {
        Sample::Count(n) => usize::try_from(n).unwrap_or(usize::MAX),
        Sample::Percent(p) => {
            let total = ledger.archived_count(slice).await?;
            ((total as f64 * p / 100.0).ceil() as usize).max(1)
        }
        Sample::All => usize::MAX,
    };
    let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
    let mut kept: Vec<ArchivedEntry> = Vec::new();
    let mut seen = 0usize;
    let mut after: Option<CallUuid> = None;
    loop {
        let page = ledger.archived_page(slice, after.as_ref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.uuid.clone());
        for entry in page {
            if kept.len() < wanted {
                kept.push(entry);
            } else {
                let j = rng.random_range(0..=seen);
                if j < wanted {
                    kept[j] = entry;
                }
            }
            seen += 1;
        }
    }
    Ok(kept)
}

/// The Object Lock of each entry's recording and sidecar against the store's retention
/// policy (none: nothing to check). A lock that would already have lapsed is not asked for.
async fn check_locks(
    ledger: &Ledger,
    store: &Store,
    batch: &[ArchivedEntry],
    concurrency: usize,
) -> Result<Vec<ObjectProblem>, LedgerError> {
    let Some(policy) = store.retention() else {
        return Ok(Vec::new());
    };
    let uuids: Vec<CallUuid> = batch.iter().map(|e| e.uuid.clone()).collect();
    let starts: HashMap<CallUuid, Option<DateTime<Utc>>> = ledger
        .call_facts(&uuids)
        .await?
        .into_iter()
        .map(|c| (c.uuid, c.call_start))
        .collect();
    let now = Utc::now();
    let mut wanted = Vec::new();
    for entry in batch {
        // As the archive locked it: from the call's start, else from its archive time.
        let start = starts
            .get(&entry.uuid)
            .copied()
            .flatten()
            .unwrap_or(entry.archived_at);
        if policy
            .retain_for
            .until(start)
            .is_none_or(|until| until <= now)
        {
            continue;
        }
        wanted.push((entry, start, entry.key.clone()));
        if store.sidecars() {
            wanted.push((entry, start, store.sidecar_key(&entry.key)));
        }
    }
    let found: Vec<Option<ObjectProblem>> = futures::stream::iter(wanted)
        .map(|(entry, start, key)| async move {
            let detail = match store.object_retention(&key).await {
                Ok(found) => policy.shortfall(start, found.as_ref())?,
                Err(e) => format!("its retention could not be read: {e}"),
            };
            Some(ObjectProblem::LockShort {
                uuid: entry.uuid.to_string(),
                key,
                detail,
            })
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    Ok(found.into_iter().flatten().collect())
}

/// Reads one object back: `Ok(bytes read)` when it is what the ledger says.
async fn check_one(store: &Store, entry: &ArchivedEntry) -> Result<u64, ObjectProblem> {
    match store.digest(&entry.key).await {
        Ok(Some(found)) if found.sha256 == entry.sha256 && found.size == entry.size => {
            Ok(found.size)
        }
        Ok(Some(found)) => Err(ObjectProblem::Changed {
            uuid: entry.uuid.to_string(),
            key: entry.key.clone(),
            expected_sha256: entry.sha256.clone(),
            expected_size: entry.size,
            found_sha256: found.sha256,
            found_size: found.size,
        }),
        Ok(None) => Err(ObjectProblem::Missing {
            uuid: entry.uuid.to_string(),
            key: entry.key.clone(),
            expected_sha256: entry.sha256.clone(),
            expected_size: entry.size,
        }),
        Err(e) => Err(ObjectProblem::Unreadable {
            uuid: entry.uuid.to_string(),
            key: entry.key.clone(),
            error: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse_as_counts_or_percentages() {
        assert_eq!("25".parse::<Sample>(), Ok(Sample::Count(25)));
        assert_eq!("12.5%".parse::<Sample>(), Ok(Sample::Percent(12.5)));
        for bad in ["0", "-3", "0%", "101%", "x", "%"] {
            assert!(bad.parse::<Sample>().is_err(), "{bad}");
        }
    }
}
