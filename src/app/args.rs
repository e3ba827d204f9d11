//! The command line, read: the arguments parsed with the configuration file's settings as
//! their defaults, then turned into typed settings (`crate::config`). `cli`, `config` and
//! `config_file` meet here so that none of them needs another.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use chrono::FixedOffset;
use clap::{CommandFactory, FromArgMatches};
use secrecy::SecretString;
use url::Url;

use crate::archive::{RetryPolicy, RunOptions, Shutdown};
use crate::cli::{Cli, ProviderArgs, RunArgs, VerifyArgs};
use crate::config::{
    CONNECT_TIMEOUT, CommonSettings, ConfigError, LedgerSettings, PassSettings, TOKEN_MAX_AGE,
    hostname, provider_tz, s3_options,
};
use crate::config_file::{FileSettings, config_path};
use crate::ledger::Slice;
use crate::provider::{DownloadPolicy, DownloaderSettings, Pace, ProviderConfig};
use crate::store::{KeyTemplate, S3Options, StoreConfig};

/// A command line with the configuration file applied.
#[derive(Debug)]
pub struct Invocation {
    pub cli: Cli,
    /// The configuration file's S3 settings (`[aws]`), under the environment's.
    pub file_aws: S3Options,
}

/// Why the command line could not be taken.
#[derive(Debug)]
pub enum CliError {
    /// clap's own message (usage, `--help`, `--version`): print it and exit as clap says.
    Usage(clap::Error),
    /// The configuration file is unreadable or wrong.
    Config(ConfigError),
}

/// Parses `args` with the configuration file's settings (from `--config` or
/// `CALLVAULT_CONFIG`) as the arguments' defaults.
pub fn parse(args: Vec<OsString>) -> Result<Invocation, CliError> {
    let file = match config_path(&args) {
        Some(path) => FileSettings::load(&path).map_err(file_error)?,
        None => FileSettings::default(),
    };
    parse_with_file(file, args)
}

/// Parses `args` with `file`'s settings as the arguments' defaults.
fn parse_with_file<I, T>(file: FileSettings, args: I) -> Result<Invocation, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let command = file.apply(Cli::command()).map_err(file_error)?;
    let matches = command
        .try_get_matches_from(args)
        .map_err(CliError::Usage)?;
    let cli = Cli::from_arg_matches(&matches).map_err(CliError::Usage)?;
    Ok(Invocation {
        cli,
        file_aws: file.aws,
    })
}

fn file_error(e: crate::config_file::FileError) -> CliError {
    CliError::Config(ConfigError(e.to_string()))
}

/// The global options, typed; the S3 settings merged with the `AWS_*` variables.
pub fn common_settings(
    cli: &Cli,
    file_aws: &[(String, String)],
) -> Result<CommonSettings, ConfigError> {
    Ok(CommonSettings {
        tz: provider_tz(&cli.provider_tz)?,
        ledger: LedgerSettings {
            url: cli.ledger.clone(),
            busy_timeout: cli.ledger_busy_timeout,
        },
        s3: s3_options(file_aws),
    })
}

/// Everything but the ledger that a pass opens, validated.
pub fn pass_settings(args: &RunArgs, common: &CommonSettings) -> Result<PassSettings, ConfigError> {
    let provider = provider_config(&args.provider, common.tz)?;
    let store = run_store(args, &common.s3)?;
    let keys = KeyTemplate::parse(&args.key_template, common.tz)
        .map_err(|e| ConfigError(e.to_string()))?;
    let downloader = downloader_settings(&args.provider, &provider.api_url)?;
    Ok(PassSettings {
        provider,
        downloader,
        store,
        keys,
    })
}

/// The `--since`/`--until`/`--company` slice of a run.
pub fn slice(args: &RunArgs, tz: FixedOffset) -> Result<Slice, ConfigError> {
    crate::config::slice(
        args.company.as_deref(),
        args.since.as_deref(),
        args.until.as_deref(),
        tz,
    )
}

/// The store a run writes to, laid out as `--sidecar` and `--manifests-prefix` say.
pub fn run_store(args: &RunArgs, s3: &S3Options) -> Result<StoreConfig, ConfigError> {
    Ok(StoreConfig {
        s3: s3.clone(),
        part_size: usize::from(args.part_size_mib) * 1024 * 1024,
        checksums: args.store_checksums,
        sidecars: args.layout.sidecars(),
        manifests_prefix: args.layout.manifests_prefix.clone(),
        retention: retention_policy(&args.retention)?,
        storage_class: args
            .storage_class
            .as_deref()
            .filter(|c| !c.trim().is_empty())
            .map(str::parse)
            .transpose()
            .map_err(ConfigError)?,
        ..StoreConfig::new(store_url(args.store.as_deref())?)
    })
}

/// The store `verify` reads back (the part size matters only for writing).
pub fn verify_store(args: &VerifyArgs, s3: &S3Options) -> Result<StoreConfig, ConfigError> {
    Ok(StoreConfig {
        s3: s3.clone(),
        manifests_prefix: args.manifests_prefix.clone(),
        retention: retention_policy(&args.retention)?,
        ..StoreConfig::new(store_url(args.store.as_deref())?)
    })
}

/// The store `ledger rebuild --from-store` reads.
pub fn rebuild_store(
    args: &crate::cli::LedgerRebuildArgs,
    s3: &S3Options,
) -> Result<StoreConfig, ConfigError> {
    Ok(StoreConfig {
        s3: s3.clone(),
        manifests_prefix: args.manifests_prefix.clone(),
        ..StoreConfig::new(store_url(args.store.as_deref())?)
    })
}

/// The store `hold`, `release` and `erase` act on, laid out as `run` writes it.
pub fn retention_store(
    args: &crate::cli::RetentionStoreArgs,
    s3: &S3Options,
) -> Result<StoreConfig, ConfigError> {
    Ok(StoreConfig {
        s3: s3.clone(),
        sidecars: args.layout.sidecars(),
        manifests_prefix: args.layout.manifests_prefix.clone(),
        ..StoreConfig::new(store_url(args.store.as_deref())?)
    })
}

/// The calls `--uuid`, `--company`, `--since`/`--until`, `--number` and `--extension`
/// choose, as the ledger's one query, read as `find` reads the same flags.
pub fn selection(
    args: &crate::cli::CallSelectArgs,
    tz: FixedOffset,
) -> Result<crate::retention::Selection, ConfigError> {
    super::retrieve::chosen_calls(
        &args.uuids,
        &args.company,
        (&args.since, &args.until),
        &args.number,
        &args.extension,
        tz,
    )
    .map(crate::retention::Selection::new)
}

/// `--retention-mode` and `--retain-for` as a policy (clap makes them go together).
pub fn retention_policy(
    args: &crate::cli::RetentionArgs,
) -> Result<Option<crate::store::RetentionPolicy>, ConfigError> {
    match (&args.retention_mode, &args.retain_for) {
        (Some(mode), Some(retain_for)) => Ok(Some(crate::store::RetentionPolicy {
            mode: mode.parse().map_err(ConfigError)?,
            retain_for: retain_for.parse().map_err(ConfigError)?,
        })),
        (None, None) => Ok(None),
        _ => Err(ConfigError(
            "--retention-mode and --retain-for go together: give both or neither".into(),
        )),
    }
}

/// `--store`/`CALLVAULT_STORE`, which has no default.
fn store_url(url: Option<&str>) -> Result<&str, ConfigError> {
    url.ok_or_else(|| ConfigError("store is not set (--store or CALLVAULT_STORE)".into()))
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
        pace: Arc::new(Pace::new(args.api_rate)),
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
            give_up_answers: args.give_up_answers,
            give_up_window: args.give_up_window,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;

    /// Parses `args` with `file` as the configuration file.
    fn parse_with(file: &str, args: &[&str]) -> Result<Invocation, String> {
        let settings = FileSettings::parse(file).map_err(|e| e.to_string())?;
        parse_with_file(settings, args.iter().copied()).map_err(|e| match e {
            CliError::Usage(e) => e.to_string(),
            CliError::Config(e) => e.to_string(),
        })
    }

    #[test]
    fn file_values_fill_in_and_flags_win() {
        let file = "concurrency = 3\nstore = \"file:///tmp/x\"\ndry-run = true\n[aws]\nregion = \"eu-1\"\n";
        let parsed = parse_with(file, &["callvault", "run", "--concurrency", "5"]).unwrap();
        let Command::Run(run) = parsed.cli.command else {
            panic!("not run")
        };
        assert_eq!(run.concurrency, 5);
        assert_eq!(run.store.as_deref(), Some("file:///tmp/x"));
        assert!(run.dry_run);
        assert_eq!(
            parsed.file_aws,
            [("aws_region".to_owned(), "eu-1".to_owned())]
        );
    }

    #[test]
    fn a_global_setting_reaches_every_subcommand() {
        let parsed = parse_with("ledger = \"sqlite://f.db\"", &["callvault", "status"]).unwrap();
        assert_eq!(parsed.cli.ledger, "sqlite://f.db");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = parse_with("concurency = 3", &["callvault", "status"]).unwrap_err();
        assert!(err.contains("unknown setting `concurency`"), "{err}");
        let err = parse_with("[aws]\nbogus = 1", &["callvault", "status"]).unwrap_err();
        assert!(err.contains("aws.bogus"), "{err}");
        let err = parse_with("concurrency = \"many\"", &["callvault", "run"]).unwrap_err();
        assert!(err.contains("many"), "{err}");
        assert!(parse_with("config = \"x\"", &["callvault", "status"]).is_err());
    }

    #[test]
    fn the_layout_may_come_from_a_file_but_retrys_choice_may_not() {
        let parsed = parse_with(
            "sidecar = false\nmanifests-prefix = \"audit\"",
            &["callvault", "run"],
        )
        .unwrap();
        let Command::Run(run) = parsed.cli.command else {
            unreachable!()
        };
        assert!(!run.layout.sidecars());
        assert_eq!(run.layout.manifests_prefix, "audit");
        for choice in ["all = true", "uuid = [\"a\"]", "retry-error-code = \"x\""] {
            assert!(
                parse_with(choice, &["callvault", "retry"]).is_err(),
                "{choice}"
            );
        }
        assert!(
            parse_with("", &["callvault", "retry"]).is_err(),
            "a choice is required"
        );
        let parsed = parse_with("", &["callvault", "retry", "--error-code", "x"]).unwrap();
        let Command::Retry(retry) = parsed.cli.command else {
            unreachable!()
        };
        assert_eq!(retry.error_code.as_deref(), Some("x"));
    }

    #[test]
    fn a_runs_layout_reaches_its_store_config() {
        let parsed = parse_with(
            "sidecar = false\nmanifests-prefix = \"audit\"\nstore = \"memory:///x\"",
            &["callvault", "run", "--part-size-mib", "16"],
        )
        .unwrap();
        let Command::Run(run) = parsed.cli.command else {
            unreachable!()
        };
        let s3 = vec![("aws_region".to_owned(), "eu-1".to_owned())];
        let store = run_store(&run, &s3).unwrap();
        assert_eq!(store.url, "memory:///x");
        assert_eq!(store.s3, s3);
        assert_eq!(store.part_size, 16 << 20);
        assert!(!store.sidecars);
        assert_eq!(store.manifests_prefix, "audit");
    }
}
