//! Dating checkpoints: each checkpoint is sent, as the SHA-256 of its file, to every
//! configured time-stamping authority, and each token kept beside it in the store
//! (`NAME.tsr`, or `NAME.<host>.tsr` when another authority's token is already there) and
//! in the ledger. An authority that is down, or answers with a token that does not check
//! (another imprint, another nonce, a bad signature, an untrusted chain), is logged and
//! asked again on the next pass; archiving never waits for it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use url::Url;

use super::log::{put_bytes, read_bytes};
use super::tsa::{TrustRoots, TsaClient, verify_token};
use crate::ledger::{CheckpointRow, Ledger, LedgerError, StampRow};
use crate::store::{Store, StoreError};

/// How long an authority gets to answer one request.
const TSA_TIMEOUT: Duration = Duration::from_secs(20);
pub const TOKEN_CONTENT_TYPE: &str = "application/timestamp-reply";

/// The authorities a deployment asks, and the roots their chains must end in.
pub struct Stamper {
    client: TsaClient,
    urls: Vec<Url>,
}

impl Stamper {
    pub fn new(urls: Vec<Url>, roots: Option<TrustRoots>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(TSA_TIMEOUT)
            .user_agent(concat!("callvault/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client: TsaClient::new(http, roots),
            urls,
        })
    }

    pub fn urls(&self) -> &[Url] {
        &self.urls
    }

    /// A verified token over `imprint` from the first authority that gives one; what each
    /// said when none does.
    pub async fn stamp_any(&self, imprint: &[u8; 32]) -> Result<Vec<u8>, String> {
        let mut said = Vec::new();
        for url in &self.urls {
            match self.client.stamp(url, imprint).await {
                Ok(stamp) => return Ok(stamp.token),
                Err(e) => said.push(e.to_string()),
            }
        }
        Err(said.join("; "))
    }
}

/// What stamping did.
#[derive(Debug, Default)]
pub struct Stamped {
    pub tokens: u64,
    pub problems: Vec<String>,
}

/// The SHA-256 a checkpoint's token stamps: of the checkpoint file's bytes.
pub fn imprint(checkpoint_text: &str) -> [u8; 32] {
    Sha256::digest(checkpoint_text.as_bytes()).into()
}

/// Asks every authority for a token over every checkpoint it has not stamped yet.
pub async fn stamp_pending(
    ledger: &Ledger,
    store: &Store,
    stamper: &Stamper,
    now: DateTime<Utc>,
) -> Result<Stamped, LedgerError> {
    let mut done = Stamped::default();
    for url in &stamper.urls {
        for checkpoint in ledger.unstamped(url.as_str()).await? {
            match stamp_one(ledger, store, stamper, url, &checkpoint, now).await {
                Ok(key) => {
                    tracing::info!(tsa = %url, token = %key, "checkpoint time-stamped");
                    done.tokens += 1;
                }
                Err(e) => {
                    tracing::warn!(tsa = %url, checkpoint = %checkpoint.key, error = %e,
                        "no time-stamp token; the checkpoint is stamped on a later pass");
                    done.problems.push(format!("{}: {e}", checkpoint.key));
                    // One failure is enough for this pass: the next asks again.
                    break;
                }
            }
        }
    }
    Ok(done)
}

#[derive(Debug, thiserror::Error)]
pub enum StampError {
    #[error(transparent)]
    Tsa(#[from] super::tsa::TsaError),
    #[error("writing {key}: {source}")]
    Store { key: String, source: StoreError },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

async fn stamp_one(
    ledger: &Ledger,
    store: &Store,
    stamper: &Stamper,
    url: &Url,
    checkpoint: &CheckpointRow,
    now: DateTime<Utc>,
) -> Result<String, StampError> {
    let stamp = stamper
        .client
        .stamp(url, &imprint(&checkpoint.text))
        .await?;
    let key = token_key(store, &checkpoint.key, url)
        .await
        .map_err(|source| StampError::Store {
            key: checkpoint.key.clone(),
            source,
        })?;
    put_bytes(store, &key, stamp.token.clone(), TOKEN_CONTENT_TYPE)
        .await
        .map_err(|source| StampError::Store {
            key: key.clone(),
            source,
        })?;
    let row = StampRow {
        seq: checkpoint.seq,
        tsa: url.to_string(),
        key: key.clone(),
        token: stamp.token,
        gen_time: stamp.gen_time,
    };
    ledger.add_stamp(&row, now).await?;
    Ok(key)
}

/// `NAME.tsr` for a checkpoint's first token; `NAME.<host>.tsr` for each further one.
async fn token_key(store: &Store, checkpoint_key: &str, url: &Url) -> Result<String, StoreError> {
    let first = format!("{checkpoint_key}.tsr");
    if store.size_of(&first).await?.is_none() {
        return Ok(first);
    }
    let host: String = format!(
        "{}{}",
        url.host_str().unwrap_or("tsa"),
        url.port().map(|p| format!("-{p}")).unwrap_or_default()
    )
    .chars()
    .map(|c| {
        if c.is_ascii_alphanumeric() || c == '-' {
            c
        } else {
            '-'
        }
    })
    .collect();
    Ok(format!("{checkpoint_key}.{host}.tsr"))
}

/// Takes into the ledger the tokens the store keeps beside its checkpoints that the ledger
/// lacks (a ledger rebuilt from the bucket): each checked against its checkpoint's imprint
/// and signature; recorded under the name of the authority that signed it.
pub async fn adopt_tokens(
    ledger: &Ledger,
    store: &Store,
    now: DateTime<Utc>,
) -> Result<u64, AdoptError> {
    let known: std::collections::HashSet<String> =
        ledger.stamps().await?.into_iter().map(|s| s.key).collect();
    let listed = store.list(store.manifests_prefix()).await?;
    let mut adopted = 0;
    for checkpoint in ledger.checkpoints().await? {
        let tokens = listed.iter().filter(|l| {
            l.key.starts_with(&checkpoint.key) && l.key.ends_with(".tsr") && !known.contains(&l.key)
        });
        for listed in tokens {
            let Some(bytes) = read_bytes(store, &listed.key).await? else {
                continue;
            };
            match verify_token(&bytes, &imprint(&checkpoint.text), None, None) {
                Ok(stamp) => {
                    let row = StampRow {
                        seq: checkpoint.seq,
                        tsa: stamp.tsa.clone(),
                        key: listed.key.clone(),
                        token: bytes,
                        gen_time: stamp.gen_time,
                    };
                    ledger.add_stamp(&row, now).await?;
                    adopted += 1;
                }
                Err(e) => tracing::warn!(token = %listed.key, error = %e,
                    "a token in the store does not check against its checkpoint; not taken"),
            }
        }
    }
    Ok(adopted)
}

/// Why tokens could not be taken from the store.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("reading the store: {0}")]
    Store(#[from] StoreError),
}
