//! Settings: validated from the command line and environment (flags > environment >
//! defaults) into the dependencies and options a run needs. Secrets stay wrapped.

use std::sync::Arc;
use std::time::Duration;

use chrono::FixedOffset;
use secrecy::SecretString;
use url::Url;

use crate::archive::{Deps, RetryPolicy, RunOptions, Shutdown};
use crate::cli::{LayoutArgs, ProviderArgs, RunArgs};
use crate::ledger::{Ledger, LedgerOptions, Slice};
use crate::provider::{
    DownloadPolicy, Downloader, DownloaderSettings, ProviderClient, ProviderConfig,
};
use crate::store::{KeyTemplate, S3Options, Store};

/// A setting is missing or wrong: the user must fix the configuration (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// The provider's tokens live 12 hours; refresh a little before.
const TOKEN_MAX_AGE: Duration = Duration::from_secs(11 * 3600 + 30 * 60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn provider_tz(raw: &str) -> Result<FixedOffset, ConfigError> {
    crate::timefmt::parse_offset(raw)
        .map_err(|e| ConfigError(format!("CALLVAULT_PROVIDER_TZ: {e}")))
}

pub fn provider_config(
    args: &ProviderArgs,
    tz: FixedOffset,
) -> Result<ProviderConfig, ConfigError> {
    let missing =
        |what: &str, var: &str| ConfigError(format!("{what} is not set (--{what} or {var})"));
    let api_url = args
        .api_url
        .as_deref()
        .ok_or_else(|| missing("api-url", "CALLVAULT_API_URL"))?;
    let api_url = Url::parse(api_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| {
            ConfigError(format!(
                "CALLVAULT_API_URL {api_url:?} is not an http(s) URL"
            ))
        })?;
    let appid = args
        .appid
        .clone()
        .filter(|a| !a.trim().is_empty())
        .ok_or_else(|| missing("appid", "CALLVAULT_APPID"))?;
    let accesskey = args
        .accesskey
        .clone()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| missing("accesskey", "CALLVAULT_ACCESSKEY"))?;
    Ok(ProviderConfig {
        api_url,
        appid,
        accesskey: SecretString::from(accesskey),
        api_timeout: args.api_timeout,
        connect_timeout: CONNECT_TIMEOUT,
        token_max_age: TOKEN_MAX_AGE,
        tz,
    })
}

/// The download policy (API host plus allowed hosts, allowed networks) and proxy.
pub fn downloader_settings(
    args: &ProviderArgs,
    api_url: &Url,
) -> Result<DownloaderSettings, ConfigError> {
    let policy = DownloadPolicy::new(api_url, &args.download_host, &args.allow_download_network)
        .map_err(ConfigError)?;
    let proxy = args
        .download_proxy
        .as_deref()
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            Url::parse(p.trim())
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| ConfigError("CALLVAULT_DOWNLOAD_PROXY is not an http(s) URL".into()))
        })
        .transpose()?;
    Ok(DownloaderSettings {
        connect_timeout: CONNECT_TIMEOUT,
        stall_timeout: args.stall_timeout,
        policy,
        proxy,
    })
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

/// The `--since`/`--until`/`--company` slice of a run.
pub fn slice(args: &RunArgs, tz: FixedOffset) -> Result<Slice, ConfigError> {
    let bound = |raw: &Option<String>, name: &str, upper: bool| {
        raw.as_deref()
            .map(|r| {
                crate::timefmt::parse_bound(r, tz, upper)
                    .map_err(|e| ConfigError(format!("--{name}: {e}")))
            })
            .transpose()
    };
    let slice = Slice {
        company: args.company.clone().filter(|c| !c.trim().is_empty()),
        since: bound(&args.since, "since", false)?,
        until: bound(&args.until, "until", true)?,
    };
    if let (Some(since), Some(until)) = (slice.since, slice.until)
        && since >= until
    {
        return Err(ConfigError("--since must come before --until".into()));
    }
    Ok(slice)
}

/// Opens the store named by `--store`/`CALLVAULT_STORE`, laid out as `layout` says.
pub fn open_store(
    url: Option<&str>,
    layout: &LayoutArgs,
    part_size: usize,
    s3: &S3Options,
) -> Result<Store, ConfigError> {
    let url =
        url.ok_or_else(|| ConfigError("store is not set (--store or CALLVAULT_STORE)".into()))?;
    Store::open(url, s3, part_size)
        .and_then(|store| store.with_manifests_prefix(&layout.manifests_prefix))
        .map(|store| store.with_sidecars(layout.sidecars()))
        .map_err(|e| ConfigError(e.to_string()))
}

/// Opens the ledger at `url`: a ledger that cannot be reached is worth trying again later
/// (exit 1); any other failure to open it is a configuration error (exit 2).
pub async fn open_ledger(
    url: &str,
    busy_timeout: std::time::Duration,
) -> anyhow::Result<Ledger> {
    open_ledger_with(
        url,
        &LedgerOptions {
            busy_timeout,
            ..LedgerOptions::default()
        },
    )
    .await
}

/// [`open_ledger`] with every option; a pass sizes the PostgreSQL pool to its workers.
pub async fn open_ledger_with(url: &str, options: &LedgerOptions) -> anyhow::Result<Ledger> {
    match Ledger::open_with(url, options).await {
        Ok(ledger) => Ok(ledger),
        Err(e) if e.is_unavailable() => Err(anyhow::Error::new(e)),
        Err(e) => Err(ConfigError(e.to_string()).into()),
    }
}

/// Opens everything a run talks to.
pub async fn build_deps(
    ledger_url: &str,
    ledger_busy_timeout: std::time::Duration,
    args: &RunArgs,
    tz: FixedOffset,
    s3: &S3Options,
) -> anyhow::Result<Deps> {
    let provider = provider_config(&args.provider, tz)?;
    let store = open_store(
        args.store.as_deref(),
        &args.layout,
        usize::from(args.part_size_mib) * 1024 * 1024,
        s3,
    )?;
    let keys =
        KeyTemplate::parse(&args.key_template, tz).map_err(|e| ConfigError(e.to_string()))?;
    let downloader = Downloader::new(downloader_settings(&args.provider, &provider.api_url)?)
        .map_err(|e| ConfigError(e.to_string()))?;
    let provider = Arc::new(ProviderClient::new(provider).map_err(|e| ConfigError(e.to_string()))?);
    // One connection per worker, plus the lease renewer, the manifest writer and a spare.
    let options = LedgerOptions {
        busy_timeout: ledger_busy_timeout,
        max_connections: u32::from(args.concurrency).saturating_add(4),
    };
    let ledger = open_ledger_with(ledger_url, &options).await?;
    Ok(Deps {
        ledger,
        provider,
        downloader,
        store,
        keys,
    })
}

/// The options of one pass, from the command line.
pub fn run_options(
    args: &RunArgs,
    store_description: &str,
    slice: Slice,
    shutdown: Shutdown,
) -> RunOptions {
    RunOptions {
        concurrency: usize::from(args.concurrency),
        max_records: args.max_records,
        deadline: args.deadline,
        dry_run: args.dry_run,
        lease: args.lease.max(Duration::from_secs(1)),
        retry: RetryPolicy {
            attempts_per_run: args.attempts_per_run,
            base_delay: args.retry_delay,
            ..RetryPolicy::default()
        },
        retention: chrono::Duration::days(i64::from(args.retention_days)),
        slice,
        grace: args.grace,
        shutdown,
        host: hostname(),
        progress: Default::default(),
        description: serde_json::json!({
            "concurrency": args.concurrency,
            "max_records": args.max_records,
            "deadline": args.deadline.map(|d| humantime::format_duration(d).to_string()),
            "lease": humantime::format_duration(args.lease).to_string(),
            "key_template": args.key_template,
            "store": store_description,
            "sidecar": args.layout.sidecars(),
            "manifests_prefix": args.layout.manifests_prefix,
            "company": args.company,
            "since": args.since,
            "until": args.until,
            "version": env!("CARGO_PKG_VERSION"),
        }),
    }
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
