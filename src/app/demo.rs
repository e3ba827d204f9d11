//! `callvault demo`: the whole job on embedded defaults, with nothing configured — the
//! simulator in-process (with a few faults to show recovery), a receiver that misses 10% of
//! the callbacks, a sync that finds those calls in the bill list, a fresh ledger, a local
//! directory as the store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use secrecy::SecretString;

use super::{EXIT_OK, print_run};
use crate::archive::{Deps, RetryPolicy, RunOptions, Shutdown, run_pass};
use crate::cli::DemoArgs;
use crate::ledger::{Ledger, Slice};
use crate::provider::{
    DownloadPolicy, Downloader, DownloaderSettings, ProviderClient, ProviderConfig,
};
use crate::serve::{CallbackAnswer, ReceiverConfig, ServeOptions, serve};
use crate::simulator::{DownloadFault, Simulator, SimulatorConfig};
use crate::store::{DEFAULT_TEMPLATE, KeyTemplate, Store, StoreConfig};
use crate::sync::{SyncDeps, SyncOptions, run_sync};
use crate::timefmt::default_provider_tz;

pub async fn run_demo(args: &DemoArgs) -> anyhow::Result<u8> {
    let dir = args
        .dir
        .join(Utc::now().format("%Y%m%d-%H%M%S").to_string());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let archive_dir = dir.join("archive");
    let ledger_path = dir.join("ledger.db");
    let callbacks_path = dir.join("callbacks.jsonl");

    let config = SimulatorConfig::default();
    let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), config.clone()).await?;
    let callbacks = sim.sample_callbacks(args.calls, Utc::now());
    let lines: Vec<String> = callbacks.iter().map(|c| c.to_string()).collect();
    std::fs::write(&callbacks_path, lines.join("\n") + "\n")?;
    // A flaky provider, as in real life: tokens invalidated now and then, one broken download.
    sim.set_faults(|f| f.invalidate_tokens_every = Some(5));
    if let Some(file) = callbacks
        .iter()
        .filter_map(|c| c["recordfilename"].as_str())
        .find(|f| !f.is_empty())
    {
        sim.push_download_fault(file, DownloadFault::Truncate(1000));
    }
    println!(
        "provider simulator at {} with {} sample calls",
        sim.api_url(),
        callbacks.len()
    );

    let tz = default_provider_tz();
    let ledger = Ledger::open(&format!("sqlite://{}", ledger_path.display())).await?;
    let delivery = receive_callbacks(&ledger, &sim, &callbacks, tz).await?;
    println!(
        "receiver got {} callbacks; {} were dropped on the way (a callback outage)",
        delivery.delivered.len(),
        delivery.dropped.len()
    );

    let provider = ProviderClient::new(ProviderConfig {
        api_url: sim.api_url().parse()?,
        appid: config.appid.clone(),
        accesskey: SecretString::from(config.accesskey.clone()),
        api_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        token_max_age: Duration::from_secs(11 * 3600),
        tz,
        pace: Arc::default(),
    })?;
    let provider = Arc::new(provider);
    let sync = run_sync(
        &SyncDeps {
            ledger: ledger.clone(),
            provider: Arc::clone(&provider),
        },
        &SyncOptions {
            retry_delay: Duration::from_millis(200),
            ..SyncOptions::new(tz)
        },
    )
    .await?;
    print!("{}", sync.human());
    let recovered = sync
        .found_calls
        .iter()
        .filter(|c| {
            callbacks.iter().any(|cb| {
                delivery.dropped.iter().any(|u| cb["uuid"] == u.as_str())
                    && cb["id"].to_string().trim_matches('"') == c.bill_id.as_deref().unwrap_or("")
            })
        })
        .count();
    println!(
        "sync recovered {recovered} of the {} dropped callbacks' calls from the provider's bill list",
        delivery.dropped.len()
    );
    let store_url = url::Url::from_directory_path(&archive_dir)
        .map_err(|()| anyhow::anyhow!("bad demo path"))?;
    let deps = Deps {
        ledger: ledger.clone(),
        provider,
        downloader: Downloader::new(DownloaderSettings {
            connect_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(10),
            // The simulator runs on loopback, which downloads may not reach by default.
            policy: DownloadPolicy::new(&sim.api_url().parse()?, &[], &["127.0.0.0/8".into()])
                .map_err(anyhow::Error::msg)?,
            proxy: None,
        })?,
        store: Store::open(&StoreConfig::new(store_url.as_str()))?,
        keys: KeyTemplate::parse(DEFAULT_TEMPLATE, tz)?,
        clock: crate::clock::Clock::system(),
    };
    let opts = RunOptions {
        concurrency: 4,
        max_records: None,
        deadline: None,
        dry_run: false,
        lease: Duration::from_secs(60),
        retry: RetryPolicy {
            base_delay: Duration::from_millis(200),
            ..RetryPolicy::default()
        },
        retention: chrono::Duration::days(90),
        slice: Slice::default(),
        grace: Duration::from_secs(5),
        shutdown: Shutdown::default(),
        description: serde_json::json!({"demo": true}),
        host: crate::config::hostname(),
        progress: Default::default(),
    };
    let result = run_pass(&deps, &opts).await?;
    print_run(&result, false);
    compliance(&ledger, &deps.store, &ledger_path, &store_url).await?;
    let status = ledger.status(Utc::now(), opts.retention).await?;
    println!("ledger: {}", serde_json::to_string(&status.counts)?);
    println!(
        "provider: {} login(s), {} link request(s), {} download(s)",
        sim.stats().logins,
        sim.stats().url_requests,
        sim.stats().downloads
    );
    println!("recordings are in {}", archive_dir.display());
    println!(
        "the ledger is {} (try: callvault --ledger sqlite://{} status)",
        ledger_path.display(),
        ledger_path.display()
    );
    let now = Utc::now();
    let days = ledger
        .completeness(
            now - opts.retention,
            now + chrono::Duration::days(1),
            tz,
            crate::ledger::risk_line(now, opts.retention),
        )
        .await?;
    let complete = days.iter().filter(|d| d.complete()).count();
    println!(
        "completeness: {complete} of {} days complete (try: callvault --ledger sqlite://{} completeness)",
        days.len(),
        ledger_path.display()
    );
    ledger.close().await;
    sim.shutdown().await;
    Ok(if result.exit_code() == 0 {
        EXIT_OK
    } else {
        u8::try_from(result.exit_code()).unwrap_or(1)
    })
}

/// A legal hold and erasure, as a compliance team uses them: one archived call put on hold
/// (a dispute), an erasure of it refused, naming the hold; another erased (a GDPR request),
/// its tombstone listed by the next manifest.
async fn compliance(
    ledger: &Ledger,
    store: &Store,
    ledger_path: &std::path::Path,
    store_url: &url::Url,
) -> anyhow::Result<()> {
    use crate::ledger::CallQuery;
    use crate::retention::{Actor, EraseMode, Selection, erase, place_hold};
    let archived = ledger
        .find_calls(&CallQuery {
            states: vec![crate::domain::RecordState::Archived],
            limit: 2,
            ..CallQuery::default()
        })
        .await?;
    let [held, gone] = archived.as_slice() else {
        println!("compliance: fewer than two calls archived; no hold or erasure shown");
        return Ok(());
    };
    let actor = Actor::new("demo").context("the demo's actor")?;
    let one = |uuid: &crate::domain::CallUuid| {
        Selection::new(CallQuery {
            uuids: vec![uuid.clone()],
            ..CallQuery::default()
        })
    };
    let now = Utc::now();
    let hold = place_hold(
        ledger,
        store,
        &one(&held.uuid),
        "DEMO-CASE-1 (a disputed call)",
        &actor,
        now,
    )
    .await?;
    let hold_id = hold.hold.context("the demo's hold")?;
    println!(
        "compliance: call {} put on legal hold {hold_id} (a local directory has no Object Lock: the ledger's hold alone keeps it)",
        held.uuid
    );
    let mode = EraseMode::Chosen {
        reason: "DEMO-GDPR-1 (an erasure request)".into(),
    };
    let refused = erase(ledger, store, &one(&held.uuid), &mode, &actor, true, now).await?;
    for kept in &refused.kept {
        println!("compliance: erasing {} refused: {}", kept.uuid, kept.why);
    }
    let erased = erase(ledger, store, &one(&gone.uuid), &mode, &actor, true, now).await?;
    for e in &erased.erased {
        println!(
            "compliance: call {} erased ({}, {} bytes): tombstone kept, personal data blanked",
            e.uuid, e.key, e.size
        );
    }
    let listed = crate::audit::write_manifests(
        ledger,
        store,
        &crate::domain::RunId::generate(),
        Duration::from_secs(60),
        &crate::clock::Clock::system(),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await?;
    for m in &listed {
        println!("compliance: manifest {} lists the erasure", m.key);
    }
    let at = ledger_path.display();
    println!(
        "compliance: try callvault --ledger sqlite://{at} holds; \
         callvault --ledger sqlite://{at} erase --store {store_url} --uuid {} --reason R (a dry run: it names the hold); \
         callvault --ledger sqlite://{at} verify --manifests --store {store_url}",
        held.uuid
    );
    Ok(())
}

/// Posts the sample callbacks to a receiver on the demo's ledger (`serve`'s, in this
/// process), with 10% of them dropped by the simulator.
async fn receive_callbacks(
    ledger: &Ledger,
    sim: &Simulator,
    callbacks: &[serde_json::Value],
    tz: chrono::FixedOffset,
) -> anyhow::Result<crate::simulator::Delivery> {
    const SECRET: &str = "demo-callback-secret";
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let url = format!("http://{}/callback/{SECRET}", listener.local_addr()?);
    let shutdown = Shutdown::default();
    let options = ServeOptions {
        ledger: ledger.clone(),
        receiver: Some(ReceiverConfig {
            secret: SecretString::from(SECRET),
            allow_from: Vec::new(),
            max_body_bytes: 64 * 1024,
            tz,
            answer: CallbackAnswer::Json,
        }),
        ui: None,
        retention: chrono::Duration::days(90),
        passes: None,
        syncs: None,
    };
    let server = tokio::spawn(serve(listener, options, shutdown.clone()));
    sim.set_faults(|f| f.drop_callbacks_percent = 10);
    // Newest first, as a backlog drains; the dropped ones then are calls with recordings.
    let newest_first: Vec<_> = callbacks.iter().rev().cloned().collect();
    let delivery = sim.deliver_callbacks(&url, &newest_first).await;
    sim.set_faults(|f| f.drop_callbacks_percent = 0);
    shutdown.stop_claiming.cancel();
    server.await??;
    Ok(delivery)
}
