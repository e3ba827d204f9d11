//! The edge: runs a parsed command line against the library and turns the outcome into an
//! exit code (0 all done, 1 something left or failed, 2 usage or configuration, 3 the
//! provider refused the credentials).

mod accounts;
mod args;
mod audit;
mod demo;
mod export;
pub mod export_verify;
mod groups;
mod import;
mod keys;
mod ledger;
mod progress;
mod retention;
mod retrieve;
mod scope;
mod serve;
mod sync;
mod user;
mod wiring;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use secrecy::ExposeSecret;

use crate::archive::{RunResult, Shutdown};
use crate::cli::{
    Cli, Command, ImportArgs, KeysCommand, LedgerCommand, RunArgs, SimulatorArgs, StatusArgs,
    UserCommand,
};
use crate::config::{CommonSettings, ConfigError};
use progress::{Meter, Unit};
use wiring::open_ledger;

pub use args::{CliError, Invocation, parse};
pub use demo::run_demo;
pub use import::{ImportCounts, import_source};

pub const EXIT_OK: u8 = 0;
pub const EXIT_INCOMPLETE: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_CREDENTIALS: u8 = 3;

pub async fn dispatch(invocation: Invocation) -> ExitCode {
    match execute(invocation).await {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("callvault: {err:#}");
            let config = err.chain().any(|e| e.is::<ConfigError>());
            ExitCode::from(if config { EXIT_CONFIG } else { EXIT_INCOMPLETE })
        }
    }
}

async fn execute(invocation: Invocation) -> anyhow::Result<u8> {
    let Invocation {
        cli,
        file_aws,
        file_accounts,
        ..
    } = invocation;
    let common = args::common_settings(&cli, &file_aws, file_accounts)?;
    match cli.command {
        Command::Import(ref args) => import(&cli, &common, args).await,
        Command::Run(ref args) => run(&cli, &common, args).await,
        Command::Serve(ref args) => serve::serve(&common, args).await,
        Command::Status(args) => status(&common, &args).await,
        Command::Sync(ref args) => sync::sync(&common, args).await,
        Command::Completeness(ref args) => sync::completeness(&common, args).await,
        Command::Demo(args) => run_demo(&args).await,
        Command::Simulator(args) => simulator(args).await,
        Command::Verify(ref args) => audit::verify(&common, args).await,
        Command::Failures(ref args) => audit::failures(&common, args).await,
        Command::Retry(ref args) => audit::retry(&common, args).await,
        Command::Migrate(args) => ledger::migrate(&common.ledger, &args).await,
        Command::Ledger(LedgerCommand::Copy(args)) => ledger::copy(&args, &common.ledger).await,
        Command::Ledger(LedgerCommand::Rebuild(args)) => ledger::rebuild(&common, &args).await,
        Command::Hold(ref args) => retention::hold(&common, args).await,
        Command::Release(ref args) => retention::release_cmd(&common, args).await,
        Command::Holds(ref args) => retention::holds(&common, args).await,
        Command::Erase(ref args) => retention::erase_cmd(&common, args).await,
        Command::Expire(ref args) => retention::expire(&common, args).await,
        Command::User(UserCommand::Add(args)) => user::add(&common, &args),
        Command::Accounts(ref args) => accounts::list(&common, args).await,
        Command::Keys(KeysCommand::Generate(ref args)) => keys::generate(args),
        Command::Find(ref args) => retrieve::find(&common, args).await,
        Command::Get(ref args) => retrieve::get(&common, args).await,
        Command::Link(ref args) => retrieve::link(&common, args).await,
        Command::AccessLog(ref args) => retrieve::access_log(&common, args).await,
        Command::Export(ref command) => export::run(&common, command).await,
    }
}

async fn import(cli: &Cli, common: &CommonSettings, args: &ImportArgs) -> anyhow::Result<u8> {
    let account = accounts::one_name(common, &args.accounts)?;
    let ledger = open_ledger(&common.ledger).await?.scoped(&account);
    let mut counts = ImportCounts::default();
    for file in &args.files {
        let meter = Meter::start(
            cli.progress,
            cli.log_format,
            cli.progress_interval,
            "import",
            Unit::Bytes,
        );
        import_source(
            &ledger,
            file,
            args.format,
            common.tz,
            &mut counts,
            meter.as_deref(),
        )
        .await?;
        if let Some(meter) = meter {
            meter.finish();
        }
    }
    println!(
        "imported: {} new ({} without recording), {} already known, {} late recordings added, {} joined to calls found by sync, {} rejected",
        counts.new,
        counts.no_recording,
        counts.already_known,
        counts.recording_added,
        counts.matched_bill,
        counts.rejected
    );
    Ok(if counts.rejected > 0 {
        EXIT_INCOMPLETE
    } else {
        EXIT_OK
    })
}

async fn simulator(args: SimulatorArgs) -> anyhow::Result<u8> {
    let config = crate::simulator::SimulatorConfig {
        appid: args.appid,
        accesskey: args.accesskey.expose_secret().to_owned(),
        ..Default::default()
    };
    let faults = crate::simulator::Faults {
        invalidate_tokens_every: args.invalidate_tokens_every,
        extension_exception_every: args.extension_exception_every,
        drop_callbacks_percent: args.drop_callbacks,
        bills_with_uuid: args.bills_with_uuid,
        ..Default::default()
    };
    let samples = crate::simulator::SampleOptions {
        recordings: args.recordings,
        recording_size: args.recording_size_mib.map(|mib| mib * 1024 * 1024),
        callbacks_out: args.callbacks_out,
        callback_url: args.callback_url,
    };
    crate::simulator::serve_forever(args.listen, config, faults, samples)
        .await
        .context("running the simulator")?;
    Ok(EXIT_OK)
}

fn run_top_level(run: &RunArgs) -> accounts::TopLevel<'_> {
    accounts::TopLevel {
        provider: Some(&run.provider),
        store: Some(&run.store),
        callback: None,
    }
}

/// Ledger connections for a run's workers, however many workers there are.
const MAX_WORKER_CONNECTIONS: u32 = 16;

/// The ledger a run's passes share: a connection per worker (up to
/// [`MAX_WORKER_CONNECTIONS`]), plus each account's lease
/// renewer and manifest writer, and a spare.
async fn open_pass_ledger(
    common: &CommonSettings,
    run: &RunArgs,
    accounts: usize,
) -> anyhow::Result<crate::ledger::Ledger> {
    let extra = u32::try_from(accounts.saturating_mul(2)).unwrap_or(u32::MAX);
    // Workers share the claim and the group commit: past a few, more connections only
    // mean more idle sessions (and, on SQLite, threads and page caches).
    let connections = u32::from(run.concurrency)
        .min(MAX_WORKER_CONNECTIONS)
        .saturating_add(2)
        .saturating_add(extra);
    wiring::open_ledger_sized(&common.ledger, connections).await
}

/// A pass for each account `run` (or `serve --schedule`) works on (all declared, or those
/// named with `--account`), each on the ledger scoped to its account; with several, they
/// share the transfer slots.
async fn prepare_passes(
    common: &CommonSettings,
    run: &RunArgs,
    shutdown: &Shutdown,
) -> anyhow::Result<Vec<crate::archive::AccountPass>> {
    let slice = run.slice.slice(common.tz)?;
    let chosen = accounts::accounts(common, &run_top_level(run), &run.accounts)?;
    let ledger = open_pass_ledger(common, run, chosen.len()).await?;
    let shares: Vec<u32> = chosen.iter().map(|a| a.share).collect();
    let prover = args::prover(&run.proof)?;
    let mut passes = Vec::with_capacity(chosen.len());
    // One budget of upload buffers for the process, whatever the number of accounts.
    let budget = run.store.memory_budget();
    for account in chosen {
        let mut settings = account.pass_settings(common.tz)?;
        settings.store.memory_budget = budget.clone();
        let deps = wiring::build_deps(ledger.scoped(&account.name), settings, prover.clone())?;
        let opts = args::run_options(
            run,
            deps.store.description(),
            slice.clone(),
            shutdown.child(),
        );
        passes.push(crate::archive::AccountPass {
            account: account.name,
            deps,
            opts,
        });
    }
    crate::archive::share(&mut passes, &shares);
    Ok(passes)
}

async fn run(cli: &Cli, common: &CommonSettings, args: &RunArgs) -> anyhow::Result<u8> {
    let shutdown = Shutdown::default();
    let mut passes = prepare_passes(common, args, &shutdown).await?;
    let signals = tokio::spawn(watch_signals(shutdown, args.grace));
    let meter = if args.dry_run {
        None
    } else {
        Meter::start(
            cli.progress,
            cli.log_format,
            cli.progress_interval,
            "run",
            Unit::Records,
        )
    };
    if let Some(meter) = &meter {
        for pass in &mut passes {
            pass.opts.progress = crate::archive::Progress::new(meter.clone());
        }
    }
    let results = crate::archive::run_accounts(&passes).await;
    signals.abort();
    if let Some(meter) = meter {
        meter.finish();
    }
    let mut ran = Vec::with_capacity(results.len());
    for (pass, result) in passes.iter().zip(results) {
        let account = &pass.account;
        ran.push(result.with_context(|| format!("the ledger failed during {account}'s pass"))?);
    }
    print_runs(&passes, &ran, args.json);
    if !args.dry_run {
        crate::metrics::publish_passes(&passes, &metrics_targets(args)).await;
    }
    if let Some(pass) = passes.first() {
        pass.deps.ledger.close().await;
    }
    // The highest of the accounts' codes: the worst outcome decides.
    let code = ran.iter().map(RunResult::exit_code).max().unwrap_or(0);
    Ok(u8::try_from(code).unwrap_or(EXIT_INCOMPLETE))
}

/// Each account's report; with one account, as a run over one account always printed it
/// (its JSON names the account).
fn print_runs(passes: &[crate::archive::AccountPass], results: &[RunResult], json: bool) {
    if let ([pass], [result]) = (passes, results) {
        print_run(result, json, &pass.account);
        return;
    }
    if json {
        let accounts: Vec<serde_json::Value> = passes
            .iter()
            .zip(results)
            .map(|(pass, result)| run_json(result, &pass.account))
            .collect();
        let code = results.iter().map(RunResult::exit_code).max().unwrap_or(0);
        println!(
            "{}",
            serde_json::json!({"accounts": accounts, "exit_code": code})
        );
        return;
    }
    for (pass, result) in passes.iter().zip(results) {
        println!("account {} (exit {}):", pass.account, result.exit_code());
        print!("{}", result.report.human());
        if let Some(err) = &result.error {
            eprintln!("callvault: {}'s pass stopped: {err}", pass.account);
        }
    }
}

fn run_json(result: &RunResult, account: &crate::accounts::AccountName) -> serde_json::Value {
    let mut value = serde_json::to_value(&result.report).unwrap_or_default();
    value["exit_code"] = result.exit_code().into();
    value["account"] = account.as_str().into();
    if let Some(err) = &result.error {
        value["stopped_by"] = err.to_string().into();
    }
    value
}

fn metrics_targets(args: &RunArgs) -> crate::metrics::Targets {
    crate::metrics::Targets {
        pushgateway: args.pushgateway.clone().filter(|u| !u.is_empty()),
        file: args.metrics_file.clone(),
    }
}

/// First SIGTERM/SIGINT: stop claiming, give in-flight transfers `grace`; a second: abort now.
pub async fn watch_signals(shutdown: Shutdown, grace: Duration) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM");
            return;
        }
    };
    for round in 0..2 {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        if round == 0 {
            tracing::warn!(grace = %humantime::format_duration(grace), "stop requested: no new claims; in-flight transfers may finish");
            shutdown.begin(grace);
        } else {
            tracing::warn!("second stop request: aborting in-flight transfers");
            shutdown.abort.cancel();
        }
    }
}

pub fn print_run(result: &RunResult, json: bool, account: &crate::accounts::AccountName) {
    if json {
        println!("{}", run_json(result, account));
    } else {
        print!("{}", result.report.human());
    }
    if let Some(err) = &result.error {
        eprintln!("callvault: run stopped: {err}");
    }
}

/// Each chosen account's status (every declared account unless `--account` names some);
/// with one account, as it always was (its JSON names the account).
async fn status(common: &CommonSettings, args: &StatusArgs) -> anyhow::Result<u8> {
    let names = accounts::names(common, &args.accounts)?;
    let ledger = open_ledger(&common.ledger).await?;
    let mut shown = Vec::with_capacity(names.len());
    for name in &names {
        let scoped = ledger.scoped(name);
        let report = scoped
            .status(
                Utc::now(),
                chrono::Duration::days(i64::from(args.retention_days)),
            )
            .await?;
        let syncs = scoped.sync_figures().await?;
        let log = scoped.proof_figures().await?;
        if args.json {
            let mut value = serde_json::to_value(&report)?;
            value["sync"] = serde_json::to_value(&syncs)?;
            value["log"] = serde_json::to_value(&log)?;
            value["account"] = name.as_str().into();
            shown.push(value);
        } else {
            if names.len() > 1 {
                println!("account {name}:");
            }
            print_status(&report);
            print_sync_status(&syncs);
            print_log_status(&log);
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
    Ok(EXIT_OK)
}

/// The Merkle log: its size, and the checkpoints still without a signature or a token.
fn print_log_status(log: &crate::ledger::ProofFigures) {
    let oldest = log
        .oldest_unstamped_at
        .map(|t| format!(", the oldest written {}", crate::timefmt::to_ledger(t)))
        .unwrap_or_default();
    println!(
        "log: {} line(s), {} checkpoint(s); {} unsigned; {} without a time-stamp{oldest}; {} \
         manifest(s) not logged yet",
        log.leaves, log.checkpoints, log.unsigned, log.unstamped, log.unlogged_manifests
    );
}

/// The counts, the oldest pending call, the calls at risk and the last run.
fn print_status(report: &crate::ledger::StatusReport) {
    for (state, n) in &report.counts {
        println!("{state:>13}  {n}");
    }
    println!("{:>13}  {}", "total", report.total);
    match (
        report.oldest_pending_call,
        report.oldest_pending_age_seconds,
    ) {
        (Some(t), Some(age)) => {
            println!("oldest pending call: {t} ({} days old)", age / 86_400)
        }
        _ => println!("oldest pending call: none"),
    }
    println!(
        "not archived, deleted by the provider within 14 days: {}",
        report.at_risk_within_14_days
    );
    println!(
        "archived, flagged (duration disagrees with billsec): {}",
        report.media_flagged
    );
    match &report.last_run {
        Some(run) => println!(
            "last run: {} {} (exit {}), started {}",
            run.id,
            run.status,
            run.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
            run.started_at.map_or_else(|| "?".into(), |t| t.to_string())
        ),
        None => println!("last run: none"),
    }
}

/// The last sync, the last complete one, and what only the bill list knew.
fn print_sync_status(syncs: &crate::ledger::SyncFigures) {
    match &syncs.last_sync {
        Some(sync) => println!(
            "last sync: {} {} (exit {}), started {}, {} bills read, {} calls found whose callback never came, covered until {}",
            sync.id,
            sync.status.as_str(),
            sync.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
            sync.started_at,
            sync.progress.bills,
            sync.progress.found,
            sync.progress
                .covered_until
                .map_or_else(|| "-".into(), |t| t.to_string())
        ),
        None => println!("last sync: none"),
    }
    match syncs.last_success_at {
        Some(t) => println!("last complete sync: {t}"),
        None => println!("last complete sync: none"),
    }
    println!(
        "known only from the bill list (callback never came): {}",
        syncs.found_by_sync
    );
    println!(
        "stored with unreadable fields (see their notes): {}",
        syncs.noted
    );
}
