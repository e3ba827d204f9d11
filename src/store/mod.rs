//! The object store: S3 (and S3-compatible), a local directory, or memory, chosen by URL.
//! Speaks in keys relative to the configured prefix; uploads stream with hashing.

mod budget;
mod class;
mod key;
mod legal;
mod link;
mod lock;
mod read;
mod s3meta;
mod sidecar;
mod upload;

use std::sync::Arc;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

pub use budget::{DEFAULT_MEMORY_BUDGET, MemoryBudget, Reservation};
pub use class::StorageClass;
pub use key::{DEFAULT_TEMPLATE, KeyError, KeyTemplate};
pub use legal::{LegalHoldOutcome, ObjectVersion, VersionLock};
pub use link::MAX_LINK_LIFETIME;
pub use lock::{LockMode, ObjectRetention, RetainFor, RetentionPolicy};
pub use read::{Listed, ObjectDigest};
pub use sidecar::{
    DEFAULT_MANIFESTS_PREFIX, SIDECAR_FORMAT, SIDECAR_SUFFIX, Sidecar, StoredSidecar,
    checkpoint_key_for,
};
pub use upload::{UploadError, UploadMeta, Uploaded};

/// What went wrong with the store, by what the caller must do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store's URL or settings are wrong: fix the configuration (exit code 2).
    #[error("store configuration: {0}")]
    Config(String),
    /// The store refused our credentials or has no such bucket: stop the run.
    #[error("the store refused access or has no such bucket ({context}): {source}")]
    Refused {
        context: String,
        #[source]
        source: object_store::Error,
    },
    /// A passing failure (5xx, connection, timeout): retry later.
    #[error("the store failed ({context}): {source}")]
    Transient {
        context: String,
        #[source]
        source: object_store::Error,
    },
}

impl StoreError {
    pub(crate) fn classify(context: impl Into<String>, source: object_store::Error) -> Self {
        let context = context.into();
        match source {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => Self::Refused { context, source },
            // object_store reports some S3 refusals (a list request, say) only as text.
            object_store::Error::Generic { .. } if says_refused(&source.to_string()) => {
                Self::Refused { context, source }
            }
            _ => Self::Transient { context, source },
        }
    }

    /// What the pass must do about it: a store that refuses us or is misconfigured stops
    /// the run (no record is to blame); anything else is passing.
    pub fn action(&self) -> crate::failure::Action {
        match self {
            Self::Config(_) | Self::Refused { .. } => crate::failure::Action::StopRun,
            Self::Transient { .. } => crate::failure::Action::Retry,
        }
    }

    /// Whether the store did not answer at all (connection refused, reset or timed out,
    /// after the client's own retries), as opposed to answering with an error status.
    pub fn is_unreachable(&self) -> bool {
        let Self::Transient { source, .. } = self else {
            return false;
        };
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
        while let Some(err) = cause {
            if let Some(http) = err.downcast_ref::<object_store::client::HttpError>() {
                use object_store::client::HttpErrorKind as Kind;
                return matches!(
                    http.kind(),
                    Kind::Connect | Kind::Request | Kind::Timeout | Kind::Interrupted
                );
            }
            cause = err.source();
        }
        false
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Config(_) => "store_config",
            Self::Refused { .. } => "store_refused",
            Self::Transient { .. } => "store_failed",
        }
    }
}

/// Whether an S3 error text is a refusal no retry can fix (credentials, missing bucket).
fn says_refused(text: &str) -> bool {
    [
        "AccessDenied",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "NoSuchBucket",
        "403 Forbidden",
        "401 Unauthorized",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// object_store's own retries of one request, kept short: callvault retries whole
/// attempts with a fresh link, and a store that is down should not hold a worker for minutes.
static STORE_RETRY: std::sync::LazyLock<object_store::RetryConfig> =
    std::sync::LazyLock::new(|| object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(30),
        ..Default::default()
    });

/// Where the store keeps user metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetadataSupport {
    /// As object attributes (S3 `x-amz-meta-*`, memory).
    Attributes,
    /// In a `<key>.json` sidecar, or `<key>.metadata.json` without sidecars (local directories).
    BesideObject,
}

/// The archive's object store.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// Where multipart uploads go: on S3 the same bucket through a client whose parts carry
    /// `x-amz-checksum-crc64nvme` (the server checks each part) and an unsigned payload, so
    /// a large recording is hashed with SHA-256 once (ours) instead of twice (ours and the
    /// signature's); elsewhere, and with CRC64NVME for every PUT, `inner`.
    bulk: Arc<dyn ObjectStore>,
    /// Set for S3 stores: reaches the bucket for what object_store cannot do.
    s3: Option<s3meta::S3Target>,
    prefix: Option<Path>,
    metadata: MetadataSupport,
    part_size: usize,
    description: String,
    /// Write a `<key>.json` sidecar beside each recording.
    sidecars: bool,
    /// Below the prefix: where the manifest chain lives.
    manifests: String,
    /// Object Lock retention for every recording and sidecar, when configured.
    retention: Option<RetentionPolicy>,
    /// The S3 storage class of every recording and sidecar (the bucket's default if none).
    storage_class: Option<StorageClass>,
    /// Every PUT carries `x-amz-checksum-sha256` and the server refuses bytes that do not
    /// match it (S3 stores with `checksums` set): a single PUT's answer is then proof enough
    /// and needs no HEAD after it.
    checksums: bool,
    /// Bytes of upload buffers every transfer of the process shares (see `budget.rs`).
    budget: MemoryBudget,
}

/// Settings for S3 stores, from the standard `AWS_*` variables (`aws_access_key_id`,
/// `aws_endpoint`, `aws_region`, ...), as `object_store` names them.
pub type S3Options = Vec<(String, String)>;

/// object_store's name for an S3 setting written as in the `[aws]` tables (`region`,
/// `aws-endpoint`, `SSE_KMS_KEY_ID`): lower case, `_` for `-`, with the `aws_` prefix;
/// `None` when object_store has no such setting.
pub fn s3_setting_name(key: &str) -> Option<String> {
    let name = key.to_ascii_lowercase().replace('-', "_");
    let name = if name.starts_with("aws_") {
        name
    } else {
        format!("aws_{name}")
    };
    name.parse::<object_store::aws::AmazonS3ConfigKey>()
        .is_ok()
        .then_some(name)
}

/// S3 settings as they may be shown: the names, and the values of those that are no secret.
pub struct ShownS3<'a>(pub &'a S3Options);

impl ShownS3<'_> {
    /// Whether the setting `key` is (or may be) a secret.
    pub fn is_secret(key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        // The KMS key's id names a key; it is no secret.
        !key.contains("kms_key_id")
            && ["secret", "token", "key", "password"]
                .iter()
                .any(|word| key.contains(word))
    }

    /// Each setting with its value, or `***` for a secret.
    pub fn pairs(options: &S3Options) -> Vec<(String, String)> {
        options
            .iter()
            .map(|(k, v)| {
                let shown = if Self::is_secret(k) {
                    "***"
                } else {
                    v.as_str()
                };
                (k.clone(), shown.to_owned())
            })
            .collect()
    }
}

impl std::fmt::Debug for ShownS3<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(Self::pairs(self.0)).finish()
    }
}

/// The multipart part size when none is chosen (the command line's default, 8 MiB).
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;

/// Everything [`Store::open`] needs: where the archive is and how it is laid out.
#[derive(Clone)]
pub struct StoreConfig {
    /// `s3://bucket/prefix`, `file:///path` or `memory://`.
    pub url: String,
    /// S3 settings (unused by the other schemes).
    pub s3: S3Options,
    /// Multipart part size in bytes.
    pub part_size: usize,
    /// Write a `<key>.json` sidecar beside each recording.
    pub sidecars: bool,
    /// Below the store's prefix: where the manifest chain goes.
    pub manifests_prefix: String,
    /// Object Lock retention for every recording and sidecar (S3 with Object Lock only).
    pub retention: Option<RetentionPolicy>,
    /// The S3 storage class of every recording and sidecar (S3 only).
    pub storage_class: Option<StorageClass>,
    /// S3: send a checksum with every PUT (the server checks the bytes) and skip the HEAD
    /// after a single PUT. Off for a server that does not check checksums (it would then
    /// be trusted without a check): the HEAD is made after every upload.
    pub checksums: bool,
    /// Which checksum single PUTs carry (parts always carry CRC64NVME).
    pub checksum_algorithm: ChecksumAlgorithm,
    /// Bytes of upload buffers held at once; clones share one budget (a run's accounts).
    pub memory_budget: MemoryBudget,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url)
            .field("s3", &ShownS3(&self.s3))
            .field("part_size", &self.part_size)
            .field("sidecars", &self.sidecars)
            .field("manifests_prefix", &self.manifests_prefix)
            .field("retention", &self.retention)
            .field("storage_class", &self.storage_class)
            .field("checksums", &self.checksums)
            .field("checksum_algorithm", &self.checksum_algorithm)
            .field("memory_budget", &self.memory_budget.bytes())
            .finish()
    }
}

impl StoreConfig {
    /// The store at `url` with no S3 settings, the default part size, sidecars on and the
    /// default manifests prefix.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            s3: S3Options::new(),
            part_size: DEFAULT_PART_SIZE,
            sidecars: true,
            manifests_prefix: DEFAULT_MANIFESTS_PREFIX.into(),
            retention: None,
            storage_class: None,
            checksums: true,
            checksum_algorithm: ChecksumAlgorithm::default(),
            memory_budget: MemoryBudget::default(),
        }
    }
}

impl Store {
    /// Opens the store `config` names: `s3://bucket/prefix`, `file:///path` or `memory://`.
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        let mut store = Self::open_url(
            &config.url,
            &config.s3,
            config.part_size,
            config.checksums.then_some(config.checksum_algorithm),
        )?
        .with_manifests_prefix(&config.manifests_prefix)?;
        if let Some(class) = config.storage_class {
            let Some(s3) = store.s3.as_mut() else {
                return Err(StoreError::Config(format!(
                    "--storage-class {class} applies to S3 stores only, not {}",
                    store.description
                )));
            };
            s3.copy_headers
                .push(("x-amz-storage-class", class.as_str().to_owned()));
            store.storage_class = Some(class);
        }
        store.budget = config.memory_budget.clone();
        Ok(store
            .with_sidecars(config.sidecars)
            .with_retention(config.retention))
    }

    /// The storage class recordings and sidecars are written in, if one is set.
    pub fn storage_class(&self) -> Option<StorageClass> {
        self.storage_class
    }

    fn open_url(
        url: &str,
        s3_options: &S3Options,
        part_size: usize,
        checksums: Option<ChecksumAlgorithm>,
    ) -> Result<Self, StoreError> {
        let parsed = Url::parse(url)
            .map_err(|e| StoreError::Config(format!("{url:?} is not a URL: {e}")))?;
        let backend = match parsed.scheme() {
            "s3" => Backend::s3(&parsed, url, s3_options, checksums)?,
            "file" => Backend::local(&parsed, url)?,
            "memory" => Backend {
                inner: Arc::new(InMemory::new()),
                bulk: None,
                s3: None,
                prefix: url_prefix(parsed.path())?,
                metadata: MetadataSupport::BesideObject,
            },
            other => {
                return Err(StoreError::Config(format!(
                    "unsupported store scheme {other:?} (use s3://, file:// or memory://)"
                )));
            }
        };
        Ok(Self {
            bulk: backend.bulk.unwrap_or_else(|| Arc::clone(&backend.inner)),
            inner: backend.inner,
            s3: backend.s3,
            prefix: backend.prefix,
            metadata: backend.metadata,
            part_size: part_size.max(1),
            description: redact_url(&parsed),
            sidecars: true,
            manifests: DEFAULT_MANIFESTS_PREFIX.into(),
            retention: None,
            storage_class: None,
            checksums: checksums.is_some() && parsed.scheme() == "s3",
            budget: MemoryBudget::default(),
        })
    }

    /// A printable name for the store (no credentials).
    pub fn description(&self) -> &str {
        &self.description
    }

    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// The store's own path for a key relative to the prefix.
    pub fn path(&self, key: &str) -> Result<Path, StoreError> {
        let full = match &self.prefix {
            Some(prefix) => format!("{prefix}/{key}"),
            None => key.to_owned(),
        };
        Path::parse(&full).map_err(|e| StoreError::Config(format!("key {key:?}: {e}")))
    }

    /// Removes the object at `key` (nothing when there is none): a body the pass stored but
    /// will not keep (an odd recording seen for the first time).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.inner.delete(&self.path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::classify(format!("deleting {key}"), e)),
        }
    }

    /// Size of the object at `key`, or `None` when there is none.
    pub async fn size_of(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self.inner.head(&self.path(key)?).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StoreError::classify(
                format!("reading the size of {key}"),
                e,
            )),
        }
    }

    /// Checks, before any work is claimed, that the store answers and lets us in, and that
    /// the bucket can hold the retention asked of it.
    pub async fn preflight(&self) -> Result<(), StoreError> {
        match self.inner.list_with_delimiter(self.prefix.as_ref()).await {
            Ok(_) => self.preflight_lock().await,
            Err(source @ object_store::Error::NotFound { .. }) => Err(StoreError::Refused {
                context: "listing the archive prefix (no such bucket?)".into(),
                source,
            }),
            Err(e) => Err(StoreError::classify("checking the store is reachable", e)),
        }
    }

    /// The underlying store, for verification and tests.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }
}

/// What a store URL's scheme opens: the clients, and where keys and metadata go.
struct Backend {
    inner: Arc<dyn ObjectStore>,
    /// The client multipart uploads go through, when it is not `inner` (see `Store::bulk`).
    bulk: Option<Arc<dyn ObjectStore>>,
    s3: Option<s3meta::S3Target>,
    prefix: Option<Path>,
    metadata: MetadataSupport,
}

impl Backend {
    /// `s3://bucket/prefix`, with the settings, region and endpoint `s3_options` give.
    fn s3(
        parsed: &Url,
        url: &str,
        s3_options: &S3Options,
        checksums: Option<ChecksumAlgorithm>,
    ) -> Result<Self, StoreError> {
        let bucket = parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| StoreError::Config(format!("{url}: no bucket")))?;
        let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
        for (key, value) in s3_options {
            let key: AmazonS3ConfigKey = key
                .parse()
                .map_err(|e| StoreError::Config(format!("{key}: {e}")))?;
            builder = builder.with_config(key, value);
        }
        let (region, endpoint) = s3_region_and_endpoint(s3_options)?;
        let builder = builder
            .with_retry(STORE_RETRY.clone())
            .with_region(&region)
            .with_allow_http(endpoint.scheme() == "http");
        let (s3, parts) = s3_clients(builder, checksums)?;
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(300))
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let target = s3meta::S3Target {
            s3: s3.clone(),
            endpoint,
            bucket: bucket.to_owned(),
            region,
            http,
            copy_headers: class::encryption_headers(s3_options).map_err(StoreError::Config)?,
        };
        Ok(Self {
            inner: s3,
            bulk: Some(parts),
            s3: Some(target),
            prefix: url_prefix(parsed.path())?,
            metadata: MetadataSupport::Attributes,
        })
    }

    /// `file:///path`: a local directory, created if missing.
    fn local(parsed: &Url, url: &str) -> Result<Self, StoreError> {
        let dir = parsed
            .to_file_path()
            .map_err(|()| StoreError::Config(format!("{url}: not a local path")))?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
        let local = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| StoreError::Config(e.to_string()))?
            .with_automatic_cleanup(true);
        Ok(Self {
            inner: Arc::new(local),
            bulk: None,
            s3: None,
            prefix: None,
            metadata: MetadataSupport::BesideObject,
        })
    }
}

/// The key prefix a URL's path names (`None` for an empty path).
fn url_prefix(path: &str) -> Result<Option<Path>, StoreError> {
    let p = path.trim_matches('/');
    (!p.is_empty())
        .then(|| Path::parse(p).map_err(|e| StoreError::Config(format!("bad prefix {p:?}: {e}"))))
        .transpose()
}

/// The S3 region and endpoint `s3_options` name, else `us-east-1` and AWS's endpoint for
/// the region.
fn s3_region_and_endpoint(s3_options: &S3Options) -> Result<(String, Url), StoreError> {
    let option = |names: &[&str]| {
        s3_options
            .iter()
            .find(|(k, _)| names.contains(&k.to_ascii_lowercase().as_str()))
            .map(|(_, v)| v.clone())
    };
    let region = option(&["aws_region", "aws_default_region", "region"])
        .unwrap_or_else(|| "us-east-1".into());
    let endpoint = option(&[
        "aws_endpoint",
        "aws_endpoint_url",
        "endpoint",
        "endpoint_url",
    ])
    .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    let endpoint = Url::parse(&endpoint)
        .map_err(|e| StoreError::Config(format!("S3 endpoint {endpoint:?}: {e}")))?;
    Ok((region, endpoint))
}

/// Which checksum a single PUT carries for the server to check (`--store-checksum-algorithm`).
/// Multipart parts always carry CRC64NVME with an unsigned payload (see `Store::bulk`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChecksumAlgorithm {
    /// `x-amz-checksum-crc64nvme` and an unsigned payload: the recording is hashed with
    /// SHA-256 once, by us, and the CRC costs little on either end (see BENCHMARKS.md).
    #[default]
    Crc64Nvme,
    /// `x-amz-checksum-sha256` over a signed payload: the server checks the same SHA-256
    /// the ledger records (computed twice here: ours and the request's).
    Sha256,
}

impl std::str::FromStr for ChecksumAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "crc64nvme" => Ok(Self::Crc64Nvme),
            "sha256" => Ok(Self::Sha256),
            other => Err(format!("{other:?}: the checksum is crc64nvme or sha256")),
        }
    }
}

/// The two S3 clients: the one for single PUTs and everything else (with the checksum
/// `checksums` names), and the one for multipart parts (see `Store::bulk`), the same one
/// when both carry CRC64NVME.
fn s3_clients(
    builder: AmazonS3Builder,
    checksums: Option<ChecksumAlgorithm>,
) -> Result<(Arc<AmazonS3>, Arc<dyn ObjectStore>), StoreError> {
    use object_store::aws::Checksum;
    let build = |builder: AmazonS3Builder| {
        builder
            .build()
            .map(Arc::new)
            .map_err(|e| StoreError::Config(e.to_string()))
    };
    let crc = |builder: AmazonS3Builder| {
        builder
            .with_unsigned_payload(true)
            .with_checksum_algorithm(Checksum::CRC64NVME)
    };
    match checksums {
        Some(ChecksumAlgorithm::Crc64Nvme) => {
            let s3 = build(crc(builder))?;
            let parts: Arc<dyn ObjectStore> = s3.clone();
            Ok((s3, parts))
        }
        Some(ChecksumAlgorithm::Sha256) => {
            let parts: Arc<dyn ObjectStore> = build(crc(builder.clone()))?;
            Ok((
                build(builder.with_checksum_algorithm(Checksum::SHA256))?,
                parts,
            ))
        }
        // Without checksums the signature is what covers the bytes.
        None => {
            let s3 = build(builder)?;
            let parts: Arc<dyn ObjectStore> = s3.clone();
            Ok((s3, parts))
        }
    }
}

fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    shown.set_query(None);
    shown.to_string()
}
