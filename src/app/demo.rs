//! `callvault demo`: the whole job on embedded defaults, with nothing configured — the
//! simulator in-process (with a few faults to show recovery), a receiver that misses 10% of
//! the callbacks, a sync that finds those calls in the bill list, a fresh ledger, a local
//! directory as the store, then a legal hold and an erasure.
//!
//! It tells that story on standard output, one line a step, then a summary and what to
//! try next; its log lines stay at `warn` unless `--verbose`, `--log` or RUST_LOG ask for
//! more (`app::args` decides), so that a person reads the story, not the machinery.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{FixedOffset, Utc};
use secrecy::SecretString;

use super::EXIT_OK;
use crate::archive::{Deps, RetryPolicy, RunOptions, RunResult, Shutdown, run_pass};
use crate::cli::DemoArgs;
use crate::domain::{CallUuid, RecordState};
use crate::ledger::{CallQuery, Ledger, Slice};
use crate::provider::{
    DownloadPolicy, Downloader, DownloaderSettings, ProviderClient, ProviderConfig,
};
use crate::retention::{Actor, EraseMode, Selection, erase, place_hold};
use crate::serve::{CallbackAnswer, ReceiverConfig, ServeOptions, serve};
use crate::simulator::{Delivery, DownloadFault, Simulator, SimulatorConfig};
use crate::store::{DEFAULT_TEMPLATE, KeyTemplate, Store, StoreConfig};
use crate::sync::{SyncDeps, SyncOptions, run_sync};
use crate::timefmt::default_provider_tz;

/// How long the provider keeps recordings, as the demo assumes.
const RETENTION_DAYS: i64 = 90;

/// What the demo works in: a fresh folder holding its ledger and archive, and the
/// simulated provider with its sample calls.
struct Stage {
    dir: PathBuf,
    ledger_path: PathBuf,
    store_url: url::Url,
    sim: Simulator,
    sim_config: SimulatorConfig,
    callbacks: Vec<serde_json::Value>,
    ledger: Ledger,
    tz: FixedOffset,
}

pub async fn run_demo(args: &DemoArgs) -> anyhow::Result<u8> {
    let stage = set_up(args).await?;
    let delivery = receive_callbacks(&stage).await?;
    let provider = Arc::new(provider_client(&stage)?);
    recover_by_sync(&stage, &provider, &delivery).await?;
    let (result, store) = archive(&stage, provider).await?;
    compliance(&stage, &store).await?;
    summarize(&stage).await?;
    stage.ledger.close().await;
    stage.sim.shutdown().await;
    Ok(match result.exit_code() {
        0 => EXIT_OK,
        code => u8::try_from(code).unwrap_or(1),
    })
}

/// A fresh folder, the simulator with its sample calls and faults, an empty ledger.
async fn set_up(args: &DemoArgs) -> anyhow::Result<Stage> {
    let dir = args
        .dir
        .join(Utc::now().format("%Y%m%d-%H%M%S").to_string());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let ledger_path = dir.join("ledger.db");
    let store_url = url::Url::from_directory_path(dir.join("archive"))
        .map_err(|()| anyhow::anyhow!("bad demo path {}", dir.display()))?;
    let sim_config = SimulatorConfig::default();
    let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), sim_config.clone()).await?;
    let callbacks = sim.sample_callbacks(args.calls, Utc::now());
    let lines: Vec<String> = callbacks.iter().map(|c| c.to_string()).collect();
    std::fs::write(dir.join("callbacks.jsonl"), lines.join("\n") + "\n")?;
    // A flaky provider, as in real life: tokens invalidated now and then, one broken download.
    sim.set_faults(|f| f.invalidate_tokens_every = Some(5));
    if let Some(file) = callbacks
        .iter()
        .filter_map(|c| c["recordfilename"].as_str())
        .find(|f| !f.is_empty())
    {
        sim.push_download_fault(file, DownloadFault::Truncate(1000));
    }
    let ledger = Ledger::open(&format!("sqlite://{}", ledger_path.display())).await?;
    println!(
        "demo:     a simulated provider with {} sample calls (its logins expire now and then, one \
         download breaks); all that follows goes into {}",
        callbacks.len(),
        dir.display()
    );
    Ok(Stage {
        dir,
        ledger_path,
        store_url,
        sim,
        sim_config,
        callbacks,
        ledger,
        tz: default_provider_tz(),
    })
}

/// Posts the sample callbacks to a receiver on the demo's ledger (`serve`'s, in this
/// process), with 10% of them dropped by the simulator.
async fn receive_callbacks(stage: &Stage) -> anyhow::Result<Delivery> {
    const SECRET: &str = "demo-callback-secret";
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let url = format!("http://{}/callback/{SECRET}", listener.local_addr()?);
    let shutdown = Shutdown::default();
    let options = ServeOptions {
        accounts: vec![crate::accounts::AccountName::default_account()],
        ledger: stage.ledger.clone(),
        receiver: Some(ReceiverConfig {
            accounts: vec![crate::serve::CallbackAccount::default_account(
                SecretString::from(SECRET),
            )],
            allow_from: Vec::new(),
            max_body_bytes: 64 * 1024,
            tz: stage.tz,
            answer: CallbackAnswer::Json,
        }),
        ui: None,
        retention: chrono::Duration::days(RETENTION_DAYS),
        passes: None,
        syncs: None,
    };
    let server = tokio::spawn(serve(listener, options, shutdown.clone()));
    stage.sim.set_faults(|f| f.drop_callbacks_percent = 10);
    // Newest first, as a backlog drains; the dropped ones then are calls with recordings.
    let newest_first: Vec<_> = stage.callbacks.iter().rev().cloned().collect();
    let delivery = stage.sim.deliver_callbacks(&url, &newest_first).await;
    stage.sim.set_faults(|f| f.drop_callbacks_percent = 0);
    shutdown.stop_claiming.cancel();
    server.await??;
    println!(
        "receive:  receiver got {} callbacks; {} were dropped on the way (a callback outage)",
        delivery.delivered.len(),
        delivery.dropped.len()
    );
    Ok(delivery)
}

fn provider_client(stage: &Stage) -> anyhow::Result<ProviderClient> {
    Ok(ProviderClient::new(ProviderConfig {
        api_url: stage.sim.api_url().parse()?,
        appid: stage.sim_config.appid.clone(),
        accesskey: SecretString::from(stage.sim_config.accesskey.clone()),
        api_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        token_max_age: Duration::from_secs(11 * 3600),
        tz: stage.tz,
        pace: Arc::default(),
    })?)
}

/// A sync with the provider's bill list, which names the calls whose callback was dropped.
async fn recover_by_sync(
    stage: &Stage,
    provider: &Arc<ProviderClient>,
    delivery: &Delivery,
) -> anyhow::Result<()> {
    let deps = SyncDeps {
        ledger: stage.ledger.clone(),
        provider: Arc::clone(provider),
    };
    let options = SyncOptions {
        retry_delay: Duration::from_millis(200),
        ..SyncOptions::new(stage.tz)
    };
    let sync = run_sync(&deps, &options).await?;
    if let Some(err) = &sync.error {
        eprintln!("callvault: sync stopped: {err}");
    }
    let was_dropped = |bill_id: Option<&str>| {
        stage.callbacks.iter().any(|cb| {
            delivery.dropped.iter().any(|u| cb["uuid"] == u.as_str())
                && cb["id"].to_string().trim_matches('"') == bill_id.unwrap_or("")
        })
    };
    let recovered = sync
        .found_calls
        .iter()
        .filter(|c| was_dropped(c.bill_id.as_deref()))
        .count();
    println!(
        "sync:     {} bills read; sync recovered {recovered} of the {} dropped callbacks' calls \
         from the provider's bill list",
        sync.progress.bills,
        delivery.dropped.len()
    );
    Ok(())
}

/// One archival pass into the demo's folder; its store stays open for what follows.
async fn archive(
    stage: &Stage,
    provider: Arc<ProviderClient>,
) -> anyhow::Result<(RunResult, Store)> {
    let deps = Deps {
        ledger: stage.ledger.clone(),
        provider,
        downloader: Downloader::new(DownloaderSettings {
            connect_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(10),
            // The simulator runs on loopback, which downloads may not reach by default.
            policy: DownloadPolicy::new(
                &stage.sim.api_url().parse()?,
                &[],
                &["127.0.0.0/8".into()],
            )
            .map_err(anyhow::Error::msg)?,
            proxy: None,
        })?,
        store: Store::open(&StoreConfig::new(stage.store_url.as_str()))?,
        keys: KeyTemplate::parse(DEFAULT_TEMPLATE, stage.tz)?,
        clock: crate::clock::Clock::system(),
    };
    let result = run_pass(&deps, &pass_options()).await?;
    print_pass(&result);
    Ok((result, deps.store))
}

fn pass_options() -> RunOptions {
    RunOptions {
        concurrency: 4,
        max_records: None,
        deadline: None,
        dry_run: false,
        lease: Duration::from_secs(60),
        retry: RetryPolicy {
            base_delay: Duration::from_millis(200),
            ..RetryPolicy::default()
        },
        retention: chrono::Duration::days(RETENTION_DAYS),
        slice: Slice::default(),
        grace: Duration::from_secs(5),
        shutdown: Shutdown::default(),
        description: serde_json::json!({"demo": true}),
        host: crate::config::hostname(),
        progress: Default::default(),
        slots: None,
    }
}

fn print_pass(result: &RunResult) {
    let r = &result.report;
    let manifests: Vec<&str> = r.manifests.iter().map(|m| m.key.as_str()).collect();
    println!(
        "archive:  run {}: archived {}, retry later {}, failed {}, expired {}; {:.1} MiB in \
         {:.1} s, {} provider login(s), {} broken download(s) resumed; manifest {} lists them",
        r.run_id,
        r.archived,
        r.retry_later,
        r.failed,
        r.expired,
        r.bytes as f64 / (1024.0 * 1024.0),
        r.duration_seconds,
        r.logins,
        r.resumed_downloads,
        if manifests.is_empty() {
            "none".to_owned()
        } else {
            manifests.join(", ")
        }
    );
    if let Some(err) = &result.error {
        eprintln!("callvault: run stopped: {err}");
    }
}

/// A legal hold and erasure, as a compliance team uses them: one archived call put on hold
/// (a dispute), an erasure of it refused, naming the hold; another erased (a GDPR request),
/// its tombstone listed by the next manifest.
async fn compliance(stage: &Stage, store: &Store) -> anyhow::Result<()> {
    let ledger = &stage.ledger;
    let archived = ledger
        .find_calls(&CallQuery {
            states: vec![RecordState::Archived],
            limit: 2,
            ..CallQuery::default()
        })
        .await?;
    let [held, gone] = archived.as_slice() else {
        println!("hold:     fewer than two calls archived; no hold or erasure shown");
        return Ok(());
    };
    let actor = Actor::new("demo").context("the demo's actor")?;
    let one = |uuid: &CallUuid| {
        Selection::new(CallQuery {
            uuids: vec![uuid.clone()],
            ..CallQuery::default()
        })
    };
    let now = Utc::now();
    let reason = "DEMO-CASE-1 (a disputed call)";
    let hold = place_hold(ledger, store, &one(&held.uuid), reason, &actor, now).await?;
    let hold_id = hold.hold.context("the demo's hold")?;
    let mode = EraseMode::Chosen {
        reason: "DEMO-GDPR-1 (an erasure request)".into(),
    };
    let refused = erase(ledger, store, &one(&held.uuid), &mode, &actor, true, now).await?;
    let why: Vec<String> = refused.kept.iter().map(|k| k.why.to_string()).collect();
    println!(
        "hold:     call {} put on legal hold {hold_id} (the ledger's hold keeps it: a local \
         folder has no Object Lock); erasing it refused: {}",
        held.uuid,
        why.join("; ")
    );
    let erased = erase(ledger, store, &one(&gone.uuid), &mode, &actor, true, now).await?;
    let listed = crate::audit::write_manifests(
        ledger,
        store,
        &crate::domain::RunId::generate(),
        Duration::from_secs(60),
        &crate::clock::Clock::system(),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await?;
    for e in &erased.erased {
        println!(
            "erase:    call {} erased (DEMO-GDPR-1): {} bytes gone, a tombstone kept, personal \
             data blanked",
            e.uuid, e.size
        );
    }
    for m in &listed {
        println!("erase:    manifest {} lists the erasure", m.key);
    }
    Ok(())
}

/// What the ledger holds now, how complete the days are, and what to try next.
async fn summarize(stage: &Stage) -> anyhow::Result<()> {
    let retention = chrono::Duration::days(RETENTION_DAYS);
    let now = Utc::now();
    let status = stage.ledger.status(now, retention).await?;
    let days = stage
        .ledger
        .completeness(
            now - retention,
            now + chrono::Duration::days(1),
            stage.tz,
            crate::ledger::risk_line(now, retention),
        )
        .await?;
    let counts: Vec<String> = status
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(state, n)| match *state {
            "no_recording" => format!("{n} without recording"),
            state => format!("{n} {}", state.replace('_', " ")),
        })
        .collect();
    let stats = stage.sim.stats();
    println!(
        "summary:  the ledger holds {}; {} of {} days complete; the provider saw {} login(s), \
         {} link request(s), {} download(s)",
        counts.join(", "),
        days.iter().filter(|d| d.complete()).count(),
        days.len(),
        stats.logins,
        stats.url_requests,
        stats.downloads
    );
    print_next_steps(stage);
    Ok(())
}

fn print_next_steps(stage: &Stage) {
    println!(
        "try:      export CALLVAULT_LEDGER=sqlite://{} CALLVAULT_STORE={}",
        stage.ledger_path.display(),
        stage.store_url
    );
    println!(
        "          callvault status; callvault completeness; callvault holds; callvault find \
         --company {}; callvault verify --manifests",
        stage.sim_config.company_code
    );
    println!(
        "          (recordings, sidecars and manifests are in {})",
        stage.dir.join("archive").display()
    );
}
