//! Presigned GET links: one recording handed to someone outside, who has no credentials,
//! for a limited time. Only S3 stores can sign (object_store's `Signer`); a local directory
//! or memory store has nobody to answer the link, and says so.

use std::time::Duration;

use object_store::signer::{Method, Signer};
use url::Url;

use super::{Store, StoreError};

/// The longest an S3 presigned URL may live (SigV4's limit: seven days).
pub const MAX_LINK_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

impl Store {
    /// Whether this store can hand out presigned links (S3 stores only).
    pub fn can_sign(&self) -> bool {
        self.s3.is_some()
    }

    /// A URL that lets anyone GET the object at `key` for `expires_in`.
    pub async fn presigned_get(&self, key: &str, expires_in: Duration) -> Result<Url, StoreError> {
        let Some(target) = &self.s3 else {
            return Err(StoreError::Config(format!(
                "the store {} is not S3: it cannot sign a link for others to fetch; \
                 copy the recording out with `callvault get` instead",
                self.description
            )));
        };
        if expires_in.is_zero() || expires_in > MAX_LINK_LIFETIME {
            return Err(StoreError::Config(format!(
                "a link must expire after more than 0 seconds and at most 7 days, not {}",
                humantime::format_duration(expires_in)
            )));
        }
        target
            .s3
            .signed_url(Method::GET, &self.path(key)?, expires_in)
            .await
            .map_err(|e| StoreError::classify(format!("signing a link to {key}"), e))
    }
}
