//! Each shared group of flags (`cli::groups`) turned into the one domain value it stands
//! for, here and nowhere else: the call-choosing flags into the ledger's `CallQuery` or a
//! run's `Slice`, the store flags into a `StoreConfig`, the provider flags into a
//! `ProviderConfig` and its downloader's settings, the ledger flags into `LedgerSettings`.
//! A wrong value is a `ConfigError` naming the flag.

use std::sync::Arc;

use chrono::{DateTime, FixedOffset, Utc};
use secrecy::ExposeSecret;
use url::Url;

use crate::cli::{
    ArchiveStoreArgs, CallSelection, CallSlice, CallTimes, CompanyArg, LayoutArgs, LedgerArgs,
    ManifestsArgs, ProviderArgs, RetentionArgs, StoreArgs, Window,
};
use crate::config::{CONNECT_TIMEOUT, ConfigError, LedgerSettings, TOKEN_MAX_AGE};
use crate::domain::CallUuid;
use crate::ledger::{CallQuery, PhoneNumber, Slice};
use crate::provider::{DownloadPolicy, DownloaderSettings, Pace, ProviderConfig};
use crate::store::{KeyTemplate, RetentionPolicy, S3Options, StoreConfig};
use crate::timefmt::parse_bound;

impl LedgerArgs {
    pub fn settings(&self) -> LedgerSettings {
        LedgerSettings {
            location: self.location.clone(),
            busy_timeout: self.ledger_busy_timeout,
        }
    }
}

/// A flag's text, trimmed; `None` when empty.
fn text(raw: &Option<String>) -> Option<String> {
    raw.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

pub fn call_uuid(raw: &str) -> Result<CallUuid, ConfigError> {
    CallUuid::parse(raw).ok_or_else(|| ConfigError(format!("{raw:?} is not a call uuid")))
}

/// A window of call starts: from (inclusive), to (exclusive); open where `None`.
pub type Bounds = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

impl<W: Window> CallTimes<W> {
    /// `--since` (from the start of a date) and `--until` (to the end of a date), in the
    /// provider's zone `tz`; the first must come before the second.
    pub fn bounds(&self, tz: FixedOffset) -> Result<Bounds, ConfigError> {
        let bound = |raw: &Option<String>, flag: &str, upper: bool| {
            text(raw)
                .map(|r| {
                    parse_bound(&r, tz, upper).map_err(|e| ConfigError(format!("--{flag}: {e}")))
                })
                .transpose()
        };
        let since = bound(&self.since, "since", false)?;
        let until = bound(&self.until, "until", true)?;
        if let (Some(since), Some(until)) = (since, until)
            && since >= until
        {
            return Err(ConfigError("--since must come before --until".into()));
        }
        Ok((since, until))
    }
}

impl<W: Window> CompanyArg<W> {
    pub fn company(&self) -> Option<String> {
        text(&self.company)
    }
}

impl<W: Window> CallSlice<W> {
    pub fn slice(&self, tz: FixedOffset) -> Result<Slice, ConfigError> {
        let (since, until) = self.times.bounds(tz)?;
        Ok(Slice {
            company: self.company.company(),
            since,
            until,
        })
    }
}

impl CallSelection {
    /// The calls these flags choose, as the ledger's one query; the rest of it (agent,
    /// states, page) is left at its default.
    pub fn query(&self, tz: FixedOffset) -> Result<CallQuery, ConfigError> {
        let slice = self.slice.slice(tz)?;
        let number = match self.number.as_deref() {
            None => None,
            Some(raw) => Some(PhoneNumber::parse(raw).ok_or_else(|| {
                ConfigError(format!(
                    "--number {raw:?} has no digits: give the number or its last digits"
                ))
            })?),
        };
        Ok(CallQuery {
            number,
            extension: text(&self.extension),
            company: slice.company,
            since: slice.since,
            until: slice.until,
            uuids: self
                .uuid
                .iter()
                .map(|u| call_uuid(u))
                .collect::<Result<Vec<_>, _>>()?,
            ..CallQuery::default()
        })
    }
}

impl StoreArgs {
    /// The store these flags name with the S3 settings `s3`, laid out by default.
    pub fn config(&self, s3: &S3Options) -> Result<StoreConfig, ConfigError> {
        let url = self
            .store
            .as_deref()
            .ok_or_else(|| ConfigError("store is not set (--store or CALLVAULT_STORE)".into()))?;
        Ok(StoreConfig {
            s3: s3.clone(),
            ..StoreConfig::new(url)
        })
    }
}

impl ManifestsArgs {
    pub fn apply(&self, store: StoreConfig) -> StoreConfig {
        StoreConfig {
            manifests_prefix: self.manifests_prefix.clone(),
            ..store
        }
    }
}

impl LayoutArgs {
    pub fn apply(&self, store: StoreConfig) -> StoreConfig {
        self.manifests.apply(StoreConfig {
            sidecars: self.sidecars(),
            ..store
        })
    }
}

impl RetentionArgs {
    /// `--retention-mode` and `--retain-for` as a policy (clap makes them go together).
    pub fn policy(&self) -> Result<Option<RetentionPolicy>, ConfigError> {
        match (&self.retention_mode, &self.retain_for) {
            (Some(mode), Some(retain_for)) => Ok(Some(RetentionPolicy {
                mode: mode.parse().map_err(ConfigError)?,
                retain_for: retain_for.parse().map_err(ConfigError)?,
            })),
            (None, None) => Ok(None),
            _ => Err(ConfigError(
                "--retention-mode and --retain-for go together: give both or neither".into(),
            )),
        }
    }
}

impl ArchiveStoreArgs {
    /// The store settings of a command that reads or changes archived objects without
    /// writing recordings (`get`, `hold`, `erase`, `verify`, …): its own store flag, layout
    /// and retention, with each account's table on top. Its key template is unknown here
    /// (the objects' keys are in the ledger), so it is taken to separate accounts: two
    /// accounts in one store are then told apart by the place alone, as `run` checked them.
    pub fn for_objects(
        store: &StoreArgs,
        layout: Option<&LayoutArgs>,
        retention: Option<&RetentionArgs>,
    ) -> Self {
        Self {
            store: store.clone(),
            key_template: crate::accounts::ACCOUNT_PLACEHOLDER.to_owned(),
            part_size_mib: 8,
            memory_budget_mib: 128,
            storage_class: None,
            store_checksums: true,
            store_checksum_algorithm: "crc64nvme".to_owned(),
            layout: layout.cloned().unwrap_or_else(|| LayoutArgs {
                sidecar: true,
                no_sidecar: false,
                manifests: ManifestsArgs {
                    manifests_prefix: crate::store::DEFAULT_MANIFESTS_PREFIX.to_owned(),
                },
            }),
            retention: retention.cloned().unwrap_or_default(),
        }
    }

    /// The memory budget `--memory-budget-mib` sets; a run shares one among its accounts.
    pub fn memory_budget(&self) -> crate::store::MemoryBudget {
        crate::store::MemoryBudget::new(
            usize::try_from(self.memory_budget_mib).unwrap_or(usize::MAX) * 1024 * 1024,
        )
    }

    /// The store a run writes to, laid out and locked as the flags say.
    pub fn config(&self, s3: &S3Options) -> Result<StoreConfig, ConfigError> {
        let store = self.layout.apply(self.store.config(s3)?);
        Ok(StoreConfig {
            part_size: usize::from(self.part_size_mib) * 1024 * 1024,
            memory_budget: self.memory_budget(),
            checksums: self.store_checksums,
            checksum_algorithm: self.store_checksum_algorithm.parse().map_err(ConfigError)?,
            retention: self.retention.policy()?,
            storage_class: self
                .storage_class
                .as_deref()
                .filter(|c| !c.trim().is_empty())
                .map(str::parse)
                .transpose()
                .map_err(ConfigError)?,
            ..store
        })
    }

    pub fn keys(&self, tz: FixedOffset) -> Result<KeyTemplate, ConfigError> {
        KeyTemplate::parse(&self.key_template, tz).map_err(|e| ConfigError(e.to_string()))
    }
}

impl ProviderArgs {
    /// How to reach and log in to the provider; every one of these must be set.
    pub fn config(&self, tz: FixedOffset) -> Result<ProviderConfig, ConfigError> {
        let missing =
            |what: &str, var: &str| ConfigError(format!("{what} is not set (--{what} or {var})"));
        let api_url = self
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
        let appid = self
            .appid
            .clone()
            .filter(|a| !a.trim().is_empty())
            .ok_or_else(|| missing("appid", "CALLVAULT_APPID"))?;
        let accesskey = self
            .accesskey
            .clone()
            .filter(|a| !a.expose_secret().is_empty())
            .ok_or_else(|| missing("accesskey", "CALLVAULT_ACCESSKEY"))?;
        Ok(ProviderConfig {
            api_url,
            appid,
            accesskey,
            api_timeout: self.api_timeout,
            connect_timeout: CONNECT_TIMEOUT,
            token_max_age: TOKEN_MAX_AGE,
            tz,
            pace: Arc::new(Pace::new(self.api_rate)),
        })
    }

    /// The download policy (the API's host plus the allowed hosts, the allowed networks)
    /// and proxy.
    pub fn downloader(&self, api_url: &Url) -> Result<DownloaderSettings, ConfigError> {
        let policy =
            DownloadPolicy::new(api_url, &self.download_host, &self.allow_download_network)
                .map_err(ConfigError)?;
        let proxy = text(&self.download_proxy)
            .map(|p| {
                Url::parse(&p)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        ConfigError("CALLVAULT_DOWNLOAD_PROXY is not an http(s) URL".into())
                    })
            })
            .transpose()?;
        Ok(DownloaderSettings {
            connect_timeout: CONNECT_TIMEOUT,
            stall_timeout: self.stall_timeout,
            policy,
            proxy,
        })
    }
}
