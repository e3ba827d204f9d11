//! Settings, typed: what the command line, the environment and the configuration file
//! (flags > environment > file > defaults) come to once validated, and the built-in
//! defaults beside them. `app` turns arguments into these and opens what they name.
//! Secrets stay wrapped.

use std::fmt;
use std::time::Duration;

use chrono::FixedOffset;
use secrecy::{ExposeSecret, SecretString};

use crate::provider::{DownloaderSettings, ProviderConfig};
use crate::store::{KeyTemplate, S3Options, ShownS3, StoreConfig};

/// A setting is missing or wrong: the user must fix the configuration (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// The provider's tokens live 12 hours; refresh a little before.
pub const TOKEN_MAX_AGE: Duration = Duration::from_secs(11 * 3600 + 30 * 60);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the ledger is: `sqlite://path` or `postgres://user:password@host/db`. The whole
/// location is kept as a secret (a PostgreSQL URL may carry a password); it is shown only
/// with the password replaced by `***`, in `Display` and `Debug` alike, and handed out
/// whole only to open the ledger.
#[derive(Clone)]
pub struct LedgerLocation(SecretString);

impl LedgerLocation {
    pub fn new(location: &str) -> Self {
        Self(SecretString::from(location))
    }

    /// The location with its password: for opening the ledger, never for showing.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The location as it may be shown: a password in the user part or in a
    /// `password=` parameter replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_location(self.expose())
    }
}

/// `location` without its password: `crate::ledger::redact_location` for the user part,
/// and a `password` query parameter (which libpq and sqlx also accept) hidden too.
fn redact_location(location: &str) -> String {
    let shown = crate::ledger::redact_location(location);
    match url::Url::parse(&shown) {
        Ok(mut url) if url.query_pairs().any(|(k, _)| is_password_key(&k)) => {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if is_password_key(&k) {
                        "***".into()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
            url.to_string()
        }
        Ok(_) => shown,
        // Not a URL (a key=value connection string?): nothing of it is shown but its scheme.
        Err(_) if location.to_ascii_lowercase().contains("password") => {
            let scheme = location.split(':').next().unwrap_or("ledger");
            format!("{scheme}:(a location with a password, not shown)")
        }
        Err(_) => shown,
    }
}

fn is_password_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("sslpassword")
}

impl fmt::Display for LedgerLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for LedgerLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LedgerLocation")
            .field(&self.redacted())
            .finish()
    }
}

/// The ledger to open.
#[derive(Debug, Clone)]
pub struct LedgerSettings {
    pub location: LedgerLocation,
    /// How long a write waits for another process's lock before it fails.
    pub busy_timeout: Duration,
}

/// The settings every command shares.
#[derive(Clone)]
pub struct CommonSettings {
    pub ledger: LedgerSettings,
    /// The provider's zone for its zone-less times.
    pub tz: FixedOffset,
    /// The configuration file's `[aws]` settings overridden by the `AWS_*` variables.
    pub s3: S3Options,
    /// The provider accounts the configuration file declares, as declared (their secrets
    /// by reference); none means the top-level settings form the one account `default`.
    pub accounts: Vec<(crate::accounts::AccountName, crate::accounts::AccountTable)>,
}

impl fmt::Debug for CommonSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommonSettings")
            .field("ledger", &self.ledger)
            .field("tz", &self.tz)
            .field("s3", &ShownS3(&self.s3))
            .field("accounts", &self.accounts)
            .finish()
    }
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

/// This machine's name (a pod's name on Kubernetes), for the runs table.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
