//! `callvault serve` at the edge: validates its settings (a missing or short secret, a bad
//! schedule or bad run settings are configuration errors before anything listens), binds,
//! and runs until SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};

use super::accounts::{Account, TopLevel};
use super::{EXIT_OK, open_ledger, watch_signals};
use crate::archive::Shutdown;
use crate::cli::ServeArgs;
use crate::config::{CommonSettings, ConfigError};
use crate::provider::ProviderClient;
use crate::serve::{MIN_SECRET_LEN, ReceiverConfig, ScheduledPasses, ScheduledSyncs, ServeOptions};
use crate::sync::{SyncDeps, SyncOptions};
use crate::ui::{ProxyAuth, Ui, UiAccount, UiConfig, UsersFile};
use axum::http::HeaderName;

pub async fn serve(common: &CommonSettings, args: &ServeArgs) -> anyhow::Result<u8> {
    let account = the_account(common, args)?;
    let secret = callback_secret(args, &account)?;
    let run = &args.run;
    let shutdown = Shutdown::default();
    let retention = chrono::Duration::days(i64::from(run.retention_days));
    let (ledger, passes) = match &args.schedule {
        Some(text) => {
            let passes = scheduled_passes(common, args, text, shutdown.clone()).await?;
            (passes.deps.ledger.clone(), Some(passes))
        }
        None => (
            open_ledger(&common.ledger).await?.scoped(&account.name),
            None,
        ),
    };
    let syncs = match &args.sync_schedule {
        Some(text) => Some(scheduled_syncs(
            common,
            args,
            text,
            &ledger,
            passes.as_ref(),
            &account,
        )?),
        None => None,
    };
    let ui = if args.ui.ui {
        Some(ui_settings(common, args, &ledger, retention)?)
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| ConfigError(format!("cannot listen on {}: {e}", args.listen)))?;
    let signals = tokio::spawn(watch_signals(shutdown.clone(), run.grace));
    let options = ServeOptions {
        ledger: ledger.clone(),
        receiver: secret.map(|secret| ReceiverConfig {
            secret,
            allow_from: args.allow_from.clone(),
            max_body_bytes: args.max_body_bytes,
            tz: common.tz,
            answer: args.callback_answer,
        }),
        ui,
        retention,
        passes,
        syncs,
    };
    crate::serve::serve(listener, options, shutdown)
        .await
        .context("serving")?;
    signals.abort();
    ledger.close().await;
    tracing::info!("stopped");
    Ok(EXIT_OK)
}

/// The account this process serves: until the ledger's rows carry their account, one
/// (`--account` names it when the settings file declares several).
fn the_account(common: &CommonSettings, args: &ServeArgs) -> Result<Account, ConfigError> {
    let top = TopLevel {
        provider: &args.run.provider,
        store: Some(&args.run.store),
        callback: Some(&args.callback),
    };
    super::accounts::single(common, &top, &args.run.accounts)
}

/// The callback secret (the account's), at least `MIN_SECRET_LEN` long; none with `--ui`
/// and no secret at all (the page is then served alone, without the receiver).
fn callback_secret(
    args: &ServeArgs,
    account: &Account,
) -> Result<Option<SecretString>, ConfigError> {
    match account.callback_secret()? {
        None if args.ui.ui => Ok(None),
        given => given
            .filter(|s| s.expose_secret().len() >= MIN_SECRET_LEN)
            .map(Some)
            .ok_or_else(|| {
                ConfigError(format!(
                    "callback-secret is not set or shorter than {MIN_SECRET_LEN} characters \
                     (--callback-secret or CALLVAULT_CALLBACK_SECRET)"
                ))
            }),
    }
}

/// `--schedule`: archival passes on that schedule, with everything a pass opens.
async fn scheduled_passes(
    common: &CommonSettings,
    args: &ServeArgs,
    schedule: &str,
    shutdown: Shutdown,
) -> anyhow::Result<ScheduledPasses> {
    let schedule = crate::serve::parse_schedule(schedule).map_err(ConfigError)?;
    let (deps, options) = super::prepare_pass(common, &args.run, shutdown).await?;
    Ok(ScheduledPasses {
        schedule,
        deps,
        options,
        metrics: super::metrics_targets(&args.run),
    })
}

/// `--sync-schedule`: syncs on that schedule, through the passes' provider client when
/// there are passes (one token, one pace for the process).
fn scheduled_syncs(
    common: &CommonSettings,
    args: &ServeArgs,
    schedule: &str,
    ledger: &crate::ledger::Ledger,
    passes: Option<&ScheduledPasses>,
    account: &Account,
) -> Result<ScheduledSyncs, ConfigError> {
    let schedule = crate::serve::parse_schedule(schedule).map_err(ConfigError)?;
    let provider = match passes {
        Some(passes) => Arc::clone(&passes.deps.provider),
        None => Arc::new(
            ProviderClient::new(account.provider(common.tz)?)
                .map_err(|e| ConfigError(e.to_string()))?,
        ),
    };
    let options = SyncOptions {
        overlap: chrono::Duration::from_std(args.sync_overlap)
            .map_err(|_| ConfigError("--sync-overlap is too long".into()))?,
        retention: chrono::Duration::days(i64::from(args.run.retention_days)),
        retry_delay: args.run.retry_delay,
        ..SyncOptions::new(common.tz)
    };
    Ok(ScheduledSyncs {
        schedule,
        deps: SyncDeps {
            ledger: ledger.clone(),
            provider,
        },
        options,
    })
}

/// The web page's settings: the accounts it serves (every declared one, or those named with
/// `--account`), each with its rows of the ledger and its store (as a run's); its users
/// file, proxy and cookies.
fn ui_settings(
    common: &CommonSettings,
    args: &ServeArgs,
    ledger: &crate::ledger::Ledger,
    retention: chrono::Duration,
) -> Result<Ui, ConfigError> {
    let top = TopLevel {
        provider: &args.run.provider,
        store: Some(&args.run.store),
        callback: Some(&args.callback),
    };
    let mut accounts = std::collections::BTreeMap::new();
    for account in super::accounts::accounts(common, &top, &args.run.accounts)? {
        let store = super::wiring::open_store(&account.store_config()?)?;
        let ledger = ledger.scoped(&account.name);
        accounts.insert(account.name, UiAccount { ledger, store });
    }
    let proxy = match &args.ui.ui_proxy_header {
        Some(name) => Some(ProxyAuth {
            header: HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                ConfigError(format!("--ui-proxy-header {name:?} is not a header name"))
            })?,
            networks: args.ui.ui_proxy_networks.clone(),
        }),
        None => None,
    };
    let users = UsersFile::new(&args.ui.ui_users_file);
    if proxy.is_none() && !users.path().exists() {
        return Err(ConfigError(format!(
            "the users file {} does not exist: add a user with `callvault user add NAME \
             --users-file {}`, or set --ui-proxy-header and --ui-proxy-networks",
            users.path().display(),
            users.path().display()
        )));
    }
    let config = UiConfig {
        proxy,
        // Plain HTTP on loopback (a laptop, a test): browsers drop `Secure` cookies there.
        secure_cookies: !args.listen.ip().is_loopback(),
        session_ttl: args.ui.ui_session_ttl,
        retention,
        ..UiConfig::new(users, common.tz)
    };
    Ok(Ui::with_accounts(
        ledger.clone(),
        accounts,
        config,
        crate::clock::Clock::system(),
    ))
}
