//! Settings, typed: what the command line, the environment and the configuration file
//! (flags > environment > file > defaults) come to once validated, and the built-in
//! defaults beside them. `app` turns arguments into these and opens what they name.
//! Secrets stay wrapped.

use std::time::Duration;

use chrono::FixedOffset;

use crate::ledger::Slice;
use crate::provider::{DownloaderSettings, ProviderConfig};
use crate::store::{KeyTemplate, S3Options, StoreConfig};

/// A setting is missing or wrong: the user must fix the configuration (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// The provider's tokens live 12 hours; refresh a little before.
pub const TOKEN_MAX_AGE: Duration = Duration::from_secs(11 * 3600 + 30 * 60);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The ledger to open.
#[derive(Debug, Clone)]
pub struct LedgerSettings {
    /// `sqlite://path/to/ledger.db`.
    pub url: String,
    /// How long a write waits for another process's lock before it fails.
    pub busy_timeout: Duration,
}

/// The settings every command shares.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    pub ledger: LedgerSettings,
    /// The provider's zone for its zone-less times.
    pub tz: FixedOffset,
    /// The configuration file's `[aws]` settings overridden by the `AWS_*` variables.
    pub s3: S3Options,
}

/// What an archival pass talks to besides the ledger, validated but not yet opened.
pub struct PassSettings {
    pub provider: ProviderConfig,
    pub downloader: DownloaderSettings,
    pub store: StoreConfig,
    pub keys: KeyTemplate,
}

pub fn provider_tz(raw: &str) -> Result<FixedOffset, ConfigError> {
    crate::timefmt::parse_offset(raw)
        .map_err(|e| ConfigError(format!("CALLVAULT_PROVIDER_TZ: {e}")))
}

/// The standard `AWS_*` variables, as object_store's S3 settings. Read here, at the edge.
pub fn s3_options_from_env() -> S3Options {
    s3_options(&[])
}

/// The config file's `[aws]` settings overridden by the `AWS_*` variables.
pub fn s3_options(file: &[(String, String)]) -> S3Options {
    let mut merged: std::collections::BTreeMap<String, String> = file.iter().cloned().collect();
    merged.extend(
        std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .filter(|(k, _)| k.parse::<object_store::aws::AmazonS3ConfigKey>().is_ok()),
    );
    merged.into_iter().collect()
}

/// The slice of a run, from `--company`, `--since` and `--until` as written (dates or
/// times in the provider's zone `tz`).
pub fn slice(
    company: Option<&str>,
    since: Option<&str>,
    until: Option<&str>,
    tz: FixedOffset,
) -> Result<Slice, ConfigError> {
    let bound = |raw: Option<&str>, name: &str, upper: bool| {
        raw.map(|r| {
            crate::timefmt::parse_bound(r, tz, upper)
                .map_err(|e| ConfigError(format!("--{name}: {e}")))
        })
        .transpose()
    };
    let slice = Slice {
        company: company.filter(|c| !c.trim().is_empty()).map(str::to_owned),
        since: bound(since, "since", false)?,
        until: bound(until, "until", true)?,
    };
    if let (Some(since), Some(until)) = (slice.since, slice.until)
        && since >= until
    {
        return Err(ConfigError("--since must come before --until".into()));
    }
    Ok(slice)
}

/// This machine's name (a pod's name on Kubernetes), for the runs table.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
