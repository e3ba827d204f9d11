//! `callvault link`: a presigned GET URL for one recording, for someone outside who has no
//! credentials. Refused up front on a store that cannot sign (a local directory): nothing
//! is logged for a link that was never made.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Requester, RetrieveError, archived, human};
use crate::domain::CallUuid;
use crate::ledger::{AccessAction, Ledger};
use crate::store::{MAX_LINK_LIFETIME, Store};

/// A link handed out.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Link {
    pub uuid: CallUuid,
    /// The presigned URL (it carries a signature: hand it only to whom it is for).
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// Signs a GET of `uuid`'s recording valid for `expires`, after logging it.
pub async fn link(
    ledger: &Ledger,
    store: &Store,
    uuid: &CallUuid,
    expires: Duration,
    who: &Requester,
) -> Result<Link, RetrieveError> {
    if !store.can_sign() {
        return Err(RetrieveError::Refused(format!(
            "the store {} is a local directory (or memory), which cannot sign links for \
             others to fetch: give an s3:// store with --store, or copy the recording out \
             with `callvault get {uuid}`",
            store.description()
        )));
    }
    if expires.is_zero() || expires > MAX_LINK_LIFETIME {
        return Err(RetrieveError::Refused(format!(
            "--expires {}: a link must last more than 0 seconds and at most 7 days",
            human(expires)
        )));
    }
    let object = archived(ledger, uuid).await?;
    let expires_at = Utc::now()
        + chrono::Duration::from_std(expires).unwrap_or_else(|_| chrono::Duration::days(7));
    ledger
        .log_access(&who.entry(
            AccessAction::Link,
            Some(format!("expires={}", human(expires))),
            vec![uuid.clone()],
        ))
        .await?;
    let url = store.presigned_get(&object.key, expires).await?;
    Ok(Link {
        uuid: uuid.clone(),
        url: url.to_string(),
        expires_at,
    })
}
