//! `callvault ledger rebuild --from-store`: the ledger rebuilt from the bucket alone, for
//! when the ledger is lost. The bucket is self-describing (see `store/sidecar.rs`): each
//! recording has a JSON sidecar with the provider's record and the archive facts, and the
//! manifest chain lists every archived object with its SHA-256. The rebuild reads the
//! manifests in chain order (their entries, each with its sidecar, become archived calls
//! listed by that manifest; the manifests become the ledger's chain, so `verify
//! --manifests` passes and the next run's manifest links to the last one), then lists the
//! whole store page by page to recover the recordings archived after the last manifest
//! (from their sidecars) and to find what does not add up: recordings without a sidecar,
//! sidecars without a recording, broken links. Memory stays bounded by a page of entries
//! or listed objects, whatever the bucket holds.

mod report;
mod rows;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use report::{ChainHead, MAX_LISTED, RebuildProblem, RebuildReport};

use crate::audit::{LineSplitter, ManifestEntry, ManifestErasure, ManifestHeader, ManifestLine};
use crate::domain::{CallUuid, RecordState, RunId};
use crate::ledger::{Ledger, LedgerError, Table, TableRow};
use crate::store::{Listed, SIDECAR_SUFFIX, Store, StoreError, StoredSidecar};
use crate::timefmt::from_ledger;
use rows::Recovered;

/// Manifest entries (and listed objects) handled per batch: one batch of sidecars read at
/// once, one ledger transaction per table.
const PAGE: usize = 500;

/// How to rebuild.
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// Add to a ledger that already holds calls: calls and manifests it knows are left as
    /// they are, the rest is added.
    pub merge: bool,
    /// Sidecars (and object heads) read at once.
    pub concurrency: usize,
    /// Where other accounts' manifest chains are, in a store this account shares with
    /// them: not listed as this account's objects.
    pub foreign_prefixes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// Rebuilding into a ledger that holds calls would mix two histories.
    #[error(
        "the ledger already holds {rows} row(s) in {table}: rebuild into a new, empty ledger, or pass --merge to add only what it lacks"
    )]
    NotEmpty { table: &'static str, rows: i64 },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The store failed while being read: nothing is wrong with the bucket's contents, run
    /// the rebuild again (with `--merge`, it continues where it stopped).
    #[error("reading the store: {0}")]
    Store(#[from] StoreError),
}

/// Rebuilds `ledger` from what `store` holds; see the module's documentation.
pub async fn rebuild_from_store(
    store: &Store,
    ledger: &Ledger,
    options: &RebuildOptions,
) -> Result<RebuildReport, RebuildError> {
    let started = Utc::now();
    if !options.merge {
        for table in [
            Table::Calls,
            Table::Manifests,
            Table::Attempts,
            Table::Tombstones,
        ] {
            let rows = ledger.count_account_rows(table).await?;
            if rows > 0 {
                return Err(RebuildError::NotEmpty {
                    table: table.name(),
                    rows,
                });
            }
        }
    }
    let mut rebuild = Rebuild {
        store,
        ledger,
        concurrency: options.concurrency.max(1),
        merge: options.merge,
        foreign: options
            .foreign_prefixes
            .iter()
            .map(|p| format!("{}/", p.trim_end_matches('/')))
            .collect(),
        report: RebuildReport {
            store: store.description().to_owned(),
            ..RebuildReport::default()
        },
        runs: existing_keys(ledger, Table::Runs).await?,
        next_attempt: last_int_key(ledger, Table::Attempts).await? + 1,
        known_manifests: ledger
            .manifests()
            .await?
            .into_iter()
            .map(|m| (m.seq, m.sha256))
            .collect(),
        now: started,
    };
    rebuild.manifests().await?;
    rebuild.listing().await?;
    let mut report = rebuild.report;
    let id = RunId::generate();
    let summary = serde_json::json!({
        "rebuild": {
            "consistent": report.consistent(),
            "calls": report.calls(),
            "calls_from_manifests": report.calls_from_manifests,
            "calls_not_in_a_manifest": report.calls_not_in_a_manifest,
            "calls_already_known": report.calls_already_known,
            "erased": report.erased,
            "entries_erased": report.entries_erased,
            "manifests": report.manifests,
            "objects_listed": report.objects_listed,
            "head": report.head,
            "problems": report.problem_counts,
        }
    });
    ledger
        .import_rows(
            Table::Runs,
            &[rows::rebuild_run_row(
                id.as_str(),
                started,
                Utc::now(),
                &report.store,
                &summary,
            )],
        )
        .await?;
    report.problems.sort_by_key(|p| p.kind());
    Ok(report)
}

/// Every key of `table` (the run ids a ledger already has; empty on a fresh ledger).
async fn existing_keys(ledger: &Ledger, table: Table) -> Result<BTreeSet<String>, LedgerError> {
    let mut keys = BTreeSet::new();
    let mut after: Option<TableRow> = None;
    loop {
        let page = ledger.export_rows(table, after.as_ref(), 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.clone());
        keys.extend(page.iter().filter_map(|r| {
            r.get(table.key())
                .and_then(Value::as_str)
                .map(str::to_owned)
        }));
    }
    Ok(keys)
}

/// The greatest integer key of `table` (0 when empty).
async fn last_int_key(ledger: &Ledger, table: Table) -> Result<i64, LedgerError> {
    let mut last_key = 0;
    let mut after: Option<TableRow> = None;
    loop {
        let page = ledger.export_rows(table, after.as_ref(), 1000).await?;
        let Some(last) = page.last() else { break };
        last_key = last
            .get(table.key())
            .and_then(Value::as_i64)
            .unwrap_or(last_key);
        after = Some(last.clone());
    }
    Ok(last_key)
}

struct Rebuild<'a> {
    store: &'a Store,
    ledger: &'a Ledger,
    concurrency: usize,
    merge: bool,
    /// Other accounts' manifest prefixes (with their `/`), skipped by the listing.
    foreign: Vec<String>,
    report: RebuildReport,
    /// Run ids in the ledger (there before, or added): few, one per pass.
    runs: BTreeSet<String>,
    next_attempt: i64,
    /// (`--merge`) Manifests the ledger already knows, with their SHA-256.
    known_manifests: BTreeMap<i64, Option<String>>,
    now: DateTime<Utc>,
}

/// What one listed object turned out to be, after reading what it needs from the store.
enum Listing {
    /// A recording whose sidecar is there (its call comes from the sidecar).
    Paired,
    ObjectWithoutSidecar(String),
    Sidecar {
        sidecar: String,
        recording: String,
        object_size: Option<u64>,
        read: Result<Box<StoredSidecar>, String>,
    },
    /// Not a recording or a sidecar (metadata files of stores without sidecars).
    Other,
}

impl Listing {
    /// What the listed `item` is, with what it needs read from the store: a sidecar is
    /// read, and the object beside it (`sizes` holds the page's sizes, others are asked
    /// for); a recording's sidecar is looked for.
    async fn of(
        store: &Store,
        sizes: &HashMap<String, u64>,
        item: Listed,
    ) -> Result<Self, StoreError> {
        if item.key.ends_with(".metadata.json") {
            return Ok(Self::Other);
        }
        if let Some(recording) = item.key.strip_suffix(SIDECAR_SUFFIX) {
            let object_size = match sizes.get(recording) {
                Some(size) => Some(*size),
                None => store.size_of(recording).await?,
            };
            let read = store
                .read_sidecar(&item.key)
                .await?
                .unwrap_or_else(|| Err("listed but gone when read".into()))
                .map(Box::new);
            return Ok(Self::Sidecar {
                sidecar: item.key.clone(),
                recording: recording.to_owned(),
                object_size,
                read,
            });
        }
        let sidecar = store.sidecar_key(&item.key);
        let paired = sizes.contains_key(&sidecar) || store.size_of(&sidecar).await?.is_some();
        Ok(if paired {
            Self::Paired
        } else {
            Self::ObjectWithoutSidecar(item.key)
        })
    }
}

impl Rebuild<'_> {
    /// Reads every manifest in chain order into the ledger, with the calls it lists.
    async fn manifests(&mut self) -> Result<(), RebuildError> {
        let listed: Vec<(i64, Listed)> = self
            .store
            .list(self.store.manifests_prefix())
            .await?
            .into_iter()
            .filter_map(|l| self.store.manifest_seq(&l.key).map(|seq| (seq, l)))
            .collect();
        // Erasures first: an erased call's entry, in an older manifest, then finds it erased
        // (its recording and sidecar are gone on purpose, not missing).
        for (seq, listed) in &listed {
            self.manifest(*seq, &listed.key, None, Pass::Erasures)
                .await?;
        }
        let mut previous: Option<ChainHead> = None;
        for (seq, listed) in listed {
            previous = self
                .manifest(seq, &listed.key, previous, Pass::Entries)
                .await?;
        }
        self.report.head = previous;
        Ok(())
    }

    /// Reads manifest `seq` at `key`, whose predecessor in the bucket is `previous`: its
    /// erasures (`Pass::Erasures`), or its entries, row and link (`Pass::Entries`); returns
    /// what the next one must link to.
    async fn manifest(
        &mut self,
        seq: i64,
        key: &str,
        previous: Option<ChainHead>,
        pass: Pass,
    ) -> Result<Option<ChainHead>, RebuildError> {
        let unreadable = |error: String| RebuildProblem::ManifestUnreadable {
            key: key.to_owned(),
            error,
        };
        let Some(body) = self.store.read(key).await? else {
            if pass == Pass::Entries {
                self.report
                    .problem(unreadable("listed but gone when read".into()));
            }
            return Ok(None);
        };
        let scan = self.scan(body, seq, key, pass).await?;
        if pass == Pass::Erasures {
            return Ok(None);
        }
        let sha256 = hex::encode(scan.hasher.finalize());
        let was_broken = scan.broken.is_some();
        if let Some(why) = scan.broken {
            self.report.problem(unreadable(why));
        }
        let Some(mut header) = scan.header else {
            if !was_broken {
                self.report.problem(unreadable("no header line".into()));
            }
            return Ok(None);
        };
        self.check_link(key, seq, &header, previous.as_ref(), scan.entries);
        header.seq = seq;
        if from_ledger(&header.created_at).is_none() {
            header.created_at = crate::timefmt::to_ledger(self.now);
        }
        self.report.manifests += 1;
        self.keep_manifest(key, &header, &sha256, scan.size).await?;
        Ok(Some(ChainHead {
            seq,
            key: key.to_owned(),
            sha256,
        }))
    }

    /// Streams manifest `seq`'s `body`, recovering a page of its entries or erasures (as
    /// `pass` says) at a time; returns what the whole reading found.
    async fn scan(
        &mut self,
        mut body: BoxStream<'static, Result<bytes::Bytes, StoreError>>,
        seq: i64,
        key: &str,
        pass: Pass,
    ) -> Result<ManifestScan, RebuildError> {
        let mut scan = ManifestScan::default();
        let mut page: Vec<ManifestEntry> = Vec::new();
        let mut erased: Vec<ManifestErasure> = Vec::new();
        let mut finished = false;
        while !finished {
            let lines = match body.try_next().await? {
                Some(chunk) => scan.chunk(&chunk),
                None => {
                    finished = true;
                    scan.finish()
                }
            };
            for line in lines {
                match scan.line(&line) {
                    Some(ManifestLine::Entry(entry)) if pass == Pass::Entries => {
                        page.push(entry);
                        if page.len() >= PAGE {
                            self.entries(&mut page, seq, key).await?;
                        }
                    }
                    Some(ManifestLine::Erased { erased: erasure }) if pass == Pass::Erasures => {
                        erased.push(erasure);
                        if erased.len() >= PAGE {
                            self.erasures(&mut erased, seq, key).await?;
                        }
                    }
                    _ => {}
                }
            }
        }
        match pass {
            Pass::Erasures => self.erasures(&mut erased, seq, key).await?,
            Pass::Entries => self.entries(&mut page, seq, key).await?,
        }
        Ok(scan)
    }

    /// Adds manifest `key`'s row to the ledger, unless (`--merge`) the ledger knows it
    /// already: then its SHA-256 must be the bucket's.
    async fn keep_manifest(
        &mut self,
        key: &str,
        header: &ManifestHeader,
        sha256: &str,
        size: u64,
    ) -> Result<(), RebuildError> {
        let seq = header.seq;
        match self.known_manifests.get(&seq) {
            Some(known) if known.as_deref() == Some(sha256) => {}
            Some(known) => self.report.problem(RebuildProblem::ManifestDiffers {
                key: key.to_owned(),
                reason: format!(
                    "the ledger has SHA-256 {}, the bucket's is {sha256}",
                    known.as_deref().unwrap_or("(none: not written)")
                ),
            }),
            None => {
                self.ledger
                    .import_rows(
                        Table::Manifests,
                        &[rows::manifest_row(key, header, sha256, size)],
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Whether manifest `seq` names `previous` as its predecessor, as the chain requires.
    fn check_link(
        &mut self,
        key: &str,
        seq: i64,
        header: &ManifestHeader,
        previous: Option<&ChainHead>,
        entries: u64,
    ) {
        let mut breaks = Vec::new();
        if header.seq != seq {
            breaks.push(format!("its header says seq {}", header.seq));
        }
        if header.entries != entries {
            breaks.push(format!(
                "its header counts {} entries, it holds {entries}",
                header.entries
            ));
        }
        match (&header.previous, previous) {
            (None, _) if seq != 1 => {
                breaks.push("it names no previous manifest but is not the first (seq 1)".into());
            }
            (None, _) => {}
            (Some(named), None) => breaks.push(format!(
                "it names {} as its previous, which is not in the bucket (or could not be read)",
                named.key
            )),
            (Some(named), Some(found)) => {
                if named.seq != found.seq || named.key != found.key {
                    breaks.push(format!(
                        "it names {} (seq {}) as its previous, but the manifest before it is {}",
                        named.key, named.seq, found.key
                    ));
                } else if named.sha256 != found.sha256 {
                    breaks.push(format!(
                        "it names SHA-256 {} for {}, whose bytes hash to {}",
                        named.sha256, found.key, found.sha256
                    ));
                }
            }
        }
        for reason in breaks {
            self.report.problem(RebuildProblem::ChainBreak {
                key: key.to_owned(),
                reason,
            });
        }
    }

    /// Recovers the calls a page of manifest `seq`'s entries lists, from their sidecars.
    async fn entries(
        &mut self,
        page: &mut Vec<ManifestEntry>,
        seq: i64,
        manifest: &str,
    ) -> Result<(), RebuildError> {
        if page.is_empty() {
            return Ok(());
        }
        let unknown = self.unknown_entries(page, manifest).await?;
        let store = self.store;
        let read: Vec<(ManifestEntry, Option<Result<StoredSidecar, String>>)> =
            futures::stream::iter(unknown)
                .map(|entry| async move {
                    let found = store.read_sidecar(&store.sidecar_key(&entry.key)).await?;
                    Ok::<_, StoreError>((entry, found))
                })
                .buffered(self.concurrency)
                .try_collect()
                .await?;
        let mut batch = Batch::default();
        for (entry, found) in read {
            let Some(call) = self.entry_call(entry, found, seq, manifest) else {
                continue;
            };
            if self.add(call, &mut batch).await? {
                self.report.calls_from_manifests += 1;
            }
        }
        self.write(batch).await
    }

    /// The entries of `page` whose call the ledger does not hold; the others are counted
    /// (erased, known before a merge) or reported (unreadable, duplicate).
    async fn unknown_entries(
        &mut self,
        page: &mut Vec<ManifestEntry>,
        manifest: &str,
    ) -> Result<Vec<ManifestEntry>, RebuildError> {
        let mut unknown = Vec::with_capacity(page.len());
        for entry in page.drain(..) {
            self.report.manifest_entries += 1;
            let Some(uuid) = CallUuid::parse(&entry.uuid) else {
                self.report.problem(RebuildProblem::ManifestUnreadable {
                    key: manifest.to_owned(),
                    error: format!("uuid {:?} is not a call's id", entry.uuid),
                });
                continue;
            };
            match self.ledger.get(&uuid).await? {
                None => unknown.push(entry),
                Some(row) if row.state == RecordState::Erased => {
                    self.report.entries_erased += 1;
                }
                Some(_) if self.merge => self.report.calls_already_known += 1,
                Some(_) => self.report.problem(RebuildProblem::Duplicate {
                    uuid: entry.uuid,
                    key: entry.key,
                }),
            }
        }
        Ok(unknown)
    }

    /// The call manifest `seq` lists as `entry`: from its sidecar (`found`) when it can be
    /// read, else from the entry alone; `None` when neither can.
    fn entry_call(
        &mut self,
        entry: ManifestEntry,
        found: Option<Result<StoredSidecar, String>>,
        seq: i64,
        manifest: &str,
    ) -> Option<Recovered> {
        let sidecar = self.store.sidecar_key(&entry.key);
        let from_sidecar = match found {
            Some(Ok(s)) => rows::from_sidecar(&s),
            Some(Err(why)) => Err(why),
            None => Err(String::new()),
        };
        match from_sidecar {
            Ok(call) => Some(self.as_listed(call, &entry, &sidecar, seq, manifest)),
            Err(why) => {
                if !why.is_empty() {
                    self.report.problem(RebuildProblem::SidecarUnreadable {
                        sidecar: sidecar.clone(),
                        error: why,
                    });
                }
                self.report.problem(RebuildProblem::EntryWithoutSidecar {
                    manifest: manifest.to_owned(),
                    uuid: entry.uuid.clone(),
                    key: entry.key.clone(),
                });
                match rows::from_entry(&entry, seq) {
                    Ok(call) => Some(call),
                    Err(why) => {
                        self.report.problem(RebuildProblem::ManifestUnreadable {
                            key: manifest.to_owned(),
                            error: why,
                        });
                        None
                    }
                }
            }
        }
    }

    /// The call its sidecar gives, with what manifest `seq` lists as `entry` in place of
    /// the sidecar's own archive facts; each difference is reported.
    fn as_listed(
        &mut self,
        mut call: Recovered,
        entry: &ManifestEntry,
        sidecar: &str,
        seq: i64,
        manifest: &str,
    ) -> Recovered {
        let differs = [
            (call.uuid != entry.uuid.as_str(), "uuid"),
            (call.key != entry.key, "key"),
            (call.size != entry.size, "size"),
            (call.sha256 != entry.sha256, "SHA-256"),
        ];
        for (_, what) in differs.iter().filter(|(d, _)| *d) {
            self.report.problem(RebuildProblem::SidecarDisagrees {
                sidecar: sidecar.to_owned(),
                what: format!("its {what} is not the one {manifest} lists"),
            });
        }
        // The chained manifest is the authority on what was archived.
        if let Ok(listed) = rows::from_entry(entry, seq) {
            call.uuid = listed.uuid;
            call.key = listed.key;
            call.size = listed.size;
            call.sha256 = listed.sha256;
            call.archived_at = listed.archived_at;
        }
        call.manifest_seq = Some(seq);
        call
    }

    /// Restores the erasures manifest `seq` lists: each call as the erasure left it (state
    /// `erased`, no personal data), and its tombstone, listed by that manifest.
    async fn erasures(
        &mut self,
        page: &mut Vec<ManifestErasure>,
        seq: i64,
        manifest: &str,
    ) -> Result<(), RebuildError> {
        let mut calls = Vec::new();
        let mut tombstones = Vec::new();
        let mut seen = HashSet::new();
        for erased in page.drain(..) {
            let tombstone = match rows::tombstone(&erased, seq) {
                Ok(t) => t,
                Err(error) => {
                    self.report.problem(RebuildProblem::ManifestUnreadable {
                        key: manifest.to_owned(),
                        error,
                    });
                    continue;
                }
            };
            let uuid = tombstone.uuid.clone();
            if !seen.insert(uuid.clone()) || self.ledger.tombstone(&uuid).await?.is_some() {
                if !self.merge {
                    self.report.problem(RebuildProblem::Duplicate {
                        uuid: uuid.to_string(),
                        key: tombstone.key,
                    });
                }
                continue;
            }
            if self.ledger.get(&uuid).await?.is_some() {
                // (`--merge`) The ledger knows the call but not its erasure: left as it is.
                self.report.problem(RebuildProblem::ErasureUnknownToLedger {
                    uuid: uuid.to_string(),
                    manifest: manifest.to_owned(),
                });
                continue;
            }
            calls.push(rows::erased_call_row(&tombstone));
            tombstones.push(rows::tombstone_row(&tombstone));
            self.report.erased += 1;
        }
        self.ledger.import_rows(Table::Calls, &calls).await?;
        self.ledger
            .import_rows(Table::Tombstones, &tombstones)
            .await?;
        Ok(())
    }

    /// Lists the whole store page by page: recovers the calls of sidecars no manifest
    /// listed, and finds recordings and sidecars without each other.
    async fn listing(&mut self) -> Result<(), RebuildError> {
        let manifests = format!("{}/", self.store.manifests_prefix());
        let mut listing = self.store.list_everything();
        let mut page = Vec::with_capacity(PAGE);
        while let Some(item) = listing.try_next().await? {
            self.report.objects_listed += 1;
            if item.key.starts_with(&manifests)
                || self.foreign.iter().any(|p| item.key.starts_with(p))
            {
                continue;
            }
            page.push(item);
            if page.len() >= PAGE {
                self.listed(std::mem::take(&mut page)).await?;
            }
        }
        self.listed(page).await
    }

    /// Recovers the calls of a page of listed objects whose sidecar no manifest listed.
    async fn listed(&mut self, page: Vec<Listed>) -> Result<(), RebuildError> {
        let sizes: HashMap<String, u64> = page.iter().map(|l| (l.key.clone(), l.size)).collect();
        let store = self.store;
        let sizes = &sizes;
        let found: Vec<Listing> = futures::stream::iter(page)
            .map(|item| Listing::of(store, sizes, item))
            .buffered(self.concurrency)
            .try_collect()
            .await?;
        let mut batch = Batch::default();
        for item in found {
            let (sidecar, recording, object_size, read) = match item {
                Listing::Paired | Listing::Other => continue,
                Listing::ObjectWithoutSidecar(key) => {
                    self.report
                        .problem(RebuildProblem::ObjectWithoutSidecar { key });
                    continue;
                }
                Listing::Sidecar {
                    sidecar,
                    recording,
                    object_size,
                    read,
                } => (sidecar, recording, object_size, read),
            };
            if let Ok(s) = &read
                && let Some(other) = s.account.as_deref()
                && other != self.ledger.account().as_str()
            {
                // Another account's call, in a store they share: its own rebuild takes it.
                self.report.other_accounts += 1;
                continue;
            }
            let call = match read.and_then(|s| rows::from_sidecar(&s)) {
                Ok(call) => call,
                Err(error) => {
                    self.report
                        .problem(RebuildProblem::SidecarUnreadable { sidecar, error });
                    continue;
                }
            };
            let Some(object_size) = object_size else {
                self.report.problem(RebuildProblem::SidecarWithoutObject {
                    sidecar,
                    key: recording,
                });
                continue;
            };
            if !self.unlisted(&call, &recording, &batch).await? {
                continue;
            }
            self.check_sidecar(&call, &sidecar, &recording, object_size);
            if self.add(call, &mut batch).await? {
                self.report.calls_not_in_a_manifest += 1;
            }
        }
        self.write(batch).await
    }

    /// Whether `call`, read from the sidecar of `recording`, is one no manifest listed and
    /// the ledger does not hold; a duplicate, or an erased call whose recording is still
    /// there, is reported.
    async fn unlisted(
        &mut self,
        call: &Recovered,
        recording: &str,
        batch: &Batch,
    ) -> Result<bool, RebuildError> {
        if batch.uuids.contains(&call.uuid) {
            self.report.problem(RebuildProblem::Duplicate {
                uuid: call.uuid.to_string(),
                key: call.key.clone(),
            });
            return Ok(false);
        }
        match self.ledger.get(&call.uuid).await? {
            None => Ok(true),
            Some(row) if row.state == RecordState::Erased => {
                self.report.problem(RebuildProblem::ErasedStillPresent {
                    key: recording.to_owned(),
                });
                Ok(false)
            }
            // Listed by a manifest (recovered then), or known before a merge.
            Some(_) => Ok(false),
        }
    }

    /// Reports where `sidecar` disagrees with its `recording` (name, size).
    fn check_sidecar(
        &mut self,
        call: &Recovered,
        sidecar: &str,
        recording: &str,
        object_size: u64,
    ) {
        if call.key != recording {
            self.report.problem(RebuildProblem::SidecarDisagrees {
                sidecar: sidecar.to_owned(),
                what: format!("it names {} as its recording", call.key),
            });
        }
        if call.size != object_size {
            self.report.problem(RebuildProblem::SidecarDisagrees {
                sidecar: sidecar.to_owned(),
                what: format!(
                    "it gives {} bytes, the recording has {object_size}",
                    call.size
                ),
            });
        }
    }

    /// Adds `call` (which the ledger does not hold) to `batch` unless the batch has it
    /// already; true if added.
    async fn add(&mut self, call: Recovered, batch: &mut Batch) -> Result<bool, RebuildError> {
        if batch.uuids.contains(&call.uuid) {
            self.report.problem(RebuildProblem::Duplicate {
                uuid: call.uuid.to_string(),
                key: call.key,
            });
            return Ok(false);
        }
        if let Some(run) = &call.run_id {
            if !self.runs.contains(run) {
                self.runs.insert(run.clone());
                batch
                    .runs
                    .push(rows::run_row(run, call.archived_at, &self.report.store));
                self.report.runs += 1;
            }
            batch
                .attempts
                .push(rows::attempt_row(self.next_attempt, &call, run));
            self.next_attempt += 1;
        }
        batch.calls.push(rows::call_row(&call, self.now));
        batch.uuids.insert(call.uuid);
        Ok(true)
    }

    async fn write(&mut self, batch: Batch) -> Result<(), RebuildError> {
        self.ledger.import_rows(Table::Runs, &batch.runs).await?;
        self.ledger.import_rows(Table::Calls, &batch.calls).await?;
        self.ledger
            .import_rows(Table::Attempts, &batch.attempts)
            .await?;
        Ok(())
    }
}

/// The two readings of the manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The erasures only (first, so that entries of erased calls are known as such).
    Erasures,
    /// The entries, each manifest's row and its link.
    Entries,
}

/// What reading one manifest's bytes found: their SHA-256 and size, its header, how many
/// entry and erasure lines it holds, and why it could not be read to the end.
#[derive(Default)]
struct ManifestScan {
    hasher: Sha256,
    size: u64,
    splitter: LineSplitter,
    header: Option<ManifestHeader>,
    broken: Option<String>,
    entries: u64,
}

impl ManifestScan {
    /// Hashes `chunk` and returns the lines it completes (none once the manifest is broken).
    fn chunk(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        if self.broken.is_some() {
            return Vec::new();
        }
        self.splitter.push(chunk).unwrap_or_else(|why| {
            self.broken = Some(why);
            Vec::new()
        })
    }

    /// The last line, unterminated, at the end of the bytes.
    fn finish(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.splitter)
            .finish()
            .into_iter()
            .collect()
    }

    /// The entry or erasure `line` holds; the first line is the header. Nothing once a
    /// line could not be read (the manifest is broken from there on).
    fn line(&mut self, line: &[u8]) -> Option<ManifestLine> {
        if line.is_empty() || self.broken.is_some() {
            return None;
        }
        if self.header.is_none() {
            match serde_json::from_slice::<ManifestHeader>(line) {
                Ok(h) => self.header = Some(h),
                Err(e) => self.broken = Some(format!("its header: {e}")),
            }
            return None;
        }
        match serde_json::from_slice::<ManifestLine>(line) {
            Ok(read) => {
                self.entries += 1;
                Some(read)
            }
            Err(e) => {
                self.broken = Some(format!("line {}: {e}", self.entries + 2));
                None
            }
        }
    }
}

/// Rows recovered from one page, written together.
#[derive(Default)]
struct Batch {
    runs: Vec<TableRow>,
    calls: Vec<TableRow>,
    attempts: Vec<TableRow>,
    uuids: HashSet<CallUuid>,
}
