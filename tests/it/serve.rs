//! `callvault serve`: the callback receiver against a temp ledger (answers, durability, auth,
//! limits), and the binary with `--schedule` archiving what it received, then stopping
//! cleanly on SIGTERM.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use callvault::archive::Shutdown;
use callvault::domain::RecordState;
use callvault::ledger::Ledger;
use callvault::serve::{ReceiverConfig, ServeOptions, serve};
use serde_json::{Value, json};

use crate::cli::{callvault, wait_for};
use crate::world::World;

const SECRET: &str = "callback-secret-canary-0123";
const MAX_BODY: usize = 4096;

struct Receiver {
    addr: SocketAddr,
    ledger: Ledger,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start_receiver(allow_from: &[&str]) -> Receiver {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path().join("ledger.db").to_str().unwrap())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::default();
    let options = ServeOptions {
        accounts: vec![callvault::accounts::AccountName::default_account()],
        ledger: ledger.clone(),
        receiver: Some(ReceiverConfig {
            allow_from: allow_from.iter().map(|n| n.parse().unwrap()).collect(),
            max_body_bytes: MAX_BODY,
            ..crate::world::receiver(SECRET, callvault::serve::CallbackAnswer::Json)
        }),
        ui: None,
        retention: chrono::Duration::days(90),
        passes: None,
        syncs: None,
    };
    let stop = shutdown.clone();
    let task = tokio::spawn(async move { serve(listener, options, stop).await.unwrap() });
    Receiver {
        addr,
        ledger,
        shutdown,
        task,
        _dir: dir,
    }
}

impl Receiver {
    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("http://{}{path}", self.addr))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{}{path}", self.addr))
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn stop(self) {
        self.shutdown.stop_claiming.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the receiver stops")
            .unwrap();
    }
}

fn record(uuid: &str) -> Value {
    json!({
        "uuid": uuid, "companycode": 20000013, "recordfilename": format!("{uuid}.wav"),
        "starttime": "2026-11-20 10:00:00", "billsec": "12", "type": "callout"
    })
}

/// A child's standard output and error, read as they come (a full pipe would block it).
pub(crate) struct Drained(
    std::thread::JoinHandle<Vec<u8>>,
    std::thread::JoinHandle<Vec<u8>>,
);

impl Drained {
    /// Everything written, once the child has ended.
    pub(crate) fn collect(self) -> (Vec<u8>, Vec<u8>) {
        (self.0.join().unwrap(), self.1.join().unwrap())
    }
}

pub(crate) fn drain(child: &mut std::process::Child) -> Drained {
    fn reader(mut from: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = from.read_to_end(&mut all);
            all
        })
    }
    Drained(
        reader(child.stdout.take().expect("stdout piped")),
        reader(child.stderr.take().expect("stderr piped")),
    )
}

/// A port nothing listens on (for a child process to bind).
pub(crate) fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// Waits until a `serve` on `port` is ready; returns its base URL.
pub(crate) async fn wait_ready(port: u16) -> String {
    let base = format!("http://127.0.0.1:{port}");
    let up = wait_for(Duration::from_secs(20), async || {
        reqwest::get(format!("{base}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(up, "serve became ready");
    base
}

#[tokio::test]
async fn callbacks_are_stored_once_and_bad_ones_refused_with_a_reason() {
    let rx = start_receiver(&[]).await;
    let path = format!("/callback/{SECRET}");

    // Good: stored, durable, pending.
    let (status, body) = rx.post(&path, record("call-1").to_string()).await;
    assert_eq!(
        (status, &body["outcomes"]),
        (200, &json!(["new"])),
        "{body}"
    );
    let row = rx
        .ledger
        .get(&crate::world::cu("call-1"))
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(row.state, RecordState::Pending);
    let raw = row.record.raw_json.clone();

    // Duplicate: 200, nothing changes.
    let (status, body) = rx.post(&path, record("call-1").to_string()).await;
    assert_eq!(
        (status, &body["outcomes"]),
        (200, &json!(["already_known"]))
    );
    assert_eq!(
        rx.ledger
            .get(&crate::world::cu("call-1"))
            .await
            .unwrap()
            .unwrap()
            .record
            .raw_json,
        raw
    );

    // The provider's own sloppy JSON (missing commas) and the secret as a query parameter.
    let sloppy = "{\"uuid\": \"call-2\"\n\"companycode\": 7\n\"recordfilename\": \"b.mp3\"}";
    let (status, _) = rx.post(&format!("/callback?secret={SECRET}"), sloppy).await;
    assert_eq!(status, 200);
    assert!(
        rx.ledger
            .get(&crate::world::cu("call-2"))
            .await
            .unwrap()
            .is_some()
    );

    // An extension call-state callback: acknowledged, not stored.
    let state = json!({"uuid": "ext-1", "buuid": "b", "companycode": "9024", "isbleg": "false", "status": "ring"});
    let (status, body) = rx.post(&path, state.to_string()).await;
    assert_eq!((status, &body["ignored"]), (200, &json!(1)));
    assert!(
        rx.ledger
            .get(&crate::world::cu("ext-1"))
            .await
            .unwrap()
            .is_none()
    );

    // Refusals, each with its reason; none writes anything.
    let oversized = json!({"uuid": "big", "companycode": 1, "pad": "x".repeat(MAX_BODY)});
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("oversized", oversized.to_string(), 413, "larger than"),
        ("malformed", "{\"uuid\": \"m\", ".into(), 400, "malformed"),
        (
            "no uuid",
            json!({"companycode": 1}).to_string(),
            400,
            "missing field `uuid`",
        ),
        (
            "wrong type",
            json!({"uuid": ["u"], "companycode": 1}).to_string(),
            400,
            "uuid",
        ),
        ("not an object", "[1, 2]".into(), 400, "not a JSON object"),
        ("empty", "".into(), 400, "no JSON object"),
        (
            "one good one bad",
            format!(
                "{}\n{}",
                record("half-1"),
                json!({"companycode": 1, "recordfilename": "half-2.wav"})
            ),
            400,
            "uuid",
        ),
    ];
    for (what, body, want, reason) in cases {
        let (status, answer) = rx.post(&path, body).await;
        assert_eq!(status, want, "{what}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{what}: {error}");
    }
    for uuid in ["big", "m", "half-1"] {
        assert!(
            rx.ledger
                .get(&crate::world::cu(uuid))
                .await
                .unwrap()
                .is_none(),
            "{uuid} written"
        );
    }

    // Wrong or missing secret: 404 like any unknown address, nothing stored.
    for wrong in [
        "/callback/not-the-secret".to_owned(),
        format!("/callback/{SECRET}x"),
        "/callback".to_owned(),
        "/callback?secret=nope".to_owned(),
    ] {
        let (status, _) = rx.post(&wrong, record("intruder").to_string()).await;
        assert_eq!(status, 404, "{wrong}");
    }
    assert!(
        rx.ledger
            .get(&crate::world::cu("intruder"))
            .await
            .unwrap()
            .is_none()
    );

    // Probes and metrics.
    assert_eq!(rx.get(&crate::world::cu("/healthz")).await.0, 200);
    assert_eq!(rx.get(&crate::world::cu("/readyz")).await.0, 200);
    let (status, metrics) = rx.get(&crate::world::cu("/metrics")).await;
    assert_eq!(status, 200);
    for line in [
        "callvault_callbacks_total{account=\"default\",result=\"stored\"} 2",
        "callvault_callbacks_total{account=\"default\",result=\"duplicate\"} 1",
        "callvault_callbacks_total{account=\"default\",result=\"rejected\"} 6",
        "callvault_callbacks_total{account=\"default\",result=\"too_large\"} 1",
        "callvault_callbacks_total{account=\"default\",result=\"unauthorized\"} 4",
        "callvault_records{account=\"default\",state=\"pending\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    rx.stop().await;
}

#[tokio::test]
async fn callbacks_from_outside_the_allowed_networks_are_refused() {
    let outside = start_receiver(&["10.0.0.0/8", "192.168.0.0/16"]).await;
    let (status, _) = outside
        .post(&format!("/callback/{SECRET}"), record("c").to_string())
        .await;
    assert_eq!(status, 403);
    assert!(
        outside
            .ledger
            .get(&crate::world::cu("c"))
            .await
            .unwrap()
            .is_none()
    );
    outside.stop().await;

    let inside = start_receiver(&["127.0.0.0/8"]).await;
    let (status, _) = inside
        .post(&format!("/callback/{SECRET}"), record("c").to_string())
        .await;
    assert_eq!(status, 200);
    inside.stop().await;
}

#[tokio::test]
async fn serve_with_a_schedule_archives_what_it_receives_and_stops_cleanly_on_sigterm() {
    let world = World::new().await;
    let port = free_port();
    let metrics_file = world.dir.path().join("callvault.prom");
    let child = callvault(
        &world,
        &[
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--schedule",
            "*/2 * * * * *",
            "--grace",
            "2s",
            "--metrics-file",
            metrics_file.to_str().unwrap(),
        ],
    )
    .env("CALLVAULT_CALLBACK_SECRET", SECRET)
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let base = wait_ready(port).await;

    let client = reqwest::Client::new();
    let callbacks = world.sim.sample_callbacks(6, chrono::Utc::now());
    for callback in &callbacks {
        let response = client
            .post(format!("{base}/callback/{SECRET}"))
            .body(callback.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }
    let with_recording = callbacks
        .iter()
        .filter(|c| !c["recordfilename"].as_str().unwrap_or_default().is_empty())
        .count();
    let ledger = world.ledger.clone();
    let archived = wait_for(Duration::from_secs(30), async || {
        ledger
            .uuids_in_state(RecordState::Archived)
            .await
            .unwrap()
            .len()
            == with_recording
    })
    .await;
    assert!(
        archived,
        "the scheduled passes archived every received call"
    );
    assert_eq!(world.verify_archived().await, with_recording);
    let file_written = wait_for(Duration::from_secs(10), async || {
        std::fs::read_to_string(&metrics_file).is_ok_and(|t| {
            t.contains(&format!(
                "callvault_records{{account=\"default\",state=\"archived\"}} {with_recording}"
            ))
        })
    })
    .await;
    assert!(file_written, "the metrics file tells the archived count");

    let stopped_at = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let mut child = child;
        child.wait().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0), "a clean stop");
    assert!(stopped_at.elapsed() < Duration::from_secs(10));
    let still_running = world
        .ledger
        .status(chrono::Utc::now(), chrono::Duration::days(90))
        .await
        .unwrap();
    assert_ne!(
        still_running.last_run.map(|r| r.status),
        Some(callvault::domain::RunStatus::Running),
        "no pass was left half-recorded"
    );
}
