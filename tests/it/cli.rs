//! The `callvault` binary, driven only by its environment variables, against the simulator
//! and the S3 server on loopback: import, run, status, exit codes, SIGKILL and SIGTERM.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use callvault::domain::RecordState;
use callvault::simulator::DownloadFault;

use crate::world::{BUCKET, World};

pub(crate) fn callvault(world: &World, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_callvault"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CALLVAULT_LEDGER", &world.ledger_url)
        .env("CALLVAULT_API_URL", world.sim.api_url())
        .env("CALLVAULT_APPID", &world.sim.config().appid)
        .env("CALLVAULT_ACCESSKEY", &world.sim.config().accesskey)
        .env("CALLVAULT_STORE", format!("s3://{BUCKET}/calls"))
        .env("CALLVAULT_RETRY_DELAY", "10ms")
        .env("CALLVAULT_ALLOW_DOWNLOAD_NETWORKS", crate::world::LOOPBACK)
        .current_dir(world.dir.path());
    for (k, v) in world.s3.env() {
        cmd.env(k, v);
    }
    cmd
}

/// Writes `n` sample callbacks and imports them with the binary.
pub async fn import_samples(world: &World, n: usize) {
    let file = write_callbacks(world, n);
    let out = output(callvault(world, &["import", file.to_str().unwrap()])).await;
    assert_exit(&out, 0);
}

/// Asserts a process's exit code, showing its standard error when it is not `code`.
pub(crate) fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("the binary runs"))
        .await
        .unwrap()
}

pub(crate) fn write_callbacks(world: &World, n: usize) -> std::path::PathBuf {
    let lines: Vec<String> = world
        .sim
        .sample_callbacks(n, chrono::Utc::now())
        .iter()
        .map(|c| c.to_string())
        .collect();
    let path = world.dir.path().join("callbacks.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[tokio::test]
async fn import_then_run_then_run_again_then_status_from_the_environment_alone() {
    let world = World::new().await;
    let file = write_callbacks(&world, 15);

    let import = output(callvault(&world, &["import", file.to_str().unwrap()])).await;
    assert_exit(&import, 0);
    assert!(String::from_utf8_lossy(&import.stdout).contains("15 new (3 without recording)"));

    let run = output(callvault(&world, &["run", "--json"])).await;
    assert_exit(&run, 0);
    let summary: serde_json::Value =
        serde_json::from_slice(&run.stdout).expect("--json prints JSON");
    assert_eq!(summary["archived"], 12);
    assert_eq!(summary["exit_code"], 0);

    assert_eq!(world.verify_archived().await, 12);
    let keys = world.object_keys().await;
    let downloads = world.sim.stats().downloads;

    let again = output(callvault(&world, &["run", "--json"])).await;
    assert_eq!(again.status.code(), Some(0));
    let summary: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(summary["archived"], 0);
    assert_eq!(
        world.object_keys().await,
        keys,
        "the second run wrote nothing"
    );
    assert_eq!(world.sim.stats().downloads, downloads);

    let status = output(callvault(&world, &["status", "--json"])).await;
    assert_eq!(status.status.code(), Some(0));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let counts = &status["counts"];
    assert_eq!(
        (counts["archived"].as_i64(), counts["no_recording"].as_i64()),
        (Some(12), Some(3))
    );
    for state in ["pending", "in_progress", "failed", "expired"] {
        assert_eq!(counts[state], 0, "{state}");
    }
    assert_eq!(status["last_run"]["status"], "completed");
}

#[tokio::test]
async fn importing_the_same_file_twice_changes_nothing_and_bad_lines_are_named() {
    let world = World::new().await;
    let good = write_callbacks(&world, 5);
    let mut text = std::fs::read_to_string(&good).unwrap();
    text.push_str(
        "{\"uuid\": \"x1\", \"companycode\": 1, \"billsec\": \"lots\"}\nnot json at all\n",
    );
    text.push_str("[{\"uuid\": 77, \"companycode\": \"9\", \"recordfilename\": \"a.wav\", \"starttime\": \"\"}]\n");
    let file = world.dir.path().join("mixed.json");
    std::fs::write(&file, text).unwrap();

    let first = output(callvault(&world, &["import", file.to_str().unwrap()])).await;
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(
        first.status.code(),
        Some(1),
        "a rejected line makes the exit non-zero"
    );
    // Line 6's unreadable `billsec` is no reason to lose the call: stored, noted.
    assert!(!stderr.contains("mixed.json:6"), "{stderr}");
    let noted = world
        .ledger
        .get(&crate::world::cu("x1"))
        .await
        .unwrap()
        .expect("x1 stored");
    assert!(
        noted
            .record
            .notes
            .as_deref()
            .unwrap_or("")
            .contains("billsec"),
        "{:?}",
        noted.record.notes
    );
    assert!(
        stderr.contains("mixed.json:7: rejected: malformed JSON: not a JSON object"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains(
        "7 new (2 without recording), 0 already known, 0 late recordings added, 0 joined to calls found by sync, 1 rejected"
    ));
    let before = world
        .ledger
        .get(&crate::world::cu("77"))
        .await
        .unwrap()
        .unwrap();

    let second = output(callvault(&world, &["import", file.to_str().unwrap()])).await;
    assert!(
        String::from_utf8_lossy(&second.stdout)
            .contains("0 new (0 without recording), 7 already known")
    );
    let after = world
        .ledger
        .get(&crate::world::cu("77"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (after.record, after.state, after.attempts),
        (before.record, before.state, before.attempts)
    );
}

/// A wrong access key: the binary exits 3, never prints the key, marks nothing failed.
#[tokio::test]
async fn refused_credentials_exit_3_and_mark_nothing_failed() {
    let world = World::new().await;
    import_samples(&world, 5).await;
    let mut run = callvault(&world, &["run"]);
    run.env("CALLVAULT_ACCESSKEY", "wrong-key");

    let out = output(run).await;

    assert_exit(&out, 3);
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the credentials"));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("wrong-key"),
        "the access key is never printed"
    );
    assert_eq!(world.count(RecordState::Pending).await, 4);
    assert!(world.count(RecordState::Failed).await == 0);
}

#[tokio::test]
async fn configuration_errors_exit_2() {
    let world = World::new().await;
    let mut no_store = callvault(&world, &["run"]);
    no_store.env_remove("CALLVAULT_STORE");
    let out = output(no_store).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CALLVAULT_STORE"));
    let bad_flag = output(callvault(&world, &["run", "--concurrency", "0"])).await;
    assert_eq!(bad_flag.status.code(), Some(2));
}

/// Waits until `check` holds, for at most `limit`.
pub(crate) async fn wait_for(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// SIGKILL mid-transfer: nothing is marked archived or stored; once the lease runs out the
/// next run archives every record (a pass in the test, its clock moved past the lease).
#[tokio::test]
async fn a_run_killed_with_sigkill_leaves_nothing_falsely_archived_and_is_resumed() {
    let world = World::new().await;
    import_samples(&world, 10).await;
    // Every recording stalls, so the run is surely mid-transfer when it dies.
    world.stall_all_pending(Duration::from_secs(20)).await;
    let mut child = callvault(&world, &["run", "--lease", "2s", "--concurrency", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ledger = world.ledger.clone();
    let claimed = wait_for(Duration::from_secs(20), async || {
        ledger
            .uuids_in_state(RecordState::InProgress)
            .await
            .unwrap()
            .len()
            == 4
    })
    .await;
    assert!(claimed, "the run claimed its records");

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    assert!(world.count(RecordState::Archived).await == 0);
    assert!(world.object_keys().await.is_empty());
    world.sim.clear_download_faults();
    let during = world.run(&world.options()).await;
    assert_eq!(
        world.count(RecordState::InProgress).await,
        4,
        "the dead run's lease still holds: {:?}",
        during.report
    );
    world.clock.advance(Duration::from_secs(3));
    let after = world.run(&world.options()).await;
    assert_eq!(after.exit_code(), 0, "{:?}", after.report);
    assert_eq!(world.verify_archived().await, 8);
}

/// SIGTERM while every transfer is stalled: no new claims, the in-flight transfers are
/// aborted when the 1 s grace period ends and their records released (pending, due at
/// once), nothing is stored, and the process exits 1 well within its grace period.
#[tokio::test]
async fn sigterm_stops_claiming_and_releases_stalled_work_within_the_grace_period() {
    let world = World::new().await;
    import_samples(&world, 5).await;
    world.stall_all_pending(Duration::from_secs(30)).await;
    let child = callvault(
        &world,
        &["run", "--grace", "1s", "--concurrency", "2", "--json"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let ledger = world.ledger.clone();
    assert!(
        wait_for(Duration::from_secs(20), async || ledger
            .uuids_in_state(RecordState::InProgress)
            .await
            .unwrap()
            .len()
            == 2)
        .await
    );

    let stopped_at = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();

    assert!(
        stopped_at.elapsed() < Duration::from_secs(10),
        "stopped within the grace period"
    );
    assert_eq!(out.status.code(), Some(1));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (summary["released"].as_u64(), summary["archived"].as_u64()),
        (Some(2), Some(0)),
        "{summary}"
    );
    assert_eq!(
        world.count(RecordState::Pending).await,
        4,
        "all back to pending"
    );
    assert!(world.object_keys().await.is_empty());
}

/// `callvault demo` with nothing configured: two provider accounts on one simulator, acme
/// (a receiver that misses callbacks, sync, faults, a hold and an erasure) and globex (found
/// by sync alone), archived by one run into a folder each, each account's retention applied
/// by `expire` (acme 7 years, globex 14 days: a local folder has no Object Lock), and one
/// status per account.
#[tokio::test]
async fn the_demo_archives_its_sample_recordings_with_nothing_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_callvault"));
    demo.args(["demo", "--calls", "20"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir.path());

    let out = output(demo).await;

    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "receiver got 18 callbacks; 2 were dropped on the way",
        "sync recovered 2 of the 2 dropped callbacks' calls",
        "acme: run ",
        "archived 16, retry later 0, failed 0",
        "globex: 10 bills read from globex's own bill list; 10 calls found",
        "globex: run ",
        "archived 8, retry later 0, failed 0",
        "refused: on hold: hold-",
        "DEMO-CASE-1",
        "lists the erasure",
        "status:   acme: ",
        "status:   globex: ",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in\n{stdout}");
    }
    let run_dir = std::fs::read_dir(dir.path().join("callvault-demo"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // One of acme's 16 was erased by the demo's compliance step; one is on hold.
    let acme = demo_recordings(&run_dir.join("archive/acme"));
    assert_eq!(acme.len(), 15);
    let globex = demo_recordings(&run_dir.join("archive/globex"));
    let expired = expired_by_demo(&stdout, "globex keeps recordings 14d");
    assert_eq!(globex.len() + expired, 8, "{stdout}");
    assert_eq!(expired_by_demo(&stdout, "acme keeps recordings 7y"), 0);
    let now = chrono::Utc::now();
    let started = |meta: &serde_json::Value| {
        let start = meta["call_start"].as_str().unwrap();
        callvault::timefmt::from_ledger(start).unwrap()
    };
    for meta in &globex {
        assert_eq!(meta["company_code"], "20000099", "globex's calls only");
        assert!(now - started(meta) < chrono::Duration::days(14), "{meta}");
    }
    assert!(acme.iter().all(|m| m["company_code"] == "20000013"));
    assert!(
        acme.iter()
            .any(|m| now - started(m) > chrono::Duration::days(14)),
        "acme keeps what globex's retention would let go"
    );
    assert!(
        run_dir
            .join("archive/acme/manifests/0000000001.jsonl")
            .is_file()
    );
    assert!(
        run_dir
            .join("archive/globex/manifests/0000000001.jsonl")
            .is_file()
    );
    demo_status_per_account(&run_dir, acme.len(), globex.len()).await;
}

/// The sidecars of the recordings under `folder`, each checked against its recording.
fn demo_recordings(folder: &std::path::Path) -> Vec<serde_json::Value> {
    let files = crate::world::files_under(folder);
    assert!(
        !files
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".metadata.json")),
        "the sidecar replaces the metadata file"
    );
    let recordings = files.iter().filter(|p| {
        !p.to_string_lossy().ends_with(".json") && !p.starts_with(folder.join("manifests"))
    });
    let mut sidecars = Vec::new();
    for recording in recordings {
        let sidecar = format!("{}.json", recording.display());
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
        let bytes = std::fs::read(recording).unwrap();
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        assert_eq!(meta["sha256"], sha, "{}", recording.display());
        assert_eq!(meta["size"], bytes.len());
        if meta["uuid"].as_str().unwrap_or("").starts_with("bill-") {
            // Found by sync (its callback was dropped): the record is the bill, named by id.
            assert!(!meta["call"]["id"].is_null(), "{meta}");
        } else {
            assert_eq!(meta["call"]["uuid"], meta["uuid"]);
        }
        sidecars.push(meta);
    }
    sidecars
}

/// How many calls the demo's `expire:` line starting `what` says it erased.
fn expired_by_demo(stdout: &str, what: &str) -> usize {
    let line = stdout
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("{what:?} in\n{stdout}"));
    let (_, after) = line.split_once(what).unwrap();
    let erased = after.trim_start_matches(": ").split(' ').next().unwrap();
    erased.parse().unwrap()
}

/// The settings file the demo leaves makes `status` show one status per account.
async fn demo_status_per_account(run_dir: &std::path::Path, acme: usize, globex: usize) {
    let mut status = Command::new(env!("CARGO_BIN_EXE_callvault"));
    status
        .args(["status", "--json", "--config"])
        .arg(run_dir.join("callvault.toml"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());

    let out = output(status).await;

    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_str(&text).unwrap();
    let accounts = shown["accounts"].as_array().unwrap();
    let names: Vec<&str> = accounts
        .iter()
        .map(|a| a["account"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme", "globex"]);
    // acme's held call is archived; its erased one is not counted as archived any more.
    assert_eq!(accounts[0]["counts"]["archived"], acme, "{text}");
    assert_eq!(accounts[1]["counts"]["archived"], globex, "{text}");
}

#[tokio::test]
async fn secrets_never_reach_the_logs_the_summary_or_the_ledger() {
    let world = World::new().await;
    import_samples(&world, 10).await;
    world
        .sim
        .set_faults(|f| f.invalidate_tokens_every = Some(3));
    // Failures whose messages name the link: a cut-off body, a redirect to a host not
    // allowed (url_refused), a header with no audio (not_audio).
    let localhost = format!("http://localhost:{}/", world.sim.local_addr().port());
    let faults = [
        DownloadFault::Truncate(100),
        DownloadFault::RedirectTo(localhost),
        DownloadFault::HeaderOnly,
    ];
    let pending = world
        .ledger
        .uuids_in_state(RecordState::Pending)
        .await
        .unwrap();
    for (uuid, fault) in pending.iter().zip(faults) {
        let row = world
            .ledger
            .get(&crate::world::cu(uuid))
            .await
            .unwrap()
            .unwrap();
        world
            .sim
            .push_download_fault(&row.record.record_file, fault);
    }
    let mut run = callvault(&world, &["run", "--json", "--log", "debug"]);
    run.env("CALLVAULT_LOG_FORMAT", "json");

    let out = output(run).await;
    let status = output(callvault(&world, &["status", "--json", "--log", "debug"])).await;

    assert_exit(&out, 0);
    assert_exit(&status, 0);
    let ledger_bytes = std::fs::read(world.dir.path().join("ledger.db")).unwrap();
    let wal = std::fs::read(world.dir.path().join("ledger.db-wal")).unwrap_or_default();
    let everything = [
        out.stdout,
        out.stderr,
        status.stdout,
        status.stderr,
        ledger_bytes,
        wal,
    ]
    .concat();
    let text = String::from_utf8_lossy(&everything);
    for canary in [
        world.sim.config().accesskey.as_str(),
        crate::world::S3_SECRET_KEY,
        crate::world::S3_ACCESS_KEY,
        "sig=",
        "expires=",
    ] {
        assert!(!text.contains(canary), "{canary:?} leaked");
    }
    assert!(
        text.contains("token rejected") || text.contains("logged in"),
        "the debug log was captured"
    );
    for code in ["url_refused", "not_audio"] {
        assert!(text.contains(code), "the {code} failure was exercised");
    }
}

#[tokio::test]
async fn large_pretty_printed_arrays_and_standard_input_import_whole() {
    let world = World::new().await;
    let records: Vec<serde_json::Value> = (0..6000)
        .map(|i| {
            serde_json::json!({
                "uuid": format!("bulk-{i:05}"), "companycode": 7, "recordfilename": format!("bulk-{i}.wav"),
                "starttime": "2026-11-01 10:00:00", "billsec": i, "memberid": "x".repeat(600),
                "nested": {"note": "braces } in { strings"},
            })
        })
        .collect();
    let text = serde_json::to_string_pretty(&records).unwrap();
    assert!(text.len() > 3 << 20, "spans several import chunks");
    let mut import = callvault(&world, &["import"]);
    import
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let out = tokio::task::spawn_blocking(move || {
        let mut child = import.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();

    assert_exit(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("6000 new (0 without recording)"));
    let status = world
        .ledger
        .status(chrono::Utc::now(), chrono::Duration::days(90))
        .await
        .unwrap();
    assert_eq!(status.counts["pending"], 6000);
}

/// A provider or store that cannot be reached (exit 1, a message naming which), an S3
/// secret the store refuses and a bucket that does not exist (exit 2, the store's own
/// reason): each stops the run before any claim, so no record is attempted, failed or
/// archived, and every record stays pending.
#[tokio::test]
async fn an_unreachable_provider_or_store_stops_the_run_before_any_claim() {
    let world = World::new().await;
    import_samples(&world, 5).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);

    let mut no_provider = callvault(&world, &["run"]);
    no_provider.env("CALLVAULT_API_URL", format!("{closed_url}/"));
    let out = output(no_provider).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("provider cannot be reached"));

    let mut no_store = callvault(&world, &["run"]);
    no_store.env("AWS_ENDPOINT", &closed_url);
    let out = output(no_store).await;
    assert_exit(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("object store is not usable"));

    let mut wrong_key = callvault(&world, &["run"]);
    wrong_key.env("AWS_SECRET_ACCESS_KEY", "not-the-key");
    let out = output(wrong_key).await;
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the store refused access") && stderr.contains("SignatureDoesNotMatch"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not-the-key"),
        "the secret is never printed"
    );

    let mut no_bucket = callvault(&world, &["run"]);
    no_bucket.env("CALLVAULT_STORE", "s3://no-such-bucket/calls");
    let out = output(no_bucket).await;
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NoSuchBucket"), "{stderr}");

    assert_eq!(world.count(RecordState::Pending).await, 4);
    assert_eq!(
        world.sim.stats().url_requests,
        0,
        "nothing was claimed or attempted"
    );
    assert!(world.object_keys().await.is_empty());
}

#[tokio::test]
async fn proxy_variables_are_ignored_and_bad_download_policies_are_configuration_errors() {
    let world = World::new().await;
    import_samples(&world, 5).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    // The API and the store are reached as `localhost`, exempt from the proxy; the download
    // links name 127.0.0.1, which only ignoring the proxy variables can reach.
    let mut proxied = callvault(&world, &["run"]);
    for var in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"] {
        proxied.env(var, &nowhere);
    }
    proxied
        .env("NO_PROXY", "localhost")
        .env(
            "CALLVAULT_API_URL",
            world.sim.api_url().replace("127.0.0.1", "localhost"),
        )
        .env("CALLVAULT_DOWNLOAD_HOSTS", "127.0.0.1")
        .env(
            "AWS_ENDPOINT",
            world.s3.endpoint.replace("127.0.0.1", "localhost"),
        );

    let out = output(proxied).await;

    assert_exit(&out, 0);
    assert_eq!(world.verify_archived().await, 4);

    for (var, value) in [
        ("CALLVAULT_DOWNLOAD_HOSTS", "ok.example,bad/host"),
        ("CALLVAULT_ALLOW_DOWNLOAD_NETWORKS", "10.0.0.0/40"),
        ("CALLVAULT_DOWNLOAD_PROXY", "ftp://proxy.example"),
    ] {
        let mut run = callvault(&world, &["run"]);
        run.env(var, value);
        let out = output(run).await;
        assert_exit(&out, 2);
        assert!(String::from_utf8_lossy(&out.stderr).contains("configuration"));
    }
}

/// A PostgreSQL ledger's password, the provider's access key, the callback secret and the S3
/// secret stay out of standard output and standard error, with RUST_LOG=debug and JSON asked
/// for: when the ledger cannot be reached (the error names it, its password hidden) and when
/// it can (an import, a run, status, find and migrate on it).
#[tokio::test]
async fn the_ledger_password_and_the_secrets_stay_out_of_output_logs_and_errors() {
    const PASSWORD: &str = "s3cretpw-canary";
    const CALLBACK_SECRET: &str = "callback-secret-canary";
    // The tests' server trusts loopback, so a password in the URL is accepted, and unused.
    let reachable =
        crate::pg::database()
            .await
            .replacen("postgres@", &format!("postgres:{PASSWORD}@"), 1);
    assert!(reachable.contains(PASSWORD), "{reachable}");
    let world = World::on_ledger(reachable, tempfile::tempdir().unwrap()).await;
    let unreachable = format!("postgres://u:{PASSWORD}@127.0.0.1:1/db");
    let with_debug_logs = |args: &[&str], ledger: &str| {
        let mut cmd = callvault(&world, args);
        cmd.env("CALLVAULT_LEDGER", ledger)
            .env("RUST_LOG", "debug")
            .env("CALLVAULT_CALLBACK_SECRET", CALLBACK_SECRET);
        cmd
    };
    let mut outputs = Vec::new();

    for args in [
        &["status", "--json"][..],
        &["migrate", "--json"],
        &["run", "--json"],
        &["find", "--json", "--number", "13692"],
        &["serve", "--listen", "127.0.0.1:0"],
        &[
            "ledger",
            "copy",
            "--from",
            &unreachable,
            "--to",
            "sqlite://copy.db",
            "--json",
        ],
    ] {
        let out = output(with_debug_logs(args, &unreachable)).await;
        assert_exit(&out, 1);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("postgres://u:***@127.0.0.1:1/db"),
            "{args:?} names the ledger it cannot reach: {stderr}"
        );
        outputs.push(out);
    }
    let help = output(with_debug_logs(&["run", "--help"], &unreachable)).await;
    assert_exit(&help, 0);
    outputs.push(help);
    let callbacks = write_callbacks(&world, 5);
    for args in [
        &["import", callbacks.to_str().unwrap()][..],
        &["run", "--json"],
        &["status", "--json"],
        &["find", "--json"],
        &["migrate", "--json"],
        &["migrate"],
    ] {
        let out = output(with_debug_logs(args, &world.ledger_url)).await;
        assert_exit(&out, 0);
        outputs.push(out);
    }

    let run: serde_json::Value = serde_json::from_slice(&outputs[8].stdout).unwrap();
    assert_eq!(
        run["archived"], 4,
        "the run on the ledger with a password worked"
    );
    let migrate = String::from_utf8_lossy(&outputs[12].stdout);
    assert!(
        migrate.contains("postgres://postgres:***@127.0.0.1:"),
        "the ledger is named, its password hidden: {migrate}"
    );
    let everything: Vec<u8> = outputs
        .iter()
        .flat_map(|o| [o.stdout.as_slice(), o.stderr.as_slice()])
        .flatten()
        .copied()
        .collect();
    let text = String::from_utf8_lossy(&everything);
    assert!(text.contains("DEBUG"), "the debug log was captured");
    for canary in [
        PASSWORD,
        CALLBACK_SECRET,
        world.sim.config().accesskey.as_str(),
        crate::world::S3_SECRET_KEY,
    ] {
        assert!(!text.contains(canary), "{canary:?} leaked");
    }
}
