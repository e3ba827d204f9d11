//! `callvault sync` (the bill list against the ledger) and `callvault completeness` (per
//! day and company, whether every call the provider knows is archived).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{FixedOffset, Utc};

use super::accounts::Account;
use super::wiring::open_ledger;
use super::{EXIT_INCOMPLETE, EXIT_OK, watch_signals};
use crate::accounts::AccountName;
use crate::archive::Shutdown;
use crate::cli::{CompletenessArgs, SyncArgs};
use crate::config::{CommonSettings, ConfigError};
use crate::ledger::{DayCompleteness, Ledger, risk_line};
use crate::provider::ProviderClient;
use crate::sync::{AccountSync, SyncDeps, SyncOptions, SyncReport, run_sync};

/// The options of a sync from its command line.
pub fn sync_options(
    args: &SyncArgs,
    tz: FixedOffset,
    shutdown: Shutdown,
) -> Result<SyncOptions, ConfigError> {
    let (since, until) = args.times.bounds(tz)?;
    Ok(SyncOptions {
        since,
        until,
        overlap: chrono::Duration::from_std(args.overlap)
            .map_err(|_| ConfigError("--overlap is too long".into()))?,
        retention: chrono::Duration::days(i64::from(args.retention_days)),
        page_attempts: args.attempts_per_page,
        retry_delay: args.retry_delay,
        shutdown,
        ..SyncOptions::new(tz)
    })
}

pub async fn sync(common: &CommonSettings, args: &SyncArgs) -> anyhow::Result<u8> {
    let shutdown = Shutdown::default();
    let opts = sync_options(args, common.tz, shutdown.clone())?;
    let top = super::accounts::TopLevel {
        provider: Some(&args.provider),
        store: None,
        callback: None,
    };
    // Every account chosen, one after the other: each with its own provider client (its
    // token and pace) and its own rows; one account's refused credentials or outage ends
    // its sync only.
    let chosen = super::accounts::accounts(common, &top, &args.accounts)?;
    let mut clients = Vec::with_capacity(chosen.len());
    for account in &chosen {
        clients.push(provider_client(common, account)?);
    }
    let ledger = open_ledger(&common.ledger).await?;
    let signals = tokio::spawn(watch_signals(shutdown, Duration::ZERO));
    let several = chosen.len() > 1;
    let mut code = EXIT_OK;
    for sync in account_syncs(&chosen, clients, &ledger) {
        let account = &sync.account;
        let report = run_sync(&sync.deps, &opts)
            .await
            .with_context(|| format!("the ledger failed during {account}'s sync"))?;
        print_sync(&report, args.json, several.then_some(account));
        code = code.max(u8::try_from(report.exit_code()).unwrap_or(EXIT_INCOMPLETE));
    }
    signals.abort();
    ledger.close().await;
    Ok(code)
}

/// A provider client of `account`'s own: its login, token and pace.
pub(super) fn provider_client(
    common: &CommonSettings,
    account: &Account,
) -> Result<Arc<ProviderClient>, ConfigError> {
    let provider = ProviderClient::new(account.provider(common.tz)?)
        .map_err(|e| ConfigError(format!("account `{}`: {e}", account.name)))?;
    Ok(Arc::new(provider))
}

/// Each account's sync on its own rows, through its client (`clients` in the same order).
pub(super) fn account_syncs(
    chosen: &[Account],
    clients: Vec<Arc<ProviderClient>>,
    ledger: &Ledger,
) -> Vec<AccountSync> {
    chosen
        .iter()
        .zip(clients)
        .map(|(account, provider)| AccountSync {
            account: account.name.clone(),
            deps: SyncDeps {
                ledger: ledger.scoped(&account.name),
                provider,
            },
        })
        .collect()
}

/// One account's sync report (with several accounts, named; its JSON line names it).
pub fn print_sync(report: &SyncReport, json: bool, account: Option<&AccountName>) {
    if json {
        let mut value = serde_json::to_value(report).unwrap_or_default();
        value["exit_code"] = report.exit_code().into();
        if let Some(account) = account {
            value["account"] = account.as_str().into();
        }
        println!("{value}");
    } else {
        if let Some(account) = account {
            println!("account {account}:");
        }
        print!("{}", report.human());
    }
    if let Some(err) = &report.error {
        match account {
            Some(account) => eprintln!("callvault: {account}'s sync stopped: {err}"),
            None => eprintln!("callvault: sync stopped: {err}"),
        }
    }
}

/// `completeness`: each account's days against its bill list (JSON: one account's object
/// names it; several are `{"accounts": [...]}`, as `status` prints them). Exit 1 when any
/// account has a day that is not complete.
pub async fn completeness(common: &CommonSettings, args: &CompletenessArgs) -> anyhow::Result<u8> {
    let tz = common.tz;
    let now = Utc::now();
    let retention = chrono::Duration::days(i64::from(args.retention_days));
    let (since, until) = args.times.bounds(tz)?;
    let (since, until) = (since.unwrap_or(now - retention), until.unwrap_or(now));
    let names = super::accounts::names(common, &args.accounts)?;
    let ledger = open_ledger(&common.ledger).await?;
    let (mut all_complete, mut shown) = (true, Vec::new());
    for name in &names {
        let scoped = ledger.scoped(name);
        let days = report(&scoped, since, until, tz, risk_line(now, retention)).await?;
        let complete = days.iter().all(DayCompleteness::complete);
        all_complete &= complete;
        if args.json {
            shown.push(serde_json::json!({
                "account": name,
                "since": since,
                "until": until,
                "complete": complete,
                "days": days.iter().map(|d| {
                    let mut v = serde_json::to_value(d).unwrap_or_default();
                    v["complete"] = d.complete().into();
                    v
                }).collect::<Vec<_>>(),
            }));
        } else {
            if names.len() > 1 {
                println!("account {name}:");
            }
            print_days(&days);
            print_last_sync(&scoped).await?;
        }
    }
    if args.json {
        let value = match shown.as_slice() {
            [one] => one.clone(),
            _ => serde_json::json!({ "accounts": shown }),
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
    }
    ledger.close().await;
    Ok(if all_complete {
        EXIT_OK
    } else {
        EXIT_INCOMPLETE
    })
}

fn print_days(days: &[DayCompleteness]) {
    println!(
        "{:<10} {:<12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  ",
        "day",
        "company",
        "listed",
        "ledger",
        "archived",
        "pending",
        "failed",
        "no_rec",
        "by_sync",
        "at_risk"
    );
    for d in days {
        println!(
            "{:<10} {:<12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  {}",
            d.day.map_or_else(|| "?".into(), |d| d.to_string()),
            if d.company_code.is_empty() {
                "?"
            } else {
                &d.company_code
            },
            d.provider_listed,
            d.in_ledger,
            d.archived,
            d.pending,
            d.failed,
            d.no_recording,
            d.found_by_sync,
            d.at_risk,
            if d.complete() {
                "complete"
            } else {
                "INCOMPLETE"
            }
        );
    }
}

async fn print_last_sync(ledger: &Ledger) -> anyhow::Result<()> {
    match ledger.sync_figures().await?.last_success_at {
        Some(t) => println!("last complete sync: {t}"),
        None => println!(
            "last complete sync: none (run `callvault sync`: without it, calls whose callback never came are not listed)"
        ),
    }
    Ok(())
}

async fn report(
    ledger: &Ledger,
    since: chrono::DateTime<Utc>,
    until: chrono::DateTime<Utc>,
    tz: FixedOffset,
    risk: chrono::DateTime<Utc>,
) -> anyhow::Result<Vec<DayCompleteness>> {
    Ok(ledger.completeness(since, until, tz, risk).await?)
}
