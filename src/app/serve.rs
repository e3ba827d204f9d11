//! `callvault serve` at the edge: validates its settings (a missing or short secret, a bad
//! schedule or bad run settings are configuration errors before anything listens), binds,
//! and runs until SIGTERM. One process serves every account (or those named with
//! `--account`): each one's callbacks, passes and syncs.

use std::sync::Arc;

use anyhow::Context;
use secrecy::ExposeSecret;

use super::accounts::{Account, TopLevel};
use super::{EXIT_OK, open_ledger, watch_signals};
use crate::archive::Shutdown;
use crate::cli::ServeArgs;
use crate::config::{CommonSettings, ConfigError};
use crate::ledger::Ledger;
use crate::serve::{
    CallbackAccount, MIN_SECRET_LEN, ReceiverConfig, ScheduledPasses, ScheduledSyncs, ServeOptions,
};
use crate::sync::SyncOptions;
use crate::ui::{ProxyAuth, Ui, UiAccount, UiConfig, UsersFile};
use axum::http::HeaderName;

pub async fn serve(common: &CommonSettings, args: &ServeArgs) -> anyhow::Result<u8> {
    let accounts = served_accounts(common, args)?;
    let receiver = receiver_config(common, args, &accounts)?;
    let run = &args.run;
    let shutdown = Shutdown::default();
    let retention = chrono::Duration::days(i64::from(run.retention_days));
    let passes = match &args.schedule {
        Some(text) => Some(scheduled_passes(common, args, text, &shutdown).await?),
        None => None,
    };
    // The passes' ledger when there are passes (sized for their workers), shared by the
    // receiver, `/metrics`, the syncs and the page, each of which scopes it to the account
    // at hand, and the probes.
    let ledger = match passes.as_ref().and_then(|p| p.passes.first()) {
        Some(pass) => pass.deps.ledger.clone(),
        None => open_ledger(&common.ledger).await?,
    };
    let syncs = match &args.sync_schedule {
        Some(text) => Some(scheduled_syncs(
            common,
            args,
            text,
            &ledger,
            passes.as_ref(),
            &accounts,
        )?),
        None => None,
    };
    let ui = if args.ui.ui {
        Some(ui_settings(common, args, &ledger, retention, &accounts)?)
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| ConfigError(format!("cannot listen on {}: {e}", args.listen)))?;
    let signals = tokio::spawn(watch_signals(shutdown.clone(), run.grace));
    let options = ServeOptions {
        ledger: ledger.clone(),
        accounts: accounts.iter().map(|a| a.name.clone()).collect(),
        receiver,
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

/// The accounts this process serves: every declared one, or those named with `--account`.
fn served_accounts(common: &CommonSettings, args: &ServeArgs) -> Result<Vec<Account>, ConfigError> {
    let top = TopLevel {
        provider: Some(&args.run.provider),
        store: Some(&args.run.store),
        callback: Some(&args.callback),
    };
    super::accounts::accounts(common, &top, &args.run.accounts)
}

/// Each served account's callback address, opened by its own secret (at least
/// `MIN_SECRET_LEN` long); an account without a secret has none. No receiver when no
/// account has a secret and `--ui` serves the page alone; without `--ui`, that is a
/// configuration error.
fn receiver_config(
    common: &CommonSettings,
    args: &ServeArgs,
    accounts: &[Account],
) -> Result<Option<ReceiverConfig>, ConfigError> {
    let mut addresses = Vec::new();
    for account in accounts {
        let Some(secret) = account.callback_secret()? else {
            continue;
        };
        if secret.expose_secret().len() < MIN_SECRET_LEN {
            let text = format!("callback-secret is shorter than {MIN_SECRET_LEN} characters");
            return Err(ConfigError(if account.declared {
                format!("account `{}`: {text}", account.name)
            } else {
                format!("{text} (--callback-secret or CALLVAULT_CALLBACK_SECRET)")
            }));
        }
        addresses.push(CallbackAccount {
            account: account.name.clone(),
            secret,
        });
    }
    if addresses.is_empty() {
        if args.ui.ui {
            return Ok(None);
        }
        return Err(ConfigError(format!(
            "callback-secret is not set (--callback-secret or CALLVAULT_CALLBACK_SECRET, or \
             an account's callback-secret-env or callback-secret-file; at least \
             {MIN_SECRET_LEN} characters)"
        )));
    }
    for address in &addresses {
        tracing::info!(account = %address.account, "receiving this account's callbacks");
    }
    Ok(Some(ReceiverConfig {
        accounts: addresses,
        allow_from: args.allow_from.clone(),
        max_body_bytes: args.max_body_bytes,
        tz: common.tz,
        answer: args.callback_answer,
    }))
}

/// `--schedule`: on that schedule, a pass for each served account, as `run` prepares them.
async fn scheduled_passes(
    common: &CommonSettings,
    args: &ServeArgs,
    schedule: &str,
    shutdown: &Shutdown,
) -> anyhow::Result<ScheduledPasses> {
    let schedule = crate::serve::parse_schedule(schedule).map_err(ConfigError)?;
    Ok(ScheduledPasses {
        schedule,
        passes: super::prepare_passes(common, &args.run, shutdown).await?,
        metrics: super::metrics_targets(&args.run),
    })
}

/// `--sync-schedule`: on that schedule, a sync for each served account, through its pass's
/// provider client when there are passes (one token, one pace for the account).
fn scheduled_syncs(
    common: &CommonSettings,
    args: &ServeArgs,
    schedule: &str,
    ledger: &Ledger,
    passes: Option<&ScheduledPasses>,
    accounts: &[Account],
) -> Result<ScheduledSyncs, ConfigError> {
    let schedule = crate::serve::parse_schedule(schedule).map_err(ConfigError)?;
    let mut clients = Vec::with_capacity(accounts.len());
    for account in accounts {
        let pass = passes.and_then(|p| p.passes.iter().find(|p| p.account == account.name));
        clients.push(match pass {
            Some(pass) => Arc::clone(&pass.deps.provider),
            None => super::sync::provider_client(common, account)?,
        });
    }
    let options = SyncOptions {
        overlap: chrono::Duration::from_std(args.sync_overlap)
            .map_err(|_| ConfigError("--sync-overlap is too long".into()))?,
        retention: chrono::Duration::days(i64::from(args.run.retention_days)),
        retry_delay: args.run.retry_delay,
        ..SyncOptions::new(common.tz)
    };
    Ok(ScheduledSyncs {
        schedule,
        accounts: super::sync::account_syncs(accounts, clients, ledger),
        options,
    })
}

/// The web page's settings: the accounts it serves (every declared one, or those named with
/// `--account`), each with its rows of the ledger and its store (as a run's); its users
/// file, proxy and cookies.
fn ui_settings(
    common: &CommonSettings,
    args: &ServeArgs,
    ledger: &Ledger,
    retention: chrono::Duration,
    served: &[Account],
) -> Result<Ui, ConfigError> {
    let mut accounts = std::collections::BTreeMap::new();
    for account in served {
        let store = super::wiring::open_store(&account.store_config()?)?;
        let ledger = ledger.scoped(&account.name);
        accounts.insert(account.name.clone(), UiAccount { ledger, store });
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
