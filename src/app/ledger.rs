//! Ledger maintenance from the command line: `migrate` (the schema, as a step of its own)
//! and `ledger copy` (a whole ledger moved to another backend, checked table by table).

use super::wiring::open_ledger;
use super::{EXIT_INCOMPLETE, EXIT_OK};
use crate::cli::{LedgerCopyArgs, MigrateArgs};
use crate::config::{ConfigError, LedgerSettings};
use crate::ledger::{CopyError, Ledger, LedgerOptions, copy_ledger, redact_location};

pub async fn migrate(ledger: &LedgerSettings, args: &MigrateArgs) -> anyhow::Result<u8> {
    let url = &ledger.url;
    let options = LedgerOptions {
        busy_timeout: ledger.busy_timeout,
        ..LedgerOptions::default()
    };
    let migrations = match Ledger::migrate(url, &options).await {
        Ok(m) => m,
        Err(e) if e.is_unavailable() => return Err(anyhow::Error::new(e)),
        Err(e) => return Err(ConfigError(e.to_string()).into()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&migrations)?);
    } else {
        for m in &migrations {
            let what = if m.applied_now {
                "applied now"
            } else {
                "already applied"
            };
            println!("{:>14}  {:<40} {what}", m.version, m.description);
        }
        let now = migrations.iter().filter(|m| m.applied_now).count();
        println!(
            "{}: schema up to date ({now} of {} migration(s) applied now)",
            redact_location(url),
            migrations.len()
        );
    }
    Ok(EXIT_OK)
}

pub async fn copy(args: &LedgerCopyArgs, ledger: &LedgerSettings) -> anyhow::Result<u8> {
    let settings = |url: &str| LedgerSettings {
        url: url.to_owned(),
        busy_timeout: ledger.busy_timeout,
    };
    let from = open_ledger(&settings(&args.from)).await?;
    let to = open_ledger(&settings(&args.to)).await?;
    let report = match copy_ledger(&from, &to).await {
        Ok(report) => report,
        Err(e @ CopyError::TargetNotEmpty { .. }) => return Err(ConfigError(e.to_string()).into()),
        Err(CopyError::Ledger(e)) => {
            return Err(anyhow::Error::new(e).context("copying the ledger"));
        }
    };
    from.close().await;
    to.close().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for t in &report.tables {
            let verdict = if t.matches() { "ok" } else { "MISMATCH" };
            println!(
                "{:<14} {:>10} → {:>10} rows  sha256 {} / {}  {verdict}",
                t.table,
                t.source_rows,
                t.target_rows,
                &t.source_sha256[..12],
                &t.target_sha256[..12]
            );
        }
    }
    if report.all_match() {
        eprintln!(
            "copied {} into {}: every table matches",
            redact_location(&args.from),
            redact_location(&args.to)
        );
        Ok(EXIT_OK)
    } else {
        eprintln!("callvault: the copy does not match its source; do not switch to it");
        Ok(EXIT_INCOMPLETE)
    }
}
