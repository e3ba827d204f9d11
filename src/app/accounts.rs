//! A command's provider accounts: each `[accounts.<name>]` table merged with the command's
//! top-level settings (flags > environment > file > defaults), what an account's own table
//! sets winning for that account; without any table, the top-level settings themselves as
//! the one account `default`. Also the `accounts` command, which shows them and checks each.
//!
//! The merge is done on the command line's groups (`ProviderArgs`, `ArchiveStoreArgs`) so
//! that an account's settings are validated, and refused with the same words, as the top
//! level's; an error about a declared account names it. Secrets named by reference are read
//! only when a command needs them (a web page's pod need not hold the provider's keys).

use std::fmt::Display;

use chrono::FixedOffset;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::accounts::{
    AccountName, AccountTable, AwsSetting, Destination, SecretRef, check_destinations,
};
use crate::cli::{
    AccountArgs, AccountsArgs, AccountsCommand, AccountsRenameArgs, ArchiveStoreArgs, CallbackArgs,
    ProviderArgs,
};
use crate::config::{CommonSettings, ConfigError, PassSettings};
use crate::ledger::Renamed;
use crate::provider::{ProviderClient, ProviderConfig, ProviderError};
use crate::store::{KeyTemplate, S3Options, ShownS3, StoreConfig, StoreError};

use super::wiring::open_store;
use super::{EXIT_CONFIG, EXIT_CREDENTIALS, EXIT_INCOMPLETE, EXIT_OK};

/// One account's settings: the top level's with its table's on top.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: AccountName,
    /// Declared by a table (false: the top-level settings as the account `default`).
    pub declared: bool,
    /// Its share of the transfers when other accounts have work too.
    pub share: u32,
    /// `None` for a command that never talks to the provider (`get`, `erase`, …).
    provider: Option<ProviderArgs>,
    accesskey: Option<SecretRef>,
    /// `None` for a command that writes nothing to a store (`sync`).
    store: Option<ArchiveStoreArgs>,
    /// The top level's S3 settings (file `[aws]` under the `AWS_*` variables) …
    s3: S3Options,
    /// … and the account's own `[accounts.<name>.aws]`, which win.
    aws: Vec<(String, AwsSetting)>,
    callback_secret: Option<SecretString>,
    callback_ref: Option<SecretRef>,
    /// Shares its store and prefix with another account (both keys carry `{account}`): its
    /// manifest chain then goes below a prefix of its own.
    shares_store: bool,
}

/// The top-level settings of the command at hand, as its flags give them.
pub struct TopLevel<'a> {
    /// The provider flags, for the commands that talk to the provider.
    pub provider: Option<&'a ProviderArgs>,
    /// The store flags, for the commands that have them.
    pub store: Option<&'a ArchiveStoreArgs>,
    pub callback: Option<&'a CallbackArgs>,
}

/// The accounts a command works on: those named with `--account`, else all. A name that is
/// not declared is a configuration error listing those that are.
pub fn accounts(
    common: &CommonSettings,
    top: &TopLevel<'_>,
    chosen: &AccountArgs,
) -> Result<Vec<Account>, ConfigError> {
    let mut all: Vec<Account> = if common.accounts.is_empty() {
        vec![Account::top_level(common, top)]
    } else {
        common
            .accounts
            .iter()
            .map(|(name, table)| Account::declared(common, top, name, table))
            .collect()
    };
    let destinations: Vec<Destination<'_>> = all
        .iter()
        .filter_map(|a| {
            let store = a.store.as_ref()?;
            Some(Destination {
                account: &a.name,
                store: store.store.store.as_deref()?,
                key_template: &store.key_template,
            })
        })
        .collect();
    let shared: Vec<AccountName> = check_destinations(&destinations)
        .map_err(|e| ConfigError(e.to_string()))?
        .into_iter()
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();
    for account in &mut all {
        account.shares_store = shared.contains(&account.name);
    }
    select(all, chosen)
}

/// The accounts a command that only reads the ledger works on: those named with
/// `--account`, else every declared one (`default` when none is declared).
pub fn names(
    common: &CommonSettings,
    chosen: &AccountArgs,
) -> Result<Vec<AccountName>, ConfigError> {
    let all = declared_names(common);
    Ok(named(&all, chosen)?.unwrap_or(all))
}

/// The accounts `--account` names (each a declared one), or `None` when it names none.
pub fn chosen_names(
    common: &CommonSettings,
    chosen: &AccountArgs,
) -> Result<Option<Vec<AccountName>>, ConfigError> {
    named(&declared_names(common), chosen)
}

/// The one account whose calls a command writes without talking to its provider or store
/// (`import`): the one named with `--account`, else the only one there is; with several
/// declared and none named, a configuration error naming them.
pub fn one_name(common: &CommonSettings, chosen: &AccountArgs) -> Result<AccountName, ConfigError> {
    let all = declared_names(common);
    match named(&all, chosen)?.as_deref() {
        None if all.len() == 1 => Ok(all[0].clone()),
        None => Err(ConfigError(format!(
            "{} accounts are declared ({}): name the one these calls belong to with --account",
            all.len(),
            listed(&all)
        ))),
        Some([one]) => Ok(one.clone()),
        Some(_) => Err(ConfigError(
            "name exactly one --account: these calls belong to one account".into(),
        )),
    }
}

/// Every account's name, in the settings file's order (`default` when none is declared).
fn declared_names(common: &CommonSettings) -> Vec<AccountName> {
    if common.accounts.is_empty() {
        vec![AccountName::default_account()]
    } else {
        common
            .accounts
            .iter()
            .map(|(name, _)| name.clone())
            .collect()
    }
}

fn listed(all: &[AccountName]) -> String {
    all.iter()
        .map(AccountName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The accounts `--account` names among `all`, each once, in the order named; `None` when
/// it names none. An unknown name is a configuration error listing the accounts there are.
fn named(
    all: &[AccountName],
    chosen: &AccountArgs,
) -> Result<Option<Vec<AccountName>>, ConfigError> {
    let mut picked: Vec<AccountName> = Vec::new();
    for raw in chosen
        .account
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
    {
        let Some(name) = all.iter().find(|a| a.as_str() == raw) else {
            return Err(ConfigError(format!(
                "--account {raw}: no such account (the accounts are {})",
                listed(all)
            )));
        };
        if !picked.contains(name) {
            picked.push(name.clone());
        }
    }
    Ok((!picked.is_empty()).then_some(picked))
}

fn select(all: Vec<Account>, chosen: &AccountArgs) -> Result<Vec<Account>, ConfigError> {
    let names: Vec<AccountName> = all.iter().map(|a| a.name.clone()).collect();
    let Some(picked) = named(&names, chosen)? else {
        return Ok(all);
    };
    Ok(all
        .into_iter()
        .filter(|a| picked.contains(&a.name))
        .collect())
}

impl Account {
    fn top_level(common: &CommonSettings, top: &TopLevel<'_>) -> Self {
        Self {
            name: AccountName::default_account(),
            declared: false,
            share: 1,
            provider: top.provider.cloned(),
            accesskey: None,
            store: top.store.cloned(),
            s3: common.s3.clone(),
            aws: Vec::new(),
            callback_secret: top.callback.and_then(|c| c.callback_secret.clone()),
            callback_ref: None,
            shares_store: false,
        }
    }

    fn declared(
        common: &CommonSettings,
        top: &TopLevel<'_>,
        name: &AccountName,
        table: &AccountTable,
    ) -> Self {
        let mut account = Self::top_level(common, top);
        account.name = name.clone();
        account.declared = true;
        let over = |mine: &Option<String>, top: &mut Option<String>| {
            if mine.is_some() {
                top.clone_from(mine);
            }
        };
        if let Some(p) = account.provider.as_mut() {
            over(&table.api_url, &mut p.api_url);
            over(&table.appid, &mut p.appid);
            if table.api_rate.is_some() {
                p.api_rate = table.api_rate;
            }
        }
        account.accesskey = table.accesskey.clone();
        if let Some(s) = account.store.as_mut() {
            over(&table.store, &mut s.store.store);
            if let Some(template) = &table.key_template {
                s.key_template.clone_from(template);
            }
            over(&table.storage_class, &mut s.storage_class);
            over(&table.retention_mode, &mut s.retention.retention_mode);
            over(&table.retain_for, &mut s.retention.retain_for);
        }
        account.share = table.share.unwrap_or(1);
        account.aws = table.aws.clone();
        account.callback_ref = table.callback_secret.clone();
        account
    }

    /// A configuration error about this account: named when it was declared (the implicit
    /// `default` account's errors read as they always have).
    fn error(&self, text: impl Display) -> ConfigError {
        if self.declared {
            ConfigError(format!("account `{}`: {text}", self.name))
        } else {
            ConfigError(text.to_string())
        }
    }

    /// A setting's own configuration error, as [`Account::error`] says it.
    fn named(&self, e: ConfigError) -> ConfigError {
        self.error(e.0)
    }

    /// How to reach and log in to this account's provider.
    pub fn provider(&self, tz: FixedOffset) -> Result<ProviderConfig, ConfigError> {
        let mut args = self.provider_args()?.clone();
        if let Some(r) = &self.accesskey {
            args.accesskey = Some(
                r.read()
                    .map_err(|e| self.error(format!("accesskey: {e}")))?,
            );
        }
        args.config(tz).map_err(|e| self.named(e))
    }

    /// The S3 settings: the top level's, with the account's own on top.
    pub fn s3(&self) -> Result<S3Options, ConfigError> {
        let mut merged: std::collections::BTreeMap<String, String> =
            self.s3.iter().cloned().collect();
        for (key, setting) in &self.aws {
            let value = match setting {
                AwsSetting::Value(v) => v.clone(),
                AwsSetting::Secret(r) => r
                    .read()
                    .map_err(|e| self.error(format!("aws.{key}: {e}")))?
                    .expose_secret()
                    .to_owned(),
            };
            merged.insert(key.clone(), value);
        }
        Ok(merged.into_iter().collect())
    }

    fn provider_args(&self) -> Result<&ProviderArgs, ConfigError> {
        self.provider
            .as_ref()
            .ok_or_else(|| self.error("this command has no provider settings"))
    }

    fn store_args(&self) -> Result<&ArchiveStoreArgs, ConfigError> {
        self.store
            .as_ref()
            .ok_or_else(|| self.error("this command has no store settings"))
    }

    /// The store this account's recordings go to, laid out, locked and classed as it says.
    pub fn store_config(&self) -> Result<StoreConfig, ConfigError> {
        let mut config = self
            .store_args()?
            .config(&self.s3()?)
            .map_err(|e| self.named(e))?;
        if self.shares_store {
            config.manifests_prefix = format!(
                "{}/{}",
                config.manifests_prefix.trim_end_matches('/'),
                self.name
            );
        }
        Ok(config)
    }

    /// This account's object keys (`{account}` is its name).
    pub fn keys(&self, tz: FixedOffset) -> Result<KeyTemplate, ConfigError> {
        Ok(self
            .store_args()?
            .keys(tz)
            .map_err(|e| self.named(e))?
            .for_account(&self.name))
    }

    /// The secret in this account's callback address, if it has one.
    pub fn callback_secret(&self) -> Result<Option<SecretString>, ConfigError> {
        match &self.callback_ref {
            Some(r) => r
                .read()
                .map(Some)
                .map_err(|e| self.error(format!("callback-secret: {e}"))),
            None => Ok(self.callback_secret.clone()),
        }
    }

    /// Everything but the ledger that a pass over this account opens.
    pub fn pass_settings(&self, tz: FixedOffset) -> Result<PassSettings, ConfigError> {
        let provider = self.provider(tz)?;
        let downloader = self
            .provider_args()?
            .downloader(&provider.api_url)
            .map_err(|e| self.named(e))?;
        Ok(PassSettings {
            provider,
            downloader,
            store: self.store_config()?,
            keys: self.keys(tz)?,
        })
    }

    /// The account's settings as they may be shown: secrets as set or unset, with where they
    /// are read from, never their values.
    fn shown(&self) -> serde_json::Value {
        let secret = |given: bool, from: Option<&SecretRef>| match from {
            Some(r) => match r.read() {
                Ok(_) => format!("set ({})", r.describe()),
                Err(e) => format!("unset: {e}"),
            },
            None if given => "set".to_owned(),
            None => "unset".to_owned(),
        };
        let p = self.provider.as_ref();
        let s = self.store.as_ref();
        let mut aws = serde_json::Map::new();
        for (k, v) in ShownS3::pairs(&self.s3) {
            aws.insert(k, json!(v));
        }
        for (key, setting) in &self.aws {
            let shown = match setting {
                AwsSetting::Value(v) if !ShownS3::is_secret(key) => v.clone(),
                AwsSetting::Value(_) => "set".to_owned(),
                AwsSetting::Secret(r) => secret(false, Some(r)),
            };
            aws.insert(key.clone(), json!(shown));
        }
        json!({
            "account": self.name,
            "declared": self.declared,
            "api_url": p.and_then(|p| p.api_url.clone()),
            "appid": p.and_then(|p| p.appid.clone()),
            "accesskey": secret(p.is_some_and(|p| p.accesskey.is_some()), self.accesskey.as_ref()),
            "api_rate": p.and_then(|p| p.api_rate),
            "store": s.and_then(|s| s.store.store.clone()),
            "key_template": s.map(|s| s.key_template.clone()),
            "manifests_prefix": self.store_config().ok().map(|c| c.manifests_prefix),
            "storage_class": s.and_then(|s| s.storage_class.clone()),
            "retention_mode": s.and_then(|s| s.retention.retention_mode.clone()),
            "retain_for": s.and_then(|s| s.retention.retain_for.clone()),
            "share": self.share,
            "callback_secret": secret(self.callback_secret.is_some(), self.callback_ref.as_ref()),
            "aws": aws,
        })
    }

    /// What this account lacks to archive: every setting a pass needs, checked.
    fn problems(&self, tz: FixedOffset) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = self.provider(tz) {
            problems.push(e.0);
        }
        if let Err(e) = self.store_config() {
            problems.push(e.0);
        }
        if let Err(e) = self.keys(tz) {
            problems.push(e.0);
        }
        if let Err(e) = self.callback_secret() {
            problems.push(e.0);
        }
        problems
    }

    /// `--check`: logs in to the provider and checks the store as a run does first. The
    /// exit code it would give (0, 1 unreachable, 2 refused store, 3 refused credentials)
    /// and what it found.
    async fn check(&self, tz: FixedOffset) -> (u8, Vec<String>) {
        let mut code = EXIT_OK;
        let mut found = Vec::new();
        match self.provider(tz).map(ProviderClient::new) {
            Ok(Ok(client)) => match client.login().await {
                Ok(_) => found.push("provider: logged in".to_owned()),
                Err(e @ ProviderError::CredentialsRefused { .. }) => {
                    code = code.max(EXIT_CREDENTIALS);
                    found.push(format!("provider: {e}"));
                }
                Err(e) => {
                    code = code.max(EXIT_INCOMPLETE);
                    found.push(format!("provider: {e}"));
                }
            },
            Ok(Err(e)) => {
                code = code.max(EXIT_CONFIG);
                found.push(format!("provider: {e}"));
            }
            Err(e) => {
                code = code.max(EXIT_CONFIG);
                found.push(format!("provider: {}", e.0));
            }
        }
        match self.store_config().and_then(|c| open_store(&c)) {
            Ok(store) => match store.preflight().await {
                Ok(()) => found.push("store: ready".to_owned()),
                Err(e) => {
                    let refused = matches!(e, StoreError::Config(_) | StoreError::Refused { .. });
                    code = code.max(if refused {
                        EXIT_CONFIG
                    } else {
                        EXIT_INCOMPLETE
                    });
                    found.push(format!("store: {e}"));
                }
            },
            Err(e) => {
                code = code.max(EXIT_CONFIG);
                found.push(format!("store: {}", e.0));
            }
        }
        (code, found)
    }
}

/// `callvault accounts [--check] [--json]`: every account with its settings and what it
/// lacks; with `--check`, each one's provider login and store. Exit 2 when an account lacks
/// a setting (or its check says the configuration is wrong), 3 when a provider refused the
/// credentials, 1 when one could not be reached.
pub async fn list(common: &CommonSettings, args: &AccountsArgs) -> anyhow::Result<u8> {
    if let Some(AccountsCommand::Rename(rename)) = &args.command {
        return self::rename(common, rename).await;
    }
    let top = TopLevel {
        provider: Some(&args.provider),
        store: Some(&args.store),
        callback: Some(&args.callback),
    };
    let accounts = accounts(common, &top, &args.accounts)?;
    let mut code = EXIT_OK;
    let mut shown = Vec::new();
    for account in &accounts {
        let mut entry = account.shown();
        let problems = account.problems(common.tz);
        if !problems.is_empty() {
            code = code.max(EXIT_CONFIG);
        }
        entry["problems"] = json!(problems);
        if args.check {
            let (checked, found) = account.check(common.tz).await;
            code = code.max(checked);
            entry["check"] = json!(found);
        }
        shown.push(entry);
    }
    if args.accounts.account.is_empty() {
        shown.extend(unconfigured(common, &accounts).await);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "accounts": shown }))?
        );
    } else {
        for entry in &shown {
            print_account(entry);
        }
    }
    Ok(code)
}

/// The accounts with calls in the ledger that the settings no longer declare: shown, never
/// claimed (a run works on declared accounts only) until declared again or renamed.
async fn unconfigured(common: &CommonSettings, declared: &[Account]) -> Vec<serde_json::Value> {
    let found = async {
        let ledger = super::wiring::open_ledger(&common.ledger).await?;
        let found = ledger.accounts_with_calls().await;
        ledger.close().await;
        anyhow::Ok(found?)
    };
    let found = found.await.unwrap_or_else(|e| {
        eprintln!("callvault: the ledger cannot be read ({e:#}): accounts with rows there but not declared are not shown");
        Vec::new()
    });
    found
        .into_iter()
        .filter(|(name, _)| !declared.iter().any(|a| a.name.as_str() == name))
        .map(|(name, calls)| json!({ "account": name, "unconfigured": true, "calls": calls }))
        .collect()
}

/// `callvault accounts rename OLD NEW`: exit 0 when the rows moved, 2 when NEW is not a
/// name or already has rows, 1 when OLD has none.
async fn rename(common: &CommonSettings, args: &AccountsRenameArgs) -> anyhow::Result<u8> {
    let name = |raw: &str| {
        AccountName::parse(raw).map_err(|e| ConfigError(format!("accounts rename: {e}")))
    };
    let (old, new) = (name(&args.old)?, name(&args.new)?);
    if old == new {
        return Err(ConfigError("accounts rename: OLD and NEW are the same account".into()).into());
    }
    let ledger = super::wiring::open_ledger(&common.ledger).await?;
    let renamed = ledger.rename_account(&old, &new).await;
    ledger.close().await;
    let renamed = renamed?;
    if args.json {
        let mut shown = json!(renamed);
        shown["from"] = json!(old);
        shown["to"] = json!(new);
        println!("{shown}");
    }
    Ok(match renamed {
        Renamed::Moved { calls, rows } => {
            if !args.json {
                println!(
                    "moved {calls} call(s) ({rows} row(s) in all) from account {old} to {new}"
                );
            }
            if !common.accounts.iter().any(|(n, _)| *n == new) {
                eprintln!(
                    "callvault: account {new} is not declared: its calls show as unconfigured \
                     and are not archived until the settings file declares [accounts.{new}]"
                );
            }
            EXIT_OK
        }
        Renamed::TargetInUse => {
            eprintln!(
                "callvault: account {new} already has calls or manifests in the ledger: accounts are never \
                 merged; nothing moved"
            );
            EXIT_CONFIG
        }
        Renamed::NothingToMove => {
            eprintln!("callvault: account {old} has no rows in the ledger; nothing moved");
            EXIT_INCOMPLETE
        }
    })
}

fn print_account(e: &serde_json::Value) {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if e["unconfigured"] == json!(true) {
        println!(
            "{} (unconfigured: {} call(s) in the ledger, never claimed; declare [accounts.{}] or `callvault accounts rename` it)",
            text(&e["account"]),
            text(&e["calls"]),
            text(&e["account"])
        );
        return;
    }
    let declared = if e["declared"] == json!(true) {
        "declared"
    } else {
        "the top-level settings"
    };
    println!("{} ({declared})", text(&e["account"]));
    let rows = [
        ("api-url", &e["api_url"]),
        ("appid", &e["appid"]),
        ("accesskey", &e["accesskey"]),
        ("api-rate", &e["api_rate"]),
        ("store", &e["store"]),
        ("key-template", &e["key_template"]),
        ("manifests", &e["manifests_prefix"]),
        ("storage-class", &e["storage_class"]),
        ("retention-mode", &e["retention_mode"]),
        ("retain-for", &e["retain_for"]),
        ("share", &e["share"]),
        ("callback-secret", &e["callback_secret"]),
    ];
    for (label, value) in rows {
        println!("  {label:<16}{}", text(value));
    }
    if let Some(aws) = e["aws"].as_object() {
        for (k, v) in aws {
            println!(
                "  {:<16}{}",
                format!("aws.{}", k.trim_start_matches("aws_")),
                text(v)
            );
        }
    }
    for problem in e["problems"].as_array().into_iter().flatten() {
        println!("  problem         {}", text(problem));
    }
    for found in e["check"].as_array().into_iter().flatten() {
        println!("  check           {}", text(found));
    }
}
