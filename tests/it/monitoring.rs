//! The metric names callvault exports, as `deploy/monitoring/` relies on them. The alert
//! rules and the dashboard are checked by `.ci/validate-deploy` against
//! `deploy/monitoring/metric-names.txt`; this test makes sure that list is what the real
//! program exports: `serve` in this process with a receiver, scheduled passes and scheduled
//! syncs over a populated ledger (every gauge then has a value), its `/metrics` and the
//! passes' textfile read, every family's sample names and labels taken from them.
//! When a metric is added or renamed the test fails with the difference; rewrite the list
//! with `CALLVAULT_BLESS=1 cargo test --test it monitoring`, then fix the rules and the
//! dashboard that `.ci/validate-deploy` reports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use callvault::accounts::AccountName;
use callvault::archive::{AccountPass, Shutdown};
use callvault::provider::ProviderClient;
use callvault::serve::{
    CallbackAnswer, ScheduledPasses, ScheduledSyncs, ServeOptions, parse_schedule, serve,
};
use callvault::sync::{AccountSync, SyncDeps, SyncOptions};
use callvault::timefmt::default_provider_tz;

use crate::cli::wait_for;
use crate::world::World;

const SECRET: &str = "monitoring-callback-secret-0123";
const LIST: &str = "deploy/monitoring/metric-names.txt";

/// One exported sample name: its family's type and the labels its samples carry.
type Names = BTreeMap<String, (String, BTreeSet<String>)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listed_metric_names_are_the_ones_callvault_exports() {
    let world = World::new().await;
    world.sim.sample_callbacks(4, chrono::Utc::now());
    let textfile = world.dir.path().join("callvault.prom");

    let (serve_text, file_text) = serve_and_scrape(&world, &textfile).await;

    let mut names = Names::new();
    sample_names(&serve_text, &mut names);
    sample_names(&file_text, &mut names);
    let written = render_list(&names);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(LIST);
    if std::env::var_os("CALLVAULT_BLESS").is_some() {
        std::fs::write(&path, &written).unwrap();
    }
    let listed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        listed == written,
        "{LIST} is not what callvault exports; rewrite it with \
         `CALLVAULT_BLESS=1 cargo test --test it monitoring`, then run .ci/validate-deploy.\n\
         listed:\n{listed}\nexported:\n{written}"
    );
}

/// `serve` with a receiver (one callback stored, one refused), a pass and a sync each
/// second, until the passes' textfile and `/metrics` hold a pass's and a sync's figures;
/// returns both texts.
async fn serve_and_scrape(world: &World, textfile: &Path) -> (String, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = Shutdown::default();
    let options = serve_options(world, textfile.to_path_buf());
    let stop = shutdown.clone();
    let task = tokio::spawn(async move { serve(listener, options, stop).await.unwrap() });

    let client = reqwest::Client::new();
    let callback = world.sim.sample_callbacks(1, chrono::Utc::now()).remove(0);
    for secret in [SECRET, "not-the-secret"] {
        client
            .post(format!("{base}/callback/{secret}"))
            .body(callback.to_string())
            .send()
            .await
            .unwrap();
    }
    let scrape = async || {
        let text = reqwest::get(format!("{base}/metrics")).await.ok()?;
        text.text().await.ok()
    };
    let mut scraped = String::new();
    let complete = wait_for(Duration::from_secs(60), async || {
        scraped = scrape().await.unwrap_or_default();
        [
            "callvault_scheduled_passes_total{",
            "callvault_scheduled_syncs_total{",
            "callvault_last_success_timestamp_seconds{",
            "callvault_sync_last_success_timestamp_seconds{",
        ]
        .iter()
        .all(|m| scraped.contains(m))
            && textfile.exists()
    })
    .await;
    assert!(complete, "a pass and a sync ran; /metrics:\n{scraped}");
    let file_text = std::fs::read_to_string(textfile).unwrap();

    shutdown.stop_claiming.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("serve stops")
        .unwrap();
    (scraped, file_text)
}

fn serve_options(world: &World, textfile: PathBuf) -> ServeOptions {
    let account = AccountName::default_account();
    let each_second = || parse_schedule("* * * * * *").unwrap();
    ServeOptions {
        accounts: vec![account.clone()],
        ledger: world.ledger.clone(),
        receiver: Some(crate::world::receiver(SECRET, CallbackAnswer::Json)),
        ui: None,
        retention: chrono::Duration::days(90),
        passes: Some(ScheduledPasses {
            schedule: each_second(),
            passes: vec![AccountPass {
                account: account.clone(),
                deps: world.deps(),
                opts: world.options(),
            }],
            metrics: callvault::metrics::Targets {
                pushgateway: None,
                file: Some(textfile),
            },
        }),
        syncs: Some(ScheduledSyncs {
            schedule: each_second(),
            accounts: vec![AccountSync {
                account,
                deps: SyncDeps {
                    ledger: world.ledger.clone(),
                    provider: Arc::new(ProviderClient::new(world.provider_config()).unwrap()),
                },
            }],
            options: SyncOptions::new(default_provider_tz()),
        }),
    }
}

/// Every sample name of a Prometheus/OpenMetrics text with its family's type and labels.
/// A family declared without samples still gives the names its type implies (a counter's
/// `_total`, a histogram's `_bucket`, `_sum` and `_count`, a summary's `_sum` and
/// `_count`), without labels.
fn sample_names(text: &str, names: &mut Names) {
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut parts = declared.split_whitespace();
            if let (Some(family), Some(kind)) = (parts.next(), parts.next()) {
                types.insert(family.to_owned(), kind.to_owned());
            }
        }
    }
    for (family, kind) in &types {
        let suffixes: &[&str] = match kind.as_str() {
            "counter" => &["_total"],
            "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["", "_sum", "_count"],
            _ => &[""],
        };
        for suffix in suffixes {
            names
                .entry(format!("{family}{suffix}"))
                .or_insert_with(|| (kind.clone(), BTreeSet::new()));
        }
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let kind = family_type(name, &types);
        let labels = names
            .entry(name.to_owned())
            .or_insert_with(|| (kind, BTreeSet::new()));
        if let Some(inner) = line[name_end..].strip_prefix('{') {
            let inner = &inner[..inner.find('}').unwrap_or(inner.len())];
            for pair in inner.split(',').filter(|p| !p.is_empty()) {
                let key = pair.split('=').next().unwrap_or_default().trim();
                labels.1.insert(key.to_owned());
            }
        }
    }
}

/// The type of the family a sample belongs to (its name, or its name less a suffix).
fn family_type(sample: &str, types: &BTreeMap<String, String>) -> String {
    ["", "_total", "_bucket", "_sum", "_count", "_created"]
        .iter()
        .find_map(|suffix| types.get(sample.strip_suffix(suffix)?))
        .cloned()
        .unwrap_or_else(|| "untyped".to_owned())
}

fn render_list(names: &Names) -> String {
    let mut text = String::from(
        "# The metric names callvault exports: one sample name a line, its type, its labels.\n\
         # Written by tests/it/monitoring.rs (CALLVAULT_BLESS=1), which fails when this list\n\
         # is not what the program exports; .ci/validate-deploy checks deploy/monitoring/\n\
         # against it.\n",
    );
    for (name, (kind, labels)) in names {
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        text.push_str(&format!("{name} {kind} {}\n", labels.join(",")).replace(" \n", "\n"));
    }
    text
}
