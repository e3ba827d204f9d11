//! Reading the archive back: objects streamed and hashed (verify), listed by prefix, or
//! opened as a byte stream (manifests). Memory stays bounded by the store's chunks.

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};

use super::{Store, StoreError};

/// What an object's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDigest {
    pub size: u64,
    pub sha256: String,
}

/// An object found by listing, its key relative to the store's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

impl Store {
    /// Reads the object at `key` to its end and hashes it; `None` when there is none.
    pub async fn digest(&self, key: &str) -> Result<Option<ObjectDigest>, StoreError> {
        let Some(mut body) = self.read(key).await? else {
            return Ok(None);
        };
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.try_next().await? {
            hasher.update(&chunk);
            size += chunk.len() as u64;
        }
        Ok(Some(ObjectDigest {
            size,
            sha256: hex::encode(hasher.finalize()),
        }))
    }

    /// The bytes of the object at `key` as a stream; `None` when there is none.
    pub async fn read(
        &self,
        key: &str,
    ) -> Result<Option<BoxStream<'static, Result<Bytes, StoreError>>>, StoreError> {
        match self.inner.get(&self.path(key)?).await {
            Ok(got) => {
                let context = format!("reading {key}");
                Ok(Some(
                    got.into_stream()
                        .map_err(move |e| StoreError::classify(context.clone(), e))
                        .boxed(),
                ))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StoreError::classify(format!("reading {key}"), e)),
        }
    }

    /// Every object in the store (below its prefix), keys relative to the prefix, as the
    /// store lists them page by page (S3: in key order); nothing is held beyond a page.
    pub fn list_everything(&self) -> BoxStream<'static, Result<Listed, StoreError>> {
        let strip = self.prefix.as_ref().map(|p| format!("{p}/"));
        self.inner
            .list(self.prefix.as_ref())
            .map_ok(move |meta| {
                let full = meta.location.to_string();
                let key = match &strip {
                    Some(strip) => full
                        .strip_prefix(strip.as_str())
                        .unwrap_or(&full)
                        .to_owned(),
                    None => full,
                };
                Listed {
                    key,
                    size: meta.size,
                }
            })
            .map_err(|e| StoreError::classify("listing the store", e))
            .boxed()
    }

    /// Every object below `prefix` (relative to the store's prefix), keys relative too.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        let base = self.path(prefix)?;
        let strip = format!("{}/", self.prefix.as_ref().map_or("", |p| p.as_ref()));
        let mut listed: Vec<Listed> = self
            .inner
            .list(Some(&base))
            .map_ok(|meta| {
                let full = meta.location.to_string();
                let key = if self.prefix.is_some() {
                    full.strip_prefix(&strip).unwrap_or(&full).to_owned()
                } else {
                    full
                };
                Listed {
                    key,
                    size: meta.size,
                }
            })
            .try_collect()
            .await
            .map_err(|e| StoreError::classify(format!("listing {prefix}"), e))?;
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn listing_and_digests_are_relative_to_the_prefix_and_absent_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap();
        for store in [
            Store::open(&StoreConfig {
                part_size: 1024,
                ..StoreConfig::new(url.as_str())
            })
            .unwrap(),
            Store::open(&StoreConfig {
                part_size: 1024,
                ..StoreConfig::new("memory:///tenant")
            })
            .unwrap(),
        ] {
            assert_eq!(store.list("manifests").await.unwrap(), []);
            assert_eq!(store.digest("nothing/here").await.unwrap(), None);
            let path = store.path("manifests/0000000001.jsonl").unwrap();
            store
                .object_store()
                .put(&path, b"abc".to_vec().into())
                .await
                .unwrap();
            assert_eq!(
                store.list("manifests").await.unwrap(),
                [Listed {
                    key: "manifests/0000000001.jsonl".into(),
                    size: 3
                }]
            );
            assert_eq!(
                store.digest("manifests/0000000001.jsonl").await.unwrap(),
                Some(ObjectDigest {
                    size: 3,
                    sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
                        .into()
                })
            );
            assert_eq!(store.manifest_seq("manifests/0000000001.jsonl"), Some(1));
            assert_eq!(store.manifest_seq("manifests/1.jsonl"), None);
        }
    }
}
