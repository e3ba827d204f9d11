//! Ledger maintenance from the command line: `migrate` (the schema, as a step of its own),
//! `ledger copy` (a whole ledger moved to another backend, checked table by table) and
//! `ledger rebuild --from-store` (a lost ledger rebuilt from the bucket).

use anyhow::Context;

use super::scope::{Scope, Scopes, with_account};
use super::wiring::open_ledger;
use super::{EXIT_INCOMPLETE, EXIT_OK};
use crate::cli::{ArchiveStoreArgs, LayoutArgs, LedgerCopyArgs, LedgerRebuildArgs, MigrateArgs};
use crate::config::{CommonSettings, ConfigError, LedgerLocation, LedgerSettings};
use crate::ledger::{CopyError, Ledger, LedgerOptions, copy_ledger};
use crate::rebuild::{RebuildError, RebuildOptions, RebuildReport, rebuild_from_store};

pub async fn migrate(ledger: &LedgerSettings, args: &MigrateArgs) -> anyhow::Result<u8> {
    let options = LedgerOptions {
        busy_timeout: ledger.busy_timeout,
        ..LedgerOptions::default()
    };
    let migrations = match Ledger::migrate(ledger.location.expose(), &options).await {
        Ok(m) => m,
        Err(e) if e.is_unavailable() => {
            return Err(anyhow::Error::new(e).context(format!(
                "migrating the ledger {} (try again once it is up)",
                ledger.location
            )));
        }
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
            ledger.location,
            migrations.len()
        );
    }
    Ok(EXIT_OK)
}

pub async fn copy(args: &LedgerCopyArgs, ledger: &LedgerSettings) -> anyhow::Result<u8> {
    let settings = |location: &LedgerLocation| LedgerSettings {
        location: location.clone(),
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
        eprintln!("copied {} into {}: every table matches", args.from, args.to);
        Ok(EXIT_OK)
    } else {
        eprintln!("callvault: the copy does not match its source; do not switch to it");
        Ok(EXIT_INCOMPLETE)
    }
}

/// `ledger rebuild --from-store`: each account (those named with `--account`, else every
/// declared one) rebuilt from its own store and manifest chain. In a store accounts share,
/// each takes the sidecars that name it (and those of before accounts, when it is the
/// only one) and skips the other accounts' manifests.
pub async fn rebuild(common: &CommonSettings, args: &LedgerRebuildArgs) -> anyhow::Result<u8> {
    let layout = LayoutArgs {
        sidecar: true,
        no_sidecar: false,
        manifests: args.manifests.clone(),
    };
    let settings = ArchiveStoreArgs::for_objects(&args.store, Some(&layout), None);
    let scopes = Scopes::open(common, &args.accounts, Some(&settings)).await?;
    let configs = scopes
        .all
        .iter()
        .map(|s| s.account.store_config())
        .collect::<Result<Vec<_>, _>>()?;
    let mut code = EXIT_OK;
    for (i, scope) in scopes.all.iter().enumerate() {
        let options = RebuildOptions {
            merge: args.merge,
            concurrency: usize::from(args.concurrency),
            foreign_prefixes: configs
                .iter()
                .enumerate()
                .filter(|(j, c)| *j != i && c.url == configs[i].url)
                .map(|(_, c)| c.manifests_prefix.clone())
                .collect(),
        };
        code = code.max(rebuild_account(scope, &options, args.json).await?);
    }
    scopes.close().await;
    Ok(code)
}

async fn rebuild_account(
    scope: &Scope,
    options: &RebuildOptions,
    json: bool,
) -> anyhow::Result<u8> {
    let store = scope.store()?;
    let report = match rebuild_from_store(&store, &scope.ledger, options).await {
        Ok(report) => report,
        Err(e @ RebuildError::NotEmpty { .. }) => {
            return Err(ConfigError(format!("account {}: {e}", scope.name())).into());
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)).context(format!(
                "rebuilding account {}'s ledger from its store",
                scope.name()
            ));
        }
    };
    // The Merkle log from the manifests just read, the checkpoints beside them kept as the
    // store holds them: proofs are given from the rebuilt ledger at once.
    let logged = crate::proof::Prover::default()
        .after_manifests(&scope.ledger, &store, chrono::Utc::now())
        .await;
    let tokens = crate::proof::stamp::adopt_tokens(&scope.ledger, &store, chrono::Utc::now())
        .await
        .context("taking the store's time-stamp tokens into the ledger")?;
    if json {
        let mut shown = with_account(&report, scope.name());
        shown["log"] = serde_json::to_value(&logged)?;
        shown["log"]["tokens_from_store"] = tokens.into();
        println!("{shown}");
    } else {
        println!("account {}:", scope.name());
        print_rebuild(&report);
        println!(
            "log: {} manifest(s) logged, their checkpoints and {tokens} time-stamp token(s) read from the store{}",
            logged.logged.len(),
            logged
                .problems
                .iter()
                .map(|p| format!("; {p}"))
                .collect::<String>()
        );
    }
    if report.consistent() {
        Ok(EXIT_OK)
    } else {
        eprintln!(
            "callvault: account {}'s store is inconsistent ({} problem(s)): what could be recovered is in the ledger; see the report",
            scope.name(),
            report.problem_total()
        );
        Ok(EXIT_INCOMPLETE)
    }
}

fn print_rebuild(report: &RebuildReport) {
    for problem in &report.problems {
        println!("{problem}");
    }
    if report.problem_total() > report.problems.len() as u64 {
        println!(
            "... and {} more problem(s) (counted below)",
            report.problem_total() - report.problems.len() as u64
        );
    }
    println!("store:                    {}", report.store);
    println!("objects listed:           {}", report.objects_listed);
    println!(
        "manifests:                {} ({} entries), head {}",
        report.manifests,
        report.manifest_entries,
        report.head.as_ref().map_or_else(
            || "none".to_owned(),
            |h| format!("{} sha256 {}", h.key, h.sha256)
        )
    );
    println!(
        "calls recovered:          {} ({} listed by a manifest, {} archived after the last one)",
        report.calls(),
        report.calls_from_manifests,
        report.calls_not_in_a_manifest
    );
    if report.calls_already_known > 0 {
        println!("calls already known:      {}", report.calls_already_known);
    }
    println!("runs named by sidecars:   {}", report.runs);
    if report.problem_counts.is_empty() {
        println!("problems:                 none");
    }
    for (kind, n) in &report.problem_counts {
        println!("problems {kind:<24} {n}");
    }
}
