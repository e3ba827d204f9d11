//! Checking the manifest chain. From the bucket alone: walk from the newest manifest back
//! to the first, each one's recorded SHA-256 of its predecessor against the predecessor's
//! bytes, and every entry's object present with its size, unless a newer manifest (read
//! first: the walk goes newest first) lists its erasure, or the ledger holds its tombstone
//! (an erasure the next manifest lists); every erased object gone. Then against the ledger: every
//! manifest it knows is in the store with its SHA-256, and the newest are the same.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::format::{LineSplitter, ManifestEntry, ManifestErasure, ManifestHeader, ManifestLine};
use super::problems::ChainProblem;
use crate::ledger::{Ledger, LedgerError};
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Default, Serialize)]
pub struct ChainReport {
    pub manifests_in_store: u64,
    pub manifests_in_ledger: u64,
    /// False when the ledger knows no manifest (checking from the bucket alone).
    pub compared_with_ledger: bool,
    pub entries_checked: u64,
    /// Entries whose object was erased since (listed as erased, not missing).
    pub entries_erased: u64,
    /// Erasure lines read.
    pub erasures_listed: u64,
    pub newest: Option<String>,
    /// Archived records in no manifest yet (the next pass lists them).
    pub unlisted_archived: i64,
    pub notes: Vec<String>,
    pub problems: Vec<ChainProblem>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("listing the manifests: {0}")]
    Store(#[from] StoreError),
}

/// Checks the chain in `store`, and against `ledger` when it knows any manifest.
pub async fn verify_chain(
    store: &Store,
    ledger: &Ledger,
    concurrency: usize,
) -> Result<ChainReport, ChainError> {
    let mut report = ChainReport::default();
    let mut manifests: BTreeMap<i64, String> = store
        .list(store.manifests_prefix())
        .await?
        .into_iter()
        .filter_map(|l| store.manifest_seq(&l.key).map(|seq| (seq, l.key)))
        .collect();
    let known = ledger.manifests().await?;
    elsewhere(store, &known, &mut manifests, &mut report).await?;
    report.manifests_in_store = manifests.len() as u64;
    report.newest = manifests.values().next_back().cloned();
    let mut check = Check {
        store,
        ledger,
        concurrency: concurrency.max(1),
        erased: HashMap::new(),
    };
    let digests = walk(&mut check, &manifests, &mut report).await?;
    compare_with_ledger(ledger, &known, &manifests, &digests, &mut report).await?;
    Ok(report)
}

/// The manifests of the chain that the ledger knows under another prefix (written before
/// `accounts rename` moved the account into a store it shares, where its chain goes on
/// below a prefix of its own): read where they are, and noted.
async fn elsewhere(
    store: &Store,
    known: &[crate::ledger::ManifestRow],
    manifests: &mut BTreeMap<i64, String>,
    report: &mut ChainReport,
) -> Result<(), StoreError> {
    for row in known {
        if manifests.contains_key(&row.seq) || store.manifest_seq(&row.key).is_some() {
            continue;
        }
        if store.size_of(&row.key).await?.is_some() {
            report.notes.push(format!(
                "manifest {} of this chain is outside {} (written before the account was renamed)",
                row.key,
                store.manifests_prefix()
            ));
            manifests.insert(row.seq, row.key.clone());
        }
    }
    Ok(())
}

/// What reading the manifests needs: the store, the ledger (tombstones of erasures not yet
/// listed), and the erasures read so far (key → uuid).
struct Check<'a> {
    store: &'a Store,
    ledger: &'a Ledger,
    concurrency: usize,
    erased: HashMap<String, String>,
}

/// Walks every chain segment from its newest manifest back; returns each manifest's
/// SHA-256 (`None` when it could not be read).
async fn walk(
    check: &mut Check<'_>,
    manifests: &BTreeMap<i64, String>,
    report: &mut ChainReport,
) -> Result<HashMap<String, Option<String>>, LedgerError> {
    let mut walk = Walk {
        manifests,
        digests: HashMap::new(),
        unread: manifests.keys().copied().collect(),
    };
    while let Some(newest) = walk.unread.last().copied() {
        walk.segment(check, newest, report).await?;
    }
    Ok(walk.digests)
}

/// Where the walk is: the manifests in the store (seq → key), what each read one hashed
/// to, and those not read yet.
struct Walk<'a> {
    manifests: &'a BTreeMap<i64, String>,
    digests: HashMap<String, Option<String>>,
    unread: BTreeSet<i64>,
}

/// Where a manifest's link leads the walk.
enum Link {
    /// To the previous manifest, not read yet: (its seq, the SHA-256 the link names).
    Follow(i64, String),
    /// Nowhere further: the first manifest, a manifest already read, or a broken link.
    End,
}

impl Walk<'_> {
    /// Reads the segment of the chain that ends at `newest`, back to its first manifest,
    /// a manifest already read, or a link that leads nowhere.
    async fn segment(
        &mut self,
        check: &mut Check<'_>,
        newest: i64,
        report: &mut ChainReport,
    ) -> Result<(), LedgerError> {
        let mut seq = newest;
        // (the manifest that named this one, the SHA-256 it gave)
        let mut expected: Option<(String, String)> = None;
        loop {
            self.unread.remove(&seq);
            let key = self.manifests[&seq].clone();
            let read = read_manifest(check, &key, report).await?;
            let sha = read.as_ref().map(|(sha, _)| sha.clone());
            self.digests.insert(key.clone(), sha.clone());
            if let (Some((from, want)), Some(found)) = (expected.take(), &sha)
                && &want != found
            {
                report.problems.push(ChainProblem::PreviousChanged {
                    key: from,
                    previous_key: key.clone(),
                    expected_sha256: want,
                    found_sha256: found.clone(),
                });
            }
            let Some((_, Some(header))) = read else {
                return Ok(());
            };
            match self.link(check.store, key.clone(), seq, header, report) {
                Link::Follow(previous, sha256) => {
                    expected = Some((key, sha256));
                    seq = previous;
                }
                Link::End => return Ok(()),
            }
        }
    }

    /// Where manifest `seq`'s `header` leads; each break in its link is reported.
    fn link(
        &self,
        store: &Store,
        key: String,
        seq: i64,
        header: ManifestHeader,
        report: &mut ChainReport,
    ) -> Link {
        let broken = |reason: String| ChainProblem::BrokenLink {
            key: key.clone(),
            reason,
        };
        if header.seq != seq {
            report
                .problems
                .push(broken(format!("its header says seq {}", header.seq)));
        }
        let Some(previous) = header.previous else {
            if seq != 1 {
                report.problems.push(broken(
                    "it names no previous manifest but is not the first (seq 1)".into(),
                ));
            }
            return Link::End;
        };
        if previous.seq != seq - 1 {
            report.problems.push(broken(format!(
                "it names seq {} as its previous, not {}",
                previous.seq,
                seq - 1
            )));
        }
        let held = store
            .manifest_seq(&previous.key)
            .or(Some(previous.seq))
            .filter(|p| self.manifests.get(p) == Some(&previous.key));
        match held {
            None => {
                report.problems.push(ChainProblem::PreviousMissing {
                    key,
                    previous_key: previous.key,
                });
                Link::End
            }
            Some(p) if !self.unread.contains(&p) => {
                if let Some(Some(found)) = self.digests.get(&previous.key)
                    && *found != previous.sha256
                {
                    report.problems.push(ChainProblem::PreviousChanged {
                        key,
                        previous_key: previous.key,
                        expected_sha256: previous.sha256,
                        found_sha256: found.clone(),
                    });
                }
                Link::End
            }
            Some(p) => Link::Follow(p, previous.sha256),
        }
    }
}

/// Streams one manifest: its SHA-256, its header (`None` if malformed), entries checked.
/// `None` when it cannot be read at all.
async fn read_manifest(
    check: &mut Check<'_>,
    key: &str,
    report: &mut ChainReport,
) -> Result<Option<(String, Option<ManifestHeader>)>, LedgerError> {
    let store = check.store;
    let unreadable = |e: StoreError| ChainProblem::Unreadable {
        key: key.to_owned(),
        error: e.to_string(),
    };
    let mut body = match store.read(key).await {
        Ok(Some(body)) => body,
        Ok(None) => {
            report.problems.push(ChainProblem::Unreadable {
                key: key.to_owned(),
                error: "listed but gone when read".into(),
            });
            return Ok(None);
        }
        Err(e) => {
            report.problems.push(unreadable(e));
            return Ok(None);
        }
    };
    let mut scan = Scan::default();
    let mut finished = false;
    while !finished {
        let lines = match body.try_next().await {
            Ok(Some(chunk)) => {
                scan.hasher.update(&chunk);
                scan.splitter.push(&chunk)
            }
            Ok(None) => {
                finished = true;
                Ok(std::mem::take(&mut scan.splitter)
                    .finish()
                    .into_iter()
                    .collect())
            }
            Err(e) => {
                report.problems.push(unreadable(e));
                return Ok(None);
            }
        };
        let lines = match lines {
            Ok(lines) => lines,
            Err(reason) => {
                scan.malformed.get_or_insert(reason);
                continue;
            }
        };
        let (batch, erasures) = scan.lines(lines);
        check_erasures(check, key, erasures, report).await;
        check_entries(check, key, batch, report).await?;
    }
    let (sha256, header) = scan.finish(key, report);
    Ok(Some((sha256, header)))
}

/// What reading one manifest has found so far: the hash of its bytes, its header (`Some`
/// once line 1 is read, `Some(None)` if that is no header), the entry lines read, and the
/// first reason it is malformed.
#[derive(Default)]
struct Scan {
    hasher: Sha256,
    splitter: LineSplitter,
    header: Option<Option<ManifestHeader>>,
    malformed: Option<String>,
    entries: u64,
    /// The account the header names: a line naming another does not belong in this
    /// manifest. (A chain may change account names: `accounts rename` keeps the chain.)
    account: Option<String>,
}

impl Scan {
    /// The entries and erasures `lines` list; line 1 is the header. None are read once a
    /// line is malformed.
    fn lines(&mut self, lines: Vec<Vec<u8>>) -> (Vec<ManifestEntry>, Vec<ManifestErasure>) {
        let mut batch = Vec::new();
        let mut erasures = Vec::new();
        for line in lines {
            if self.header.is_none() {
                let parsed = serde_json::from_slice::<ManifestHeader>(&line);
                if let Err(e) = &parsed {
                    self.malformed
                        .get_or_insert(format!("line 1 is not a manifest header: {e}"));
                }
                if let Ok(named) = &parsed {
                    self.account.clone_from(&named.account);
                }
                self.header = Some(parsed.ok());
            } else if self.malformed.is_none() {
                let line_no = self.entries + 2;
                match serde_json::from_slice::<ManifestLine>(&line) {
                    Ok(ManifestLine::Entry(entry)) => {
                        self.another_account(entry.account.as_deref(), line_no);
                        batch.push(entry);
                    }
                    Ok(ManifestLine::Erased { erased }) => {
                        self.another_account(erased.account.as_deref(), line_no);
                        erasures.push(erased);
                    }
                    Err(e) => {
                        self.malformed =
                            Some(format!("line {} is not an entry: {e}", self.entries + 2));
                    }
                }
                self.entries += 1;
            }
        }
        (batch, erasures)
    }

    /// A line that names an account other than its manifest's header makes the manifest
    /// malformed (lines written before accounts name none).
    fn another_account(&mut self, named: Option<&str>, line: u64) {
        if let (Some(named), Some(header)) = (named, self.account.as_deref())
            && named != header
        {
            self.malformed.get_or_insert(format!(
                "line {line} names account {named:?}, its header {header:?}"
            ));
        }
    }

    /// The manifest's SHA-256 and header, once read to the end; a malformed manifest
    /// (or one whose header counts other entries) is reported.
    fn finish(self, key: &str, report: &mut ChainReport) -> (String, Option<ManifestHeader>) {
        let entries = self.entries;
        let mut malformed = self.malformed;
        let header = self.header.flatten();
        if let Some(h) = header.as_ref().filter(|h| h.entries != entries) {
            malformed.get_or_insert(format!(
                "the header counts {} entries, the manifest has {entries}",
                h.entries
            ));
        }
        if let Some(reason) = malformed {
            report.problems.push(ChainProblem::Malformed {
                key: key.to_owned(),
                reason,
            });
        }
        (hex::encode(self.hasher.finalize()), header)
    }
}

/// Every erased object must be gone; each erasure is remembered, so that the older
/// manifests listing the object (read later) report it as erased, not missing.
async fn check_erasures(
    check: &mut Check<'_>,
    manifest: &str,
    erasures: Vec<ManifestErasure>,
    report: &mut ChainReport,
) {
    report.erasures_listed += erasures.len() as u64;
    let store = check.store;
    let found: Vec<_> = futures::stream::iter(erasures)
        .map(|e| async move {
            let size = store.size_of(&e.key).await;
            (e, size)
        })
        .buffer_unordered(check.concurrency)
        .collect()
        .await;
    for (erased, size) in found {
        match size {
            Ok(None) => {}
            Ok(Some(_)) => report.problems.push(ChainProblem::ErasedStillPresent {
                manifest: manifest.to_owned(),
                uuid: erased.uuid.clone(),
                key: erased.key.clone(),
            }),
            Err(e) => report.problems.push(ChainProblem::EntryUnreadable {
                manifest: manifest.to_owned(),
                uuid: erased.uuid.clone(),
                key: erased.key.clone(),
                error: e.to_string(),
            }),
        }
        check.erased.insert(erased.key, erased.uuid);
    }
}

/// Every entry's object must exist with the size the manifest gives, unless erased since.
async fn check_entries(
    check: &Check<'_>,
    manifest: &str,
    batch: Vec<ManifestEntry>,
    report: &mut ChainReport,
) -> Result<(), LedgerError> {
    report.entries_checked += batch.len() as u64;
    let store = check.store;
    let found: Vec<_> = futures::stream::iter(batch)
        .map(|entry| async move {
            let size = store.size_of(&entry.key).await;
            (entry, size)
        })
        .buffer_unordered(check.concurrency)
        .collect()
        .await;
    for (entry, size) in found {
        let problem = match size {
            Ok(Some(n)) if n == entry.size => continue,
            Ok(Some(n)) => ChainProblem::EntrySizeDiffers {
                manifest: manifest.to_owned(),
                uuid: entry.uuid,
                key: entry.key,
                expected_size: entry.size,
                found_size: n,
            },
            Ok(None) if check.erased.get(&entry.key) == Some(&entry.uuid) => {
                report.entries_erased += 1;
                continue;
            }
            Ok(None) if erased_in_ledger(check.ledger, &entry).await? => {
                report.entries_erased += 1;
                continue;
            }
            Ok(None) => ChainProblem::EntryMissing {
                manifest: manifest.to_owned(),
                uuid: entry.uuid,
                key: entry.key,
            },
            Err(e) => ChainProblem::EntryUnreadable {
                manifest: manifest.to_owned(),
                uuid: entry.uuid,
                key: entry.key,
                error: e.to_string(),
            },
        };
        report.problems.push(problem);
    }
    Ok(())
}

/// Whether the ledger holds a tombstone for the entry's object (erased, not yet listed).
async fn erased_in_ledger(ledger: &Ledger, entry: &ManifestEntry) -> Result<bool, LedgerError> {
    let Some(uuid) = crate::domain::CallUuid::parse(&entry.uuid) else {
        return Ok(false);
    };
    Ok(ledger
        .tombstone(&uuid)
        .await?
        .is_some_and(|t| t.key == entry.key))
}

async fn compare_with_ledger(
    ledger: &Ledger,
    known: &[crate::ledger::ManifestRow],
    manifests: &BTreeMap<i64, String>,
    digests: &HashMap<String, Option<String>>,
    report: &mut ChainReport,
) -> Result<(), LedgerError> {
    report.unlisted_archived = ledger.unlisted_archived().await?;
    report.manifests_in_ledger = known.len() as u64;
    if known.is_empty() {
        report
            .notes
            .push("the ledger knows no manifest: checked from the bucket alone".into());
        return Ok(());
    }
    report.compared_with_ledger = true;
    let in_store: BTreeSet<&String> = manifests.values().collect();
    let mut writing = None;
    for row in known {
        if !row.written {
            report.notes.push(format!(
                "manifest {} is being written (or its run died; the next pass finishes it)",
                row.key
            ));
            writing = Some(&row.key);
            continue;
        }
        match (digests.get(&row.key), &row.sha256) {
            (None, _) => report.problems.push(ChainProblem::LedgerManifestMissing {
                seq: row.seq,
                key: row.key.clone(),
            }),
            (Some(Some(found)), Some(want)) if found != want => {
                report.problems.push(ChainProblem::LedgerManifestChanged {
                    seq: row.seq,
                    key: row.key.clone(),
                    expected_sha256: want.clone(),
                    found_sha256: found.clone(),
                });
            }
            _ => {}
        }
    }
    let known_keys: BTreeSet<&String> = known.iter().map(|r| &r.key).collect();
    for key in in_store.difference(&known_keys) {
        report.problems.push(ChainProblem::UnknownToLedger {
            key: (*key).clone(),
        });
    }
    let newest_written = known
        .iter()
        .rev()
        .find(|r| r.written)
        .map(|r| r.key.clone());
    let store_newest = report.newest.clone();
    let consistent =
        store_newest == newest_written || (writing.is_some() && store_newest.as_ref() == writing);
    if !consistent {
        report.problems.push(ChainProblem::NewestDiffers {
            ledger: newest_written,
            store: store_newest,
        });
    }
    Ok(())
}
