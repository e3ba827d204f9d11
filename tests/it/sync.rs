//! `sync`: the provider's bill list against the ledger, on both backends. A callback outage
//! recovered (the simulator drops callbacks to a running receiver; sync finds exactly
//! those calls; a pass archives everything; every day is complete), a call known from its
//! bill and its callback in either order (one row, the callback's data), windows of
//! several pages and a sync killed between pages, sloppy bills, callbacks with unreadable
//! fields posted to `serve`, the text answer, `--api-rate` with 64 workers, and the binary.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callvault::archive::Shutdown;
use callvault::domain::{Origin, RecordState};
use callvault::ledger::{BackendKind, ImportOutcome, Ledger, SyncStatus, risk_line};
use callvault::provider::{Pace, ProviderClient};
use callvault::serve::{CallbackAnswer, ServeOptions, serve};
use callvault::sync::{SyncDeps, SyncOptions, SyncReport, run_sync};
use callvault::timefmt::{PROVIDER_TZ, default_provider_tz};
use chrono::Utc;
use serde_json::{Value, json};

use crate::cli::{assert_exit, callvault, output, wait_for};
use crate::world::{World, cu};

const SECRET: &str = "sync-callback-secret-0123";

/// A `serve` receiver on the world's ledger, in this process.
struct Receiver {
    url: String,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(ledger: Ledger, answer: CallbackAnswer) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let shutdown = Shutdown::default();
        let options = ServeOptions {
            accounts: vec![callvault::accounts::AccountName::default_account()],
            ledger,
            receiver: Some(crate::world::receiver(SECRET, answer)),
            ui: None,
            retention: chrono::Duration::days(90),
            passes: None,
            syncs: None,
        };
        let stop = shutdown.clone();
        let task = tokio::spawn(async move { serve(listener, options, stop).await.unwrap() });
        Self {
            url: format!("http://{addr}/callback/{SECRET}"),
            shutdown,
            task,
        }
    }

    async fn post(&self, body: String) -> (u16, String) {
        let answer = reqwest::Client::new()
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    }

    async fn stop(self) {
        self.shutdown.stop_claiming.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the receiver stops")
            .unwrap();
    }
}

fn sync_deps(world: &World) -> SyncDeps {
    SyncDeps {
        ledger: world.ledger.clone(),
        provider: Arc::new(ProviderClient::new(world.provider_config()).unwrap()),
    }
}

fn sync_options() -> SyncOptions {
    SyncOptions {
        retry_delay: Duration::from_millis(10),
        ..SyncOptions::new(default_provider_tz())
    }
}

pub(crate) async fn sync(world: &World) -> SyncReport {
    run_sync(&sync_deps(world), &sync_options())
        .await
        .expect("the ledger works")
}

/// Every row of the ledger, by key.
async fn rows(world: &World) -> HashMap<String, callvault::ledger::LedgerRow> {
    let mut all = HashMap::new();
    for state in RecordState::ALL {
        for uuid in world.ledger.uuids_in_state(state).await.unwrap() {
            let row = world.ledger.get(&uuid).await.unwrap().unwrap();
            all.insert(uuid.to_string(), row);
        }
    }
    all
}

fn id_of(callback: &Value) -> String {
    callback["id"].to_string().trim_matches('"').to_owned()
}

on_both_backends!(
    callback_outage_drill,
    bill_first_then_callback,
    callback_first_then_bill,
    pages_and_a_sync_killed_between_them,
    sloppy_bills,
    unreadable_callback_fields_are_stored_noted_and_archived,
);

/// The drill: 10% of the callbacks never reach a running receiver; sync finds exactly
/// those calls, a pass archives everything, and every day is complete.
async fn callback_outage_drill(kind: BackendKind) {
    let world = World::with_backend(kind).await;
    let receiver = Receiver::start(world.ledger.clone(), CallbackAnswer::Json).await;
    let callbacks = world.sim.sample_callbacks(60, Utc::now());
    world.sim.set_faults(|f| f.drop_callbacks_percent = 10);

    // Delivered in reverse, so that the dropped calls (every tenth) all have recordings.
    let reversed: Vec<Value> = callbacks.iter().rev().cloned().collect();
    let delivery = world.sim.deliver_callbacks(&receiver.url, &reversed).await;

    assert_eq!(delivery.dropped.len(), 6, "{delivery:?}");
    assert!(
        callbacks
            .iter()
            .filter(|c| delivery.dropped.iter().any(|u| c["uuid"] == u.as_str()))
            .all(|c| c["recordfilename"] != ""),
        "the dropped calls have recordings"
    );
    assert_eq!(delivery.delivered.len(), 54);
    assert!(delivery.failed.is_empty());
    let dropped_ids: BTreeSet<String> = callbacks
        .iter()
        .filter(|c| delivery.dropped.iter().any(|u| c["uuid"] == u.as_str()))
        .map(id_of)
        .collect();

    let report = sync(&world).await;

    assert_eq!(report.status, SyncStatus::Completed, "{:?}", report.error);
    assert_eq!(report.progress.bills, 60);
    let found: BTreeSet<String> = report
        .found_calls
        .iter()
        .map(|c| c.bill_id.clone().expect("bills have ids"))
        .collect();
    assert_eq!(found, dropped_ids, "sync finds exactly the dropped calls");
    assert_eq!(rows(&world).await.len(), 60, "one row per call");

    let result = world.run(&world.options()).await;
    assert_eq!(result.exit_code(), 0, "{:?}", result.report);
    let recorded = callbacks
        .iter()
        .filter(|c| c["recordfilename"] != "")
        .count();
    assert_eq!(world.count(RecordState::Archived).await, recorded);
    assert_eq!(world.verify_archived().await, recorded);

    let now = Utc::now();
    let days = world
        .ledger
        .completeness(
            now - chrono::Duration::days(90),
            now + chrono::Duration::days(1),
            default_provider_tz(),
            risk_line(now, chrono::Duration::days(90)),
        )
        .await
        .unwrap();
    assert!(!days.is_empty());
    assert_eq!(days.iter().map(|d| d.in_ledger).sum::<i64>(), 60);
    assert_eq!(days.iter().map(|d| d.provider_listed).sum::<i64>(), 60);
    assert_eq!(days.iter().map(|d| d.found_by_sync).sum::<i64>(), 6);
    for day in &days {
        assert!(day.complete(), "{day:?}");
        assert_eq!((day.pending, day.failed, day.at_risk), (0, 0, 0), "{day:?}");
    }
    let figures = world.ledger.sync_figures().await.unwrap();
    assert_eq!(figures.found_by_sync, 6);
    assert!(figures.last_success_at.is_some());
    assert_eq!(figures.last_sync.unwrap().progress.found, 6);

    // A second sync over the same calls finds nothing new and stores nothing twice.
    let opts = SyncOptions {
        since: Some(Utc::now() - chrono::Duration::days(40)),
        ..sync_options()
    };
    let again = run_sync(&sync_deps(&world), &opts).await.unwrap();
    assert_eq!((again.progress.found, again.progress.bills), (0, 60));
    assert_eq!(rows(&world).await.len(), 60);
    receiver.stop().await;
}

/// A call known from its bill first (no uuid), archived, then its callback: one row, under
/// the callback's uuid, with the callback's record, still archived, its attempts kept.
async fn bill_first_then_callback(kind: BackendKind) {
    let world = World::with_backend(kind).await;
    let callback = world.sim.sample_callbacks(1, Utc::now()).remove(0);
    let uuid = callback["uuid"].as_str().unwrap().to_owned();
    let report = sync(&world).await;
    assert_eq!(report.progress.found, 1);
    let key = report.found_calls[0].key.clone();
    assert!(key.is_bill_key(), "{key}");
    assert_eq!(world.run(&world.options()).await.exit_code(), 0);
    let before = world.ledger.get(&key).await.unwrap().unwrap();
    assert_eq!(before.state, RecordState::Archived);
    assert_eq!(before.record.origin, Origin::Bill);

    let body = callback.to_string();
    let record = callvault::callback::parse_record(&body, default_provider_tz()).unwrap();
    let outcome = world.ledger.import(&[record], Utc::now()).await.unwrap();

    assert_eq!(outcome, [ImportOutcome::MatchedBill]);
    let all = rows(&world).await;
    assert_eq!(all.len(), 1, "one row: {:?}", all.keys());
    let row = &all[&uuid];
    assert_eq!(row.record.raw_json, body, "the callback's record is kept");
    assert_eq!(row.record.origin, Origin::Callback);
    assert_eq!(row.state, RecordState::Archived);
    assert_eq!(row.object_key, before.object_key);
    assert_eq!(row.sha256, before.sha256);
    assert_eq!(row.attempts, before.attempts);
    assert_eq!(
        row.record.bill_id.as_deref(),
        Some(id_of(&callback).as_str())
    );
    assert!(row.bill_seen_at.is_some());
    assert!(world.ledger.get(&key).await.unwrap().is_none());
    let status = world
        .ledger
        .status(Utc::now(), chrono::Duration::days(90))
        .await
        .unwrap();
    assert_eq!(
        status.total, 1,
        "the state counts follow: {:?}",
        status.counts
    );
    assert_eq!(world.ledger.sync_figures().await.unwrap().found_by_sync, 0);

    // The same callback again, and another sync: nothing changes.
    let again = callvault::callback::parse_record(&body, default_provider_tz()).unwrap();
    assert_eq!(
        world.ledger.import(&[again], Utc::now()).await.unwrap(),
        [ImportOutcome::Known]
    );
    assert_eq!(sync(&world).await.progress.found, 0);
    assert_eq!(rows(&world).await.len(), 1);
}

/// The callback first, then its bill (without uuid): one row, the callback's.
async fn callback_first_then_bill(kind: BackendKind) {
    let world = World::with_backend(kind).await;
    let callback = world.sim.sample_callbacks(1, Utc::now()).remove(0);
    let uuid = callback["uuid"].as_str().unwrap().to_owned();
    let body = callback.to_string();
    let record = callvault::callback::parse_record(&body, default_provider_tz()).unwrap();
    world.ledger.import(&[record], Utc::now()).await.unwrap();

    let report = sync(&world).await;

    assert_eq!((report.progress.bills, report.progress.found), (1, 0));
    let all = rows(&world).await;
    assert_eq!(all.len(), 1, "{:?}", all.keys());
    let row = &all[&uuid];
    assert_eq!(row.record.raw_json, body);
    assert_eq!(row.record.origin, Origin::Callback);
    assert!(row.bill_seen_at.is_some(), "the provider listed it");

    // A bill matched by its record file name when the callback had no id.
    let world2 = World::with_backend(kind).await;
    let mut callback = world2.sim.sample_callbacks(5, Utc::now()).remove(0);
    callback.as_object_mut().unwrap().remove("id");
    let record =
        callvault::callback::parse_record(&callback.to_string(), default_provider_tz()).unwrap();
    world2.ledger.import(&[record], Utc::now()).await.unwrap();
    let report = sync(&world2).await;
    assert_eq!((report.progress.bills, report.progress.found), (5, 4));
    assert_eq!(rows(&world2).await.len(), 5);
}

/// A window of more than one page, read whole; a sync killed between pages, then the next
/// one (from the checkpoint): everything found, nothing twice.
async fn pages_and_a_sync_killed_between_them(kind: BackendKind) {
    let world = World::with_backend(kind).await;
    // 2,300 calls on one day: three pages of 1,000 in one window.
    let day = Utc::now() - chrono::Duration::days(2);
    let mut callbacks = Vec::new();
    for i in 0..2300_i64 {
        let id = world.sim.next_call_id();
        let start = day + chrono::Duration::seconds(i * 30);
        let callback = json!({
            "uuid": format!("paged-{i}"), "id": id, "companycode": 20000013,
            "starttime": start.with_timezone(&PROVIDER_TZ).format("%Y-%m-%d %H:%M:%S").to_string(),
            "recordfilename": "", "billsec": 0, "type": "callin",
        });
        assert!(world.sim.add_call(&callback, start));
        callbacks.push(callback);
    }
    let deps = sync_deps(&world);
    let opts = SyncOptions {
        since: Some(day - chrono::Duration::hours(1)),
        ..sync_options()
    };
    // Slow pages, and the sync killed once it has stored two.
    world
        .sim
        .set_faults(|f| f.api_delay = Some(Duration::from_millis(200)));
    let killed = {
        let (deps, opts) = (deps.clone(), opts.clone());
        tokio::spawn(async move { run_sync(&deps, &opts).await })
    };
    let stored_two = wait_for(Duration::from_secs(60), async || {
        world.count(RecordState::NoRecording).await >= 2000
    })
    .await;
    assert!(stored_two, "two pages stored");
    killed.abort();
    assert!(killed.await.unwrap_err().is_cancelled());
    let partial = world.count(RecordState::NoRecording).await;
    assert!((2000..2300).contains(&partial), "{partial}");
    world.sim.set_faults(|f| f.api_delay = None);

    let report = run_sync(
        &deps,
        &SyncOptions {
            since: None,
            ..opts
        },
    )
    .await
    .unwrap();

    assert_eq!(report.status, SyncStatus::Completed, "{:?}", report.error);
    assert!(report.pages >= 3, "{}", report.pages);
    assert_eq!(
        report.progress.found,
        2300 - i64::try_from(partial).unwrap()
    );
    let all = rows(&world).await;
    assert_eq!(all.len(), 2300, "no call twice");
    let ids: BTreeSet<String> = all
        .values()
        .filter_map(|r| r.record.bill_id.clone())
        .collect();
    assert_eq!(ids, callbacks.iter().map(id_of).collect());
    assert!(world.sim.stats().bills_listed >= 2300);
}

/// Bills as sloppy as the provider's: numbers as strings (every other bill), an empty
/// start time, no uuid, no recording, and one that names no call at all.
async fn sloppy_bills(kind: BackendKind) {
    let world = World::with_backend(kind).await;
    let callbacks = world.sim.sample_callbacks(10, Utc::now());
    let undated = &callbacks[0];
    world
        .sim
        .edit_bill(id_of(undated).parse().unwrap(), |bill| {
            bill.insert("starttime".into(), json!(""));
            bill.insert("billsec".into(), json!("n/a"));
        });
    let nameless = world.sim.next_call_id();
    world.sim.add_call(
        &json!({"id": nameless, "starttime": "", "recordfilename": "x.wav"}),
        Utc::now(),
    );
    world.sim.edit_bill(nameless, |bill| {
        bill.remove("id");
    });

    let report = sync(&world).await;

    assert_eq!(report.status, SyncStatus::Completed, "{:?}", report.error);
    assert_eq!((report.progress.found, report.progress.unreadable), (10, 1));
    assert_eq!(world.count(RecordState::NoRecording).await, 2);
    assert_eq!(world.count(RecordState::Pending).await, 8);
    let all = rows(&world).await;
    let undated_row = all
        .values()
        .find(|r| r.record.bill_id.as_deref() == Some(id_of(undated).as_str()))
        .unwrap();
    assert_eq!(undated_row.record.call_start, None);
    assert!(
        undated_row
            .record
            .notes
            .as_deref()
            .unwrap()
            .contains("billsec")
    );
    let string_ids = all
        .values()
        .filter(|r| r.record.raw_json.contains("\"id\":\""))
        .count();
    assert_eq!(string_ids, 5, "half the bills had their id as a string");

    let result = world.run(&world.options()).await;
    assert_eq!(result.exit_code(), 0, "{:?}", result.report);
    assert_eq!(world.verify_archived().await, 8);
    // Undated: filed under the day it was received.
    let row = world
        .ledger
        .get(&undated_row.record.uuid)
        .await
        .unwrap()
        .unwrap();
    let received = row
        .record
        .received_at
        .unwrap()
        .with_timezone(&PROVIDER_TZ)
        .format("%Y/%m/%d")
        .to_string();
    assert!(
        row.object_key.as_deref().unwrap().contains(&received),
        "{:?} under {received}",
        row.object_key
    );
}

/// Callbacks whose `billsec`, `starttime` or `companycode` cannot be read are stored (200),
/// noted, and archived; only what names no call is refused.
async fn unreadable_callback_fields_are_stored_noted_and_archived(kind: BackendKind) {
    let world = World::with_backend(kind).await;
    let receiver = Receiver::start(world.ledger.clone(), CallbackAnswer::Json).await;
    let cases = [
        (
            "bad-billsec",
            json!({"billsec": "abc", "starttime": "2026-11-20 10:00:00", "companycode": 20000013}),
        ),
        (
            "bad-start",
            json!({"billsec": 12, "starttime": "soon", "companycode": 20000013}),
        ),
        (
            "bad-company",
            json!({"billsec": 12, "starttime": "2026-11-20 10:00:00", "companycode": {"x": 1}}),
        ),
    ];
    for (uuid, fields) in &cases {
        let file = format!("{uuid}.wav");
        world.sim.add_recording(&file, 64 * 1024);
        let mut body = fields.clone();
        body["uuid"] = json!(uuid);
        body["recordfilename"] = json!(file);
        let (status, answer) = receiver.post(body.to_string()).await;
        assert_eq!(status, 200, "{uuid}: {answer}");
        assert!(answer.contains("\"new\""), "{uuid}: {answer}");
    }
    let (status, answer) = receiver
        .post(json!({"companycode": 1, "recordfilename": "nobody.wav"}).to_string())
        .await;
    assert_eq!(status, 400, "no uuid and no id: {answer}");

    for (uuid, _) in &cases {
        let row = world.ledger.get(&cu(uuid)).await.unwrap().unwrap();
        let notes = row.record.notes.clone().unwrap_or_default();
        let field = match *uuid {
            "bad-billsec" => "billsec",
            "bad-start" => "starttime",
            _ => "companycode",
        };
        assert!(notes.contains(field), "{uuid}: {notes:?}");
        assert_eq!(row.state, RecordState::Pending);
    }
    assert_eq!(world.ledger.sync_figures().await.unwrap().noted, 3);
    let one_at_a_time = callvault::archive::RunOptions {
        concurrency: 1,
        ..world.options()
    };
    let result = world.run(&one_at_a_time).await;
    assert_eq!(result.exit_code(), 0, "{:?}", result.report);
    assert_eq!(world.verify_archived().await, 3);
    // The undated one was archived last (oldest call first, undated after the dated).
    let bad_start = world.ledger.get(&cu("bad-start")).await.unwrap().unwrap();
    let good = world.ledger.get(&cu("bad-billsec")).await.unwrap().unwrap();
    assert!(bad_start.archived_at >= good.archived_at);
    receiver.stop().await;
}

/// `--callback-answer text`: HTTP 200 with `1` when stored, `0` when not.
#[tokio::test]
async fn the_text_answer_says_1_or_0() {
    let world = World::new().await;
    let receiver = Receiver::start(world.ledger.clone(), CallbackAnswer::Text).await;
    let good = json!({"uuid": "t-1", "companycode": 1, "recordfilename": "t.wav"});

    assert_eq!(receiver.post(good.to_string()).await, (200, "1".into()));
    assert_eq!(receiver.post(good.to_string()).await, (200, "1".into()));
    assert_eq!(
        receiver.post(json!({"companycode": 1}).to_string()).await,
        (200, "0".into())
    );
    assert_eq!(receiver.post("[1]".into()).await, (200, "0".into()));
    let wrong = reqwest::Client::new()
        .post(receiver.url.replace(SECRET, "wrong-secret"))
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        wrong.status().as_u16(),
        404,
        "a wrong secret learns nothing"
    );
    assert!(world.ledger.get(&cu("t-1")).await.unwrap().is_some());
    receiver.stop().await;
}

/// `--api-rate 20` holds with 64 workers: measured at the simulator, no second holds more
/// than 20 requests (link requests and logins together).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_rate_holds_with_64_workers() {
    let world = World::new().await;
    world.import_samples(100).await;
    let mut deps = world.deps();
    let mut config = world.provider_config();
    config.pace = Arc::new(Pace::new(Some(20.0)));
    deps.provider = Arc::new(ProviderClient::new(config).unwrap());
    let opts = callvault::archive::RunOptions {
        concurrency: 64,
        ..world.options()
    };
    let started = Instant::now();

    let result = callvault::archive::run_pass(&deps, &opts).await.unwrap();

    assert_eq!(result.exit_code(), 0, "{:?}", result.report);
    let arrivals = world.sim.api_arrivals();
    assert!(arrivals.len() >= 81, "{} requests", arrivals.len());
    // Windows of 950 ms, not a full second: the pace releases a request every 50 ms, and
    // a request that reached the simulator a few milliseconds late (a loaded machine) must
    // not make the one released a second after it look like a 21st in the same second. A
    // pace that let more than 20 a second through still shows here.
    let window = Duration::from_millis(950);
    let busiest = arrivals
        .iter()
        .map(|t| {
            arrivals
                .iter()
                .filter(|u| **u >= *t && u.duration_since(*t) < window)
                .count()
        })
        .max()
        .unwrap();
    assert!(busiest <= 20, "{busiest} requests in one second");
    assert!(busiest >= 15, "the limit is used, not undercut: {busiest}");
    assert!(started.elapsed() >= Duration::from_secs(3));
}

/// A provider answering `ret` 500 in bursts slows the client down: the pace's spacing
/// grows while the errors last.
#[tokio::test]
async fn server_error_bursts_slow_the_client_down() {
    let world = World::new().await;
    let mut config = world.provider_config();
    let pace = Arc::new(Pace::new(None));
    config.pace = Arc::clone(&pace);
    let client = ProviderClient::new(config).unwrap();
    client.ensure_login().await.unwrap();
    world.sim.add_recording("r.wav", 1000);
    world.sim.set_faults(|f| f.server_error_next = 4);

    for _ in 0..4 {
        assert!(client.recording_link("r.wav").await.is_err());
    }
    let slowed = pace.current_spacing();
    assert!(
        slowed >= callvault::provider::MIN_BACKOFF_SPACING * 8,
        "{slowed:?}"
    );
    client.recording_link("r.wav").await.unwrap();
    client.recording_link("r.wav").await.unwrap();
    assert!(pace.current_spacing() < slowed, "successes relax the pace");

    // At the simulator: after the login, each request waited longer than the one before.
    let arrivals = world.sim.api_arrivals();
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps.len(), 6, "{gaps:?}");
    let jitter = Duration::from_millis(5);
    for (gap, least) in gaps[2..].iter().zip([50, 100, 200, 300]) {
        assert!(*gap + jitter >= Duration::from_millis(least), "{gaps:?}");
    }
}

/// The binary: `sync` finds the calls the ledger lacks, prints them, and `status` and
/// `completeness` show it; refused credentials exit 3.
#[tokio::test]
async fn the_sync_command() {
    let world = World::new().await;
    let callbacks = world.sim.sample_callbacks(8, Utc::now());
    let known: Vec<_> = callbacks[..5]
        .iter()
        .map(|c| callvault::callback::parse_record(&c.to_string(), default_provider_tz()).unwrap())
        .collect();
    world.ledger.import(&known, Utc::now()).await.unwrap();

    let out = output(callvault(&world, &["sync", "--json"])).await;

    assert_exit(&out, 0);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["found"], 3, "{report}");
    assert_eq!(report["status"], "completed");
    let status = output(callvault(&world, &["status", "--json"])).await;
    assert_exit(&status, 0);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["sync"]["found_by_sync"], 3, "{status}");
    assert_eq!(status["sync"]["last_sync"]["status"], "completed");

    let run = output(callvault(&world, &["run"])).await;
    assert_exit(&run, 0);
    let report = output(callvault(&world, &["completeness", "--json"])).await;
    assert_exit(&report, 0);
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["complete"], true, "{report}");

    let mut refused = callvault(&world, &["sync"]);
    refused.env("CALLVAULT_ACCESSKEY", "wrong-key");
    assert_exit(&output(refused).await, 3);
}

/// `serve` with a sync schedule runs syncs in its process, one at a time, and `/metrics`
/// exports the last complete sync and the calls found by sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_scheduled_syncs_and_exports_their_figures() {
    let world = World::new().await;
    world.sim.sample_callbacks(5, Utc::now());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::default();
    let options = ServeOptions {
        accounts: vec![callvault::accounts::AccountName::default_account()],
        ledger: world.ledger.clone(),
        receiver: Some(crate::world::receiver(SECRET, CallbackAnswer::Json)),
        ui: None,
        retention: chrono::Duration::days(90),
        passes: None,
        syncs: Some(callvault::serve::ScheduledSyncs {
            schedule: callvault::serve::parse_schedule("* * * * * *").unwrap(),
            accounts: vec![callvault::sync::AccountSync {
                account: callvault::accounts::AccountName::default_account(),
                deps: sync_deps(&world),
            }],
            options: sync_options(),
        }),
    };
    let stop = shutdown.clone();
    let task = tokio::spawn(async move { serve(listener, options, stop).await.unwrap() });

    let metrics = async || {
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let synced = wait_for(Duration::from_secs(30), async || {
        metrics()
            .await
            .contains("callvault_scheduled_syncs_total{account=\"default\",exit_code=\"0\"}")
    })
    .await;

    assert!(synced, "a scheduled sync completed");
    assert_eq!(rows(&world).await.len(), 5);
    let metrics = metrics().await;
    assert!(
        metrics.contains("callvault_sync_last_success_timestamp_seconds{account=\"default\"} "),
        "{metrics}"
    );
    assert!(
        metrics.contains("callvault_sync_found_records{account=\"default\"} 5"),
        "{metrics}"
    );
    assert!(metrics.contains("callvault_at_risk_records"), "{metrics}");
    shutdown.stop_claiming.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("serve stops")
        .unwrap();
}
