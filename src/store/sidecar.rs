//! The self-describing archive's layout: beside each recording `<key>` a JSON sidecar
//! `<key>.json` with the original call record and the archive facts, and the manifest
//! chain under a manifests prefix — so that someone holding only the bucket can tell what
//! is there. A store without object metadata and without sidecars keeps the metadata in
//! `<key>.metadata.json` instead.

use object_store::path::Path;
use object_store::{Attribute, Attributes, PutOptions};
use serde::{Deserialize, Serialize};

use super::upload::metadata_pairs;
use super::{MetadataSupport, Store, StoreError, UploadMeta};
use crate::accounts::AccountName;
use crate::domain::{ArchivedObject, CallRecord};
use crate::timefmt::to_ledger;

/// Names the sidecar format; bumped when a field changes meaning.
pub const SIDECAR_FORMAT: &str = "callvault-sidecar/1";
pub const SIDECAR_SUFFIX: &str = ".json";
pub const DEFAULT_MANIFESTS_PREFIX: &str = "manifests";
/// A longer object is not a sidecar (one holds a call record and a few facts).
const MAX_SIDECAR: usize = 1024 * 1024;

/// The JSON beside a recording.
#[derive(Debug, Clone, Serialize)]
pub struct Sidecar {
    pub format: &'static str,
    /// The provider account the call belongs to (a uuid is only unique within one).
    pub account: String,
    pub uuid: String,
    pub company_code: String,
    pub call_start: Option<String>,
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub content_type: Option<String>,
    pub archived_at: String,
    pub run_id: String,
    pub callvault_version: &'static str,
    /// The call record as imported, when it is JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<serde_json::Value>,
    /// The call record as imported, verbatim, when it is not strict JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_raw: Option<String>,
    /// Why the recording is flagged (an odd body kept as the provider serves it, a duration
    /// far from the billed seconds), as the ledger's `media_note` says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_note: Option<String>,
}

/// A sidecar as read back from the store (`callvault ledger rebuild --from-store`): the same
/// fields as [`Sidecar`], owned, every one the reader needs required.
#[derive(Debug, Clone, Deserialize)]
pub struct StoredSidecar {
    pub format: String,
    /// Absent in a sidecar written before accounts (the `default` account's).
    #[serde(default)]
    pub account: Option<String>,
    pub uuid: String,
    #[serde(default)]
    pub company_code: String,
    pub call_start: Option<String>,
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub content_type: Option<String>,
    pub archived_at: String,
    pub run_id: String,
    pub call: Option<serde_json::Value>,
    pub call_raw: Option<String>,
}

impl Sidecar {
    pub fn new(
        account: &AccountName,
        record: &CallRecord,
        object: &ArchivedObject,
        run_id: &str,
    ) -> Self {
        let call = serde_json::from_str::<serde_json::Value>(&record.raw_json).ok();
        Self {
            format: SIDECAR_FORMAT,
            account: account.to_string(),
            uuid: record.uuid.to_string(),
            company_code: record.company_code.clone(),
            call_start: record.call_start.map(to_ledger),
            key: object.key.clone(),
            size: object.size,
            sha256: object.sha256.clone(),
            content_type: object.content_type.clone(),
            archived_at: to_ledger(object.archived_at),
            run_id: run_id.to_owned(),
            callvault_version: env!("CARGO_PKG_VERSION"),
            call_raw: call.is_none().then(|| record.raw_json.clone()),
            call,
            media_note: None,
        }
    }

    /// The sidecar with the recording's flag, if it has one.
    pub fn with_note(mut self, note: Option<&str>) -> Self {
        self.media_note = note.map(str::to_owned);
        self
    }
}

impl Store {
    /// Whether recordings get a `<key>.json` sidecar (on unless switched off).
    pub fn with_sidecars(mut self, on: bool) -> Self {
        self.sidecars = on;
        self
    }

    pub fn sidecars(&self) -> bool {
        self.sidecars
    }

    /// Where manifests go, below the store's prefix (default `manifests`).
    pub fn with_manifests_prefix(mut self, prefix: &str) -> Result<Self, StoreError> {
        let trimmed = prefix.trim_matches('/');
        let bad = trimmed.is_empty()
            || trimmed
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == ".." || s.chars().any(char::is_control));
        if bad || Path::parse(trimmed).is_err() {
            return Err(StoreError::Config(format!(
                "manifests prefix {prefix:?} is not a plain relative path"
            )));
        }
        self.manifests = trimmed.to_owned();
        Ok(self)
    }

    pub fn manifests_prefix(&self) -> &str {
        &self.manifests
    }

    /// The key of manifest `seq` (zero-padded, so keys sort in chain order).
    pub fn manifest_key(&self, seq: i64) -> String {
        format!("{}/{seq:010}.jsonl", self.manifests)
    }

    /// The key of manifest `seq`'s checkpoint of the Merkle log (see `proof/`).
    pub fn checkpoint_key(&self, seq: i64) -> String {
        checkpoint_key_for(&self.manifest_key(seq))
    }

    /// Where the bucket keeps a checkpoint signer's public key (`NAME+ID.pub`).
    pub fn public_key_key(&self, file_name: &str) -> String {
        format!("{}/keys/{file_name}", self.manifests)
    }

    /// The sequence number in a manifest key, if it is one.
    pub fn manifest_seq(&self, key: &str) -> Option<i64> {
        let name = key.strip_prefix(&self.manifests)?.strip_prefix('/')?;
        let digits = name.strip_suffix(".jsonl")?;
        (digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok())
            .flatten()
    }

    /// The key of the sidecar of the recording at `key`.
    pub fn sidecar_key(&self, key: &str) -> String {
        format!("{key}{SIDECAR_SUFFIX}")
    }

    /// Whether `key` names a sidecar or a metadata file rather than a recording.
    pub fn is_sidecar_key(key: &str) -> bool {
        key.ends_with(SIDECAR_SUFFIX)
    }

    /// Reads the sidecar at `sidecar_key`: `None` when there is none, `Some(Err(why))` when
    /// it is there but is not a sidecar callvault can read.
    pub async fn read_sidecar(
        &self,
        sidecar_key: &str,
    ) -> Result<Option<Result<StoredSidecar, String>>, StoreError> {
        let Some(mut body) = self.read(sidecar_key).await? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = futures::TryStreamExt::try_next(&mut body).await? {
            if bytes.len() + chunk.len() > MAX_SIDECAR {
                return Ok(Some(Err(format!("longer than {MAX_SIDECAR} bytes"))));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some(
            serde_json::from_slice::<StoredSidecar>(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    if s.format == SIDECAR_FORMAT {
                        Ok(s)
                    } else {
                        Err(format!("format {:?}, not {SIDECAR_FORMAT}", s.format))
                    }
                }),
        ))
    }

    /// Writes the sidecar of the recording at `sidecar.key`.
    pub async fn write_sidecar(&self, sidecar: &Sidecar) -> Result<(), StoreError> {
        let body = serde_json::to_vec_pretty(sidecar).unwrap_or_default();
        let key = self.sidecar_key(&sidecar.key);
        self.put_json(&key, body).await
    }

    /// For stores without user metadata (and without sidecars): `<key>.metadata.json`.
    pub(super) async fn write_metadata_file(
        &self,
        key: &str,
        meta: &UploadMeta,
        sha256: &str,
        size: u64,
    ) -> Result<(), StoreError> {
        let mut doc: serde_json::Map<String, serde_json::Value> =
            metadata_pairs(meta, Some(sha256))
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.into()))
                .collect();
        doc.insert("size".into(), size.into());
        if let Some(ct) = &meta.content_type {
            doc.insert("content-type".into(), ct.clone().into());
        }
        let body = serde_json::to_vec_pretty(&doc).unwrap_or_default();
        self.put_json(&format!("{key}.metadata.json"), body).await
    }

    async fn put_json(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        let mut attributes = Attributes::new();
        if self.metadata == MetadataSupport::Attributes {
            attributes.insert(Attribute::ContentType, "application/json".into());
        }
        if let Some(class) = self.storage_class {
            attributes.insert(Attribute::StorageClass, class.as_str().into());
        }
        let opts = PutOptions {
            attributes,
            ..Default::default()
        };
        self.inner
            .put_opts(&self.path(key)?, body.into(), opts)
            .await
            .map_err(|e| StoreError::classify(format!("writing {key}"), e))?;
        Ok(())
    }
}

/// The checkpoint beside the manifest at `manifest_key` (`….jsonl` → `….checkpoint`), wherever
/// that manifest is (a chain renamed into another prefix keeps its older ones where they were).
pub fn checkpoint_key_for(manifest_key: &str) -> String {
    let stem = manifest_key.strip_suffix(".jsonl").unwrap_or(manifest_key);
    format!("{stem}.checkpoint")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    #[test]
    fn the_manifests_prefix_is_a_plain_relative_path() {
        let store = || {
            Store::open(&StoreConfig {
                part_size: 1024,
                ..StoreConfig::new("memory:///")
            })
            .unwrap()
        };
        for bad in ["", "/", "../up", "a/../b", "a//b", "a/./b"] {
            assert!(store().with_manifests_prefix(bad).is_err(), "{bad:?}");
        }
        let store = store().with_manifests_prefix("/audit/chain/").unwrap();
        assert_eq!(store.manifest_key(7), "audit/chain/0000000007.jsonl");
        assert_eq!(store.manifest_seq("audit/chain/0000000007.jsonl"), Some(7));
        assert_eq!(store.manifest_seq("manifests/0000000007.jsonl"), None);
    }
}
