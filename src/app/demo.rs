//! `callvault demo`: the whole job on embedded defaults, with nothing configured — a
//! provider simulator in-process serving two accounts (a BPO's two clients, `acme` and
//! `globex`, each with its own appid and accesskey; a provider that invalidates tokens now
//! and then, for both, and breaks one of acme's downloads, to show recovery), a receiver that misses 10% of acme's callbacks, a sync that finds those calls
//! in acme's bill list and all of globex's in its own, one fresh ledger for both, one run
//! that archives both accounts side by side into a local folder each (`archive/acme/`,
//! `archive/globex/`), a legal hold and an erasure on acme, each account's retention
//! applied, and one status per account.
//!
//! Retention: a local folder has no Object Lock, so an account's `retain-for` cannot lock
//! its objects here (on S3 with Object Lock it would, until each call's start plus it);
//! what the demo shows is its other half, `expire`: globex's contract keeps recordings
//! 14 days, acme's 7 years, so the calls past globex's retention are erased and acme's kept.
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
use crate::accounts::AccountName;
use crate::archive::{
    AccountPass, Deps, RetryPolicy, RunOptions, RunResult, Shutdown, run_accounts, share,
};
use crate::cli::DemoArgs;
use crate::domain::{CallUuid, RecordState};
use crate::ledger::{CallQuery, Ledger, Slice};
use crate::provider::{
    DownloadPolicy, Downloader, DownloaderSettings, ProviderClient, ProviderConfig,
};
use crate::retention::{Actor, EraseMode, Selection, erase, place_hold};
use crate::serve::{CallbackAnswer, ReceiverConfig, ServeOptions, serve};
use crate::simulator::{
    AccountConfig, Delivery, DownloadFault, ProviderAccount, Simulator, SimulatorConfig,
};
use crate::store::{DEFAULT_TEMPLATE, KeyTemplate, RetainFor, Store, StoreConfig};
use crate::sync::{SyncDeps, SyncOptions, SyncReport, run_sync};
use crate::timefmt::default_provider_tz;

/// How long the provider keeps recordings, as the demo assumes.
const RETENTION_DAYS: i64 = 90;

/// One of the demo's two provider accounts: its calls at the provider, its rows in the
/// ledger, its folder, and how long its contract keeps recordings.
struct DemoAccount {
    name: AccountName,
    provider: ProviderAccount,
    /// The demo's ledger, scoped to this account.
    ledger: Ledger,
    store_url: url::Url,
    retain_for: RetainFor,
    callbacks: Vec<serde_json::Value>,
}

/// What the demo works in: a fresh folder holding its ledger and archive, and the
/// simulated provider with its two accounts and their sample calls.
struct Stage {
    dir: PathBuf,
    ledger_path: PathBuf,
    sim: Simulator,
    acme: DemoAccount,
    globex: DemoAccount,
    ledger: Ledger,
    tz: FixedOffset,
    /// Signs every checkpoint with the demo's key and dates it with the simulator's
    /// time-stamping authority.
    prover: crate::proof::Prover,
}

impl Stage {
    fn accounts(&self) -> [&DemoAccount; 2] {
        [&self.acme, &self.globex]
    }
}

pub async fn run_demo(args: &DemoArgs) -> anyhow::Result<u8> {
    let stage = set_up(args).await?;
    let delivery = receive_callbacks(&stage).await?;
    let acme = Arc::new(provider_client(&stage, &stage.acme)?);
    let globex = Arc::new(provider_client(&stage, &stage.globex)?);
    recover_by_sync(&stage, &acme, &delivery).await?;
    find_by_sync(&stage, &globex).await?;
    let (results, stores) = archive(&stage, [acme, globex]).await?;
    compliance(&stage, &stores[0]).await?;
    hand_over(&stage, &stores[0]).await?;
    expire(&stage, &stores).await?;
    summarize(&stage).await?;
    stage.ledger.close().await;
    stage.sim.shutdown().await;
    let code = results.iter().map(RunResult::exit_code).max().unwrap_or(0);
    Ok(match code {
        0 => EXIT_OK,
        code => u8::try_from(code).unwrap_or(1),
    })
}

/// The demo's signing key (written to `keys/demo-log.key`, its public half beside it) and
/// the simulator's time-stamping authority, whose root certificate goes to `tsa-root.pem`:
/// what an auditor is given to check the demo's checkpoints and bundle.
fn demo_prover(dir: &std::path::Path, sim: &Simulator) -> anyhow::Result<crate::proof::Prover> {
    use crate::proof::keys::SigningKey;
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys)?;
    let key = SigningKey::generate("callvault-demo")?;
    key.write_new(&keys.join("demo-log.key"))?;
    std::fs::write(dir.join("tsa-root.pem"), sim.tsa().root_pem())?;
    let stamper = crate::proof::stamp::Stamper::new(
        vec![sim.tsa_url().parse()?],
        Some(sim.tsa().trust_roots()),
    )?;
    Ok(crate::proof::Prover::new(Some(key)).with_stamper(Some(stamper)))
}

/// A fresh folder, the simulator with its two accounts, their sample calls and acme's
/// faults, an empty ledger.
async fn set_up(args: &DemoArgs) -> anyhow::Result<Stage> {
    let dir = args
        .dir
        .join(Utc::now().format("%Y%m%d-%H%M%S").to_string());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let ledger_path = dir.join("ledger.db");
    let sim_config = SimulatorConfig {
        appid: "acme-app".into(),
        accesskey: "acme-demo-accesskey".into(),
        ..SimulatorConfig::default()
    };
    let sim = Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), sim_config).await?;
    let globex = sim
        .add_account(AccountConfig {
            appid: "globex-app".into(),
            accesskey: "globex-demo-accesskey".into(),
            company_code: "20000099".into(),
        })
        .context("the demo's second account")?;
    let ledger = Ledger::open(&format!("sqlite://{}", ledger_path.display())).await?;
    let account = |name: &str, provider: ProviderAccount, calls: usize, retain_for: &str| {
        demo_account(&dir, &ledger, name, provider, calls, retain_for)
    };
    let prover = demo_prover(&dir, &sim)?;
    let stage = Stage {
        acme: account("acme", sim.default_account(), args.calls, "7y")?,
        globex: account("globex", globex, args.calls.div_ceil(2), "14d")?,
        dir,
        ledger_path,
        sim,
        prover,
        ledger,
        tz: default_provider_tz(),
    };
    let lines: Vec<String> = stage.acme.callbacks.iter().map(|c| c.to_string()).collect();
    std::fs::write(stage.dir.join("callbacks.jsonl"), lines.join("\n") + "\n")?;
    add_faults(&stage);
    write_settings(&stage)?;
    println!(
        "demo:     a simulated provider serving two accounts, acme with {} sample calls (its \
         logins expire now and then, one download breaks) and globex with {}; all that \
         follows goes into {}",
        stage.acme.callbacks.len(),
        stage.globex.callbacks.len(),
        stage.dir.display()
    );
    Ok(stage)
}

/// One account: its sample calls at the provider, its scope of the ledger, its folder.
fn demo_account(
    dir: &std::path::Path,
    ledger: &Ledger,
    name: &str,
    provider: ProviderAccount,
    calls: usize,
    retain_for: &str,
) -> anyhow::Result<DemoAccount> {
    let name = AccountName::parse(name)?;
    let folder = dir.join("archive").join(name.as_str());
    let store_url = url::Url::from_directory_path(&folder)
        .map_err(|()| anyhow::anyhow!("bad demo path {}", folder.display()))?;
    Ok(DemoAccount {
        ledger: ledger.scoped(&name),
        callbacks: provider.sample_callbacks(calls, Utc::now()),
        retain_for: retain_for.parse().map_err(anyhow::Error::msg)?,
        name,
        provider,
        store_url,
    })
}

/// A flaky provider, as in real life: tokens invalidated now and then (the simulator's
/// faults are the provider's, so both accounts log in again), and one of acme's downloads
/// broken.
fn add_faults(stage: &Stage) {
    stage
        .sim
        .set_faults(|f| f.invalidate_tokens_every = Some(5));
    if let Some(file) = stage
        .acme
        .callbacks
        .iter()
        .filter_map(|c| c["recordfilename"].as_str())
        .find(|f| !f.is_empty())
    {
        stage
            .sim
            .push_download_fault(file, DownloadFault::Truncate(1000));
    }
}

/// The settings file an operator would write for the demo's ledger and folders (without the
/// provider's keys, which end with the demo), for the commands `try:` suggests.
fn write_settings(stage: &Stage) -> anyhow::Result<()> {
    let mut text = format!(
        "# callvault demo: two accounts in one ledger, each archived into its own folder.\n\
         ledger = \"sqlite://{}\"\n",
        stage.ledger_path.display()
    );
    for a in stage.accounts() {
        text.push_str(&format!(
            "\n# {} keeps recordings {} (on S3 with Object Lock: retention-mode and retain-for)\n\
             [accounts.{}]\nappid = \"{}\"\nstore = \"{}\"\n",
            a.name,
            a.retain_for,
            a.name,
            a.provider.appid(),
            a.store_url
        ));
    }
    std::fs::write(stage.dir.join("callvault.toml"), text)?;
    Ok(())
}

/// Posts acme's sample callbacks to a receiver on acme's rows of the demo's ledger
/// (`serve`'s, in this process), with 10% of them dropped by the simulator.
async fn receive_callbacks(stage: &Stage) -> anyhow::Result<Delivery> {
    const SECRET: &str = "demo-callback-secret";
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let url = format!(
        "http://{}/callback/{}/{SECRET}",
        listener.local_addr()?,
        stage.acme.name
    );
    let shutdown = Shutdown::default();
    let options = ServeOptions {
        accounts: vec![stage.acme.name.clone()],
        ledger: stage.ledger.clone(),
        receiver: Some(ReceiverConfig {
            accounts: vec![crate::serve::CallbackAccount {
                account: stage.acme.name.clone(),
                secret: SecretString::from(SECRET),
            }],
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
    let newest_first: Vec<_> = stage.acme.callbacks.iter().rev().cloned().collect();
    let delivery = stage.sim.deliver_callbacks(&url, &newest_first).await;
    stage.sim.set_faults(|f| f.drop_callbacks_percent = 0);
    shutdown.stop_claiming.cancel();
    server.await??;
    println!(
        "receive:  acme's receiver got {} callbacks; {} were dropped on the way (a callback outage)",
        delivery.delivered.len(),
        delivery.dropped.len()
    );
    Ok(delivery)
}

/// A client of `account`'s provider, logging in with its own appid and accesskey.
fn provider_client(stage: &Stage, account: &DemoAccount) -> anyhow::Result<ProviderClient> {
    Ok(ProviderClient::new(ProviderConfig {
        api_url: stage.sim.api_url().parse()?,
        appid: account.provider.appid(),
        accesskey: SecretString::from(account.provider.accesskey()),
        api_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        token_max_age: Duration::from_secs(11 * 3600),
        tz: stage.tz,
        pace: Arc::default(),
    })?)
}

/// A sync of `account` with its bill list at the provider.
async fn sync(
    stage: &Stage,
    account: &DemoAccount,
    provider: &Arc<ProviderClient>,
) -> anyhow::Result<SyncReport> {
    let deps = SyncDeps {
        ledger: account.ledger.clone(),
        provider: Arc::clone(provider),
    };
    let options = SyncOptions {
        retry_delay: Duration::from_millis(200),
        ..SyncOptions::new(stage.tz)
    };
    let sync = run_sync(&deps, &options).await?;
    if let Some(err) = &sync.error {
        eprintln!("callvault: {}'s sync stopped: {err}", account.name);
    }
    Ok(sync)
}

/// A sync with acme's bill list, which names the calls whose callback was dropped.
async fn recover_by_sync(
    stage: &Stage,
    provider: &Arc<ProviderClient>,
    delivery: &Delivery,
) -> anyhow::Result<()> {
    let sync = sync(stage, &stage.acme, provider).await?;
    let was_dropped = |bill_id: Option<&str>| {
        stage.acme.callbacks.iter().any(|cb| {
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
        "sync:     acme: {} bills read; sync recovered {recovered} of the {} dropped callbacks' \
         calls from acme's bill list",
        sync.progress.bills,
        delivery.dropped.len()
    );
    Ok(())
}

/// globex sends no callbacks here: its calls are all found in its own bill list, which
/// names none of acme's.
async fn find_by_sync(stage: &Stage, provider: &Arc<ProviderClient>) -> anyhow::Result<()> {
    let sync = sync(stage, &stage.globex, provider).await?;
    println!(
        "sync:     globex: {} bills read from globex's own bill list; {} calls found",
        sync.progress.bills,
        sync.found_calls.len()
    );
    Ok(())
}

/// One run over both accounts, side by side, sharing the transfer slots as `callvault run`
/// shares them, each into its own folder; the stores stay open for what follows.
async fn archive(
    stage: &Stage,
    providers: [Arc<ProviderClient>; 2],
) -> anyhow::Result<(Vec<RunResult>, Vec<Store>)> {
    let options = pass_options();
    let mut passes = Vec::new();
    for (account, provider) in stage.accounts().into_iter().zip(providers) {
        passes.push(AccountPass {
            account: account.name.clone(),
            deps: pass_deps(stage, account, provider)?,
            opts: options.clone(),
        });
    }
    share(&mut passes, &[1, 1]);
    let mut results = Vec::new();
    for (pass, result) in passes.iter().zip(run_accounts(&passes).await) {
        let result = result?;
        print_pass(&pass.account, &result);
        results.push(result);
    }
    Ok((results, passes.into_iter().map(|p| p.deps.store).collect()))
}

/// What a pass over `account` works with: its provider client, its folder.
fn pass_deps(
    stage: &Stage,
    account: &DemoAccount,
    provider: Arc<ProviderClient>,
) -> anyhow::Result<Deps> {
    Ok(Deps {
        ledger: account.ledger.clone(),
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
        store: Store::open(&StoreConfig::new(account.store_url.as_str()))?,
        keys: KeyTemplate::parse(DEFAULT_TEMPLATE, stage.tz)?,
        prover: stage.prover.clone(),
        clock: crate::clock::Clock::system(),
    })
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

fn print_pass(account: &AccountName, result: &RunResult) {
    let r = &result.report;
    let manifests: Vec<&str> = r.manifests.iter().map(|m| m.key.as_str()).collect();
    println!(
        "archive:  {account}: run {}: archived {}, retry later {}, failed {}, expired {}; {:.1} MiB in \
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
        eprintln!("callvault: {account}'s pass stopped: {err}");
    }
}

/// A legal hold and erasure, as a compliance team uses them: one archived call put on hold
/// (a dispute), an erasure of it refused, naming the hold; another erased (a GDPR request),
/// its tombstone listed by the next manifest.
async fn compliance(stage: &Stage, store: &Store) -> anyhow::Result<()> {
    let ledger = &stage.acme.ledger;
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
        "hold:     acme's call {} put on legal hold {hold_id} (the ledger's hold keeps it: a local \
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
            "erase:    acme's call {} erased (DEMO-GDPR-1): {} bytes gone, a tombstone kept, personal \
             data blanked",
            e.uuid, e.size
        );
    }
    for m in &listed {
        println!("erase:    manifest {} lists the erasure", m.key);
    }
    let proof = stage
        .prover
        .after_manifests(ledger, store, Utc::now())
        .await;
    for logged in &proof.logged {
        println!(
            "log:      {} (tree of {} line(s)), signed, {} time-stamp token(s) from the simulator's TSA",
            logged.checkpoint, logged.size, proof.stamped
        );
    }
    Ok(())
}

/// An auditor's bundle: acme's calls exported with their recordings, proofs, checkpoints
/// and real tokens from the simulator's time-stamping authority, then checked as a
/// recipient would, with the demo's public key and the authority's root given from outside.
async fn hand_over(stage: &Stage, store: &Store) -> anyhow::Result<()> {
    use crate::export::verify::{Trust, verify_bundle};
    use crate::export::{AccountSource, ExportRequest, export};
    let reason = "DEMO-AUDIT-1 (a regulator's request)";
    let out = stage.dir.join("bundle");
    let request = ExportRequest {
        out: out.clone(),
        who: crate::retrieve::Requester::at_cli(Some("demo".into()), Some(reason.into())),
        reason: reason.into(),
        selection: serde_json::json!({ "account": "acme" }),
        query: CallQuery::default(),
        with_recordings: true,
        load_file_dat: true,
        prover: stage.prover.clone(),
        tz: stage.tz,
        retention: chrono::Duration::days(RETENTION_DAYS),
        now: Utc::now(),
    };
    let source = AccountSource {
        name: stage.acme.name.clone(),
        ledger: stage.acme.ledger.clone(),
        store: store.clone(),
    };
    let report = export(&request, &[source]).await?;
    let trust = Trust {
        log_keys: stage.prover.signer().map(|k| vec![k.verifier()]),
        tsa_roots: Some(stage.sim.tsa().trust_roots()),
    };
    let checked = verify_bundle(&out, &trust).await?;
    println!(
        "export:   {} of acme's calls with their recordings, proofs, signed checkpoints and \
         time-stamp tokens in {} ({reason}); checked against the demo's key and the TSA's root: {}",
        report.calls,
        out.display(),
        if checked.is_clean() {
            "all good".to_owned()
        } else {
            format!("{} problem(s)", checked.problems.len())
        }
    );
    Ok(())
}

/// Each account's retention applied as `callvault expire --older-than` applies it: the
/// calls that started longer ago than the account's contract keeps recordings are erased
/// (a tombstone kept), the rest stay.
async fn expire(stage: &Stage, stores: &[Store]) -> anyhow::Result<()> {
    let actor = Actor::new("demo").context("the demo's actor")?;
    let now = Utc::now();
    for (account, store) in stage.accounts().into_iter().zip(stores) {
        let selection =
            Selection::expiring(account.retain_for, now, None).context("the demo's retention")?;
        let mode = EraseMode::Expire {
            older_than: account.retain_for,
        };
        let report = erase(&account.ledger, store, &selection, &mode, &actor, true, now).await?;
        println!(
            "expire:   {} keeps recordings {}: {} call(s) that started longer ago erased \
             (tombstones kept)",
            account.name,
            account.retain_for,
            report.erased.len()
        );
    }
    Ok(())
}

/// What the ledger holds now for each account, how complete its days are, and what to try
/// next.
async fn summarize(stage: &Stage) -> anyhow::Result<()> {
    for account in stage.accounts() {
        print_status(stage, account).await?;
    }
    let stats = stage.sim.stats();
    println!(
        "provider: saw {} login(s), {} link request(s), {} download(s) over both accounts",
        stats.logins, stats.url_requests, stats.downloads
    );
    print_next_steps(stage);
    Ok(())
}

/// One account's status: its calls by state, and how many of its days are complete.
async fn print_status(stage: &Stage, account: &DemoAccount) -> anyhow::Result<()> {
    let retention = chrono::Duration::days(RETENTION_DAYS);
    let now = Utc::now();
    let status = account.ledger.status(now, retention).await?;
    let days = account
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
    println!(
        "status:   {}: {}; {} of {} days complete; recordings in {}",
        account.name,
        counts.join(", "),
        days.iter().filter(|d| d.complete()).count(),
        days.len(),
        account.store_url
    );
    Ok(())
}

fn print_next_steps(stage: &Stage) {
    println!(
        "try:      callvault --config {} status    (one status per account)",
        stage.dir.join("callvault.toml").display()
    );
    println!(
        "          callvault --config {} status --account globex",
        stage.dir.join("callvault.toml").display(),
    );
    println!(
        "          (each account's recordings, sidecars and manifests are in {})",
        stage.dir.join("archive").display()
    );
}
