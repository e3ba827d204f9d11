//! Looking inside after a fault: the ledger's tables (read the same way on both backends,
//! through `export_rows`), the S3 server's unfinished multipart uploads, and a store reached
//! through the fault-injecting proxy.

use std::collections::{BTreeMap, BTreeSet};

use callvault::domain::RecordState;
use callvault::ledger::{Ledger, Table, TableRow};
use callvault::store::{S3Options, Store, StoreConfig};

use crate::world::{BUCKET, TEST_PART, World, files_under};

/// One row of the ledger's `attempts` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub id: i64,
    pub uuid: String,
    pub run_id: String,
    pub outcome: String,
    pub error_code: Option<String>,
}

impl World {
    /// A store on the same bucket reached through `endpoint` (a fault-injecting proxy).
    pub fn store_through(&self, endpoint: &str) -> Store {
        self.store_through_with(endpoint, true)
    }

    /// The store through `endpoint`, sending `x-amz-checksum-sha256` with each PUT or not.
    pub fn store_through_with(&self, endpoint: &str, checksums: bool) -> Store {
        let options: S3Options = self
            .s3
            .options()
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "aws_endpoint" => (k, endpoint.to_owned()),
                _ => (k, v),
            })
            .collect();
        Store::open(&StoreConfig {
            s3: options,
            part_size: TEST_PART,
            checksums,
            ..StoreConfig::new(format!("s3://{BUCKET}/calls"))
        })
        .expect("store")
    }

    /// The recordings in the store (keys relative to the bucket): every object but the
    /// sidecars (`<key>.json`) and the manifests.
    pub async fn recording_keys(&self) -> Vec<String> {
        self.object_keys()
            .await
            .into_iter()
            .filter(|k| !k.ends_with(".json") && !k.contains("/manifests/"))
            .collect()
    }

    /// Whether the S3 server holds no unfinished multipart upload (s3s-fs keeps them as
    /// `.upload*` files in its root).
    pub fn no_pending_multipart(&self) -> bool {
        files_under(self.s3.root.path())
            .iter()
            .all(|p| !p.to_string_lossy().contains("upload"))
    }

    /// Every attempt the ledger recorded, in order.
    pub async fn attempts(&self) -> Vec<AttemptRow> {
        attempts(&self.ledger).await
    }

    /// Checks the end state after faults: `records` records archived and none left waiting
    /// or failed; each archived by exactly one attempt, its object's SHA-256 the ledger's
    /// and the source's; and the store holding exactly the archived recordings, their
    /// sidecars and the manifests (nothing stored that is not archived, no stray object).
    pub async fn assert_archived_exactly_once(&self, records: usize) {
        assert_eq!(self.count(RecordState::Archived).await, records);
        for state in [
            RecordState::Pending,
            RecordState::InProgress,
            RecordState::Failed,
        ] {
            assert_eq!(self.count(state).await, 0, "{state:?}");
        }
        assert_eq!(self.verify_archived().await, records);
        let mut archived_attempts: BTreeMap<String, usize> = BTreeMap::new();
        for attempt in self.attempts().await {
            if attempt.outcome == "archived" {
                *archived_attempts.entry(attempt.uuid).or_default() += 1;
            }
        }
        assert_eq!(archived_attempts.len(), records);
        assert!(
            archived_attempts.values().all(|n| *n == 1),
            "{archived_attempts:?}"
        );
        let mut recordings = BTreeSet::new();
        for uuid in self
            .ledger
            .uuids_in_state(RecordState::Archived)
            .await
            .unwrap()
        {
            let row = self.ledger.get(&uuid).await.unwrap().unwrap();
            recordings.insert(format!("calls/{}", row.object_key.unwrap()));
        }
        let sidecars: BTreeSet<String> = recordings.iter().map(|k| format!("{k}.json")).collect();
        let mut stored: BTreeSet<String> = self.object_keys().await.into_iter().collect();
        stored.retain(|k| !k.starts_with("calls/manifests/"));
        assert_eq!(
            stored,
            &recordings | &sidecars,
            "the store holds exactly the archived recordings and their sidecars"
        );
    }

    /// The attempts on `uuid`, as (outcome, error code) pairs.
    pub async fn attempts_of(&self, uuid: &str) -> Vec<(String, Option<String>)> {
        self.attempts()
            .await
            .into_iter()
            .filter(|a| a.uuid == uuid)
            .map(|a| (a.outcome, a.error_code))
            .collect()
    }
}

/// Every row of `table`, by key, as `ledger copy` reads it (column → JSON value).
pub async fn table_rows(ledger: &Ledger, table: Table) -> Vec<TableRow> {
    const PAGE: i64 = 1000;
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let page = ledger
            .export_rows(table, after.as_ref(), PAGE)
            .await
            .unwrap_or_else(|e| panic!("reading {}: {e}", table.name()));
        let Some(last) = page.last() else { break };
        after = Some(last.clone());
        let full = page.len() as i64 == PAGE;
        rows.extend(page);
        if !full {
            break;
        }
    }
    rows
}

/// Every attempt `ledger` recorded, in order.
pub async fn attempts(ledger: &Ledger) -> Vec<AttemptRow> {
    let text =
        |row: &TableRow, column: &str| row.get(column).and_then(|v| v.as_str()).map(str::to_owned);
    table_rows(ledger, Table::Attempts)
        .await
        .iter()
        .map(|row| AttemptRow {
            id: row["id"].as_i64().expect("an attempt's id"),
            uuid: text(row, "call_uuid").expect("an attempt's call"),
            run_id: text(row, "run_id").expect("an attempt's run"),
            outcome: text(row, "outcome").expect("an attempt's outcome"),
            error_code: text(row, "error_code"),
        })
        .collect()
}
