//! Looking inside after a fault: the ledger's attempts, the S3 server's unfinished
//! multipart uploads, and a store reached through the fault-injecting proxy.

use callvault::store::{S3Options, Store, StoreConfig};

use crate::world::{BUCKET, TEST_PART, World, files_under};

/// One row of the ledger's `attempts` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub uuid: String,
    pub run_id: String,
    pub outcome: String,
    pub error_code: Option<String>,
}

impl World {
    /// A store on the same bucket reached through `endpoint` (a fault-injecting proxy).
    pub fn store_through(&self, endpoint: &str) -> Store {
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
        use sqlx::Row;
        let pool = sqlx::SqlitePool::connect(&self.ledger_url)
            .await
            .expect("ledger file");
        let rows =
            sqlx::query("SELECT call_uuid, run_id, outcome, error_code FROM attempts ORDER BY id")
                .fetch_all(&pool)
                .await
                .expect("attempts");
        pool.close().await;
        rows.iter()
            .map(|r| AttemptRow {
                uuid: r.get("call_uuid"),
                run_id: r.get("run_id"),
                outcome: r.get("outcome"),
                error_code: r.get("error_code"),
            })
            .collect()
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
