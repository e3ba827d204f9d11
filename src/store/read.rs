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
