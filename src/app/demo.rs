//! `callvault demo`: the whole job on embedded defaults, with nothing configured — the
//! simulator in-process (with a few faults to show recovery), a fresh ledger, a local
//! directory as the store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use secrecy::SecretString;

use super::{EXIT_OK, ImportCounts, import_source, print_run};
use crate::archive::{Deps, RetryPolicy, RunOptions, Shutdown, run_pass};
use crate::cli::DemoArgs;
use crate::ledger::{Ledger, Slice};
use crate::provider::{
    DownloadPolicy, Downloader, DownloaderSettings, ProviderClient, ProviderConfig,
};
use crate::simulator::{DownloadFault, Simulator, SimulatorConfig};
use crate::store::{DEFAULT_TEMPLATE, KeyTemplate, Store, StoreConfig};
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
    let mut counts = ImportCounts::default();
    import_source(
        &ledger,
        &callbacks_path,
        crate::cli::ImportFormat::Json,
        tz,
        &mut counts,
        None,
    )
    .await?;
    println!(
        "imported {} call records ({} without a recording)",
        counts.new, counts.no_recording
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
    let store_url = url::Url::from_directory_path(&archive_dir)
        .map_err(|()| anyhow::anyhow!("bad demo path"))?;
    let deps = Deps {
        ledger: ledger.clone(),
        provider: Arc::new(provider),
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
    ledger.close().await;
    sim.shutdown().await;
    Ok(if result.exit_code() == 0 {
        EXIT_OK
    } else {
        u8::try_from(result.exit_code()).unwrap_or(1)
    })
}
