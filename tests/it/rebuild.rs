//! `ledger rebuild --from-store`: a ledger lost after two runs (two manifests) and a
//! recording archived after the last manifest is rebuilt from the bucket alone, into SQLite
//! and into PostgreSQL; `status`, `verify` and `verify --manifests` answer as the lost
//! ledger did, and the next run's manifest links to the rebuilt head. A bucket that does
//! not add up (a recording without its sidecar, a sidecar without its recording, an edited
//! manifest) is reported, and a ledger that holds calls is refused unless `--merge`.

use callvault::domain::RecordState;
use callvault::ledger::Ledger;
use callvault::store::Sidecar;
use serde_json::Value;

use crate::audit::{archive_without_manifest, delete};
use crate::cli::{assert_exit, callvault, output, write_callbacks};
use crate::world::{World, cu};

/// Archives `uuid` as a run does (recording, settlement, sidecar), then dies before writing
/// its manifest: the recording is in no manifest.
async fn archive_after_the_last_manifest(world: &World, uuid: &str, body: &[u8]) -> String {
    let (record, object) = archive_without_manifest(world, &world.store, uuid, body).await;
    world
        .store
        .write_sidecar(&Sidecar::new(
            &callvault::accounts::AccountName::default_account(),
            &record,
            &object,
            "run-killed",
        ))
        .await
        .unwrap();
    object.key
}

/// `status --json`'s counts (not what moves with the clock or names the last run: the
/// rebuilt ledger's last run is the rebuild).
fn counts(out: &std::process::Output) -> Value {
    let status: Value = serde_json::from_slice(&out.stdout).expect("status --json");
    serde_json::json!({
        "counts": status["counts"],
        "total": status["total"],
        "at_risk": status["at_risk_within_14_days"],
        "oldest_pending_call": status["oldest_pending_call"],
    })
}

fn report(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "rebuild --json: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test]
async fn a_lost_ledger_is_rebuilt_from_the_bucket_and_the_chain_goes_on() {
    // Arrange: two runs (two manifests), then a recording archived after the last manifest.
    let world = World::new().await;
    let file = write_callbacks(&world, 10);
    assert_exit(
        &output(callvault(&world, &["import", file.to_str().unwrap()])).await,
        0,
    );
    assert_exit(
        &output(callvault(&world, &["run", "--max-records", "3"])).await,
        1,
    );
    assert_exit(&output(callvault(&world, &["run"])).await, 0);
    let late = archive_after_the_last_manifest(&world, "late-1", &[5u8; 3000]).await;
    let on = |url: &str, args: &[&str]| {
        let mut cmd = callvault(&world, args);
        cmd.env("CALLVAULT_LEDGER", url);
        cmd
    };
    let status = counts(&output(callvault(&world, &["status", "--json"])).await);
    let verify = output(callvault(&world, &["verify"])).await;
    let chain = output(callvault(&world, &["verify", "--manifests"])).await;
    assert_exit(&verify, 0);
    assert_exit(&chain, 0);
    let lost_chain: Value = serde_json::from_slice(
        &output(callvault(&world, &["verify", "--manifests", "--json"]))
            .await
            .stdout,
    )
    .unwrap();
    // 10 calls: 8 with a recording, archived by the two runs, 2 unanswered; and the late one.
    assert_eq!(status["counts"]["archived"], 9, "{status}");
    assert_eq!(status["counts"]["no_recording"], 2, "{status}");

    // A call to find again by its callee's number (a sample call with a recording).
    let sample: Value = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|c| c["recordfilename"].as_str().is_some_and(|f| !f.is_empty()))
        .unwrap();
    let (number, uuid) = (
        sample["destnumber"].as_str().unwrap().to_owned(),
        sample["uuid"].as_str().unwrap().to_owned(),
    );
    let found = output(callvault(&world, &["find", "--number", &number, "--json"])).await;
    assert_exit(&found, 0);
    assert!(String::from_utf8_lossy(&found.stdout).contains(&uuid));

    // The ledger is lost.
    world.ledger.close().await;
    let path = world
        .ledger_url
        .strip_prefix("sqlite://")
        .unwrap()
        .to_owned();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    assert!(!std::path::Path::new(&path).exists());

    // Act: rebuilt into SQLite (the same place) and into PostgreSQL.
    let postgres = crate::pg::database().await;
    for url in [world.ledger_url.as_str(), postgres.as_str()] {
        let rebuilt = output(on(url, &["ledger", "rebuild", "--from-store", "--json"])).await;
        assert_exit(&rebuilt, 0);
        let found = report(&rebuilt);
        assert_eq!(found["manifests"], 2, "{found}");
        assert_eq!(found["calls_from_manifests"], 8, "{found}");
        assert_eq!(found["calls_not_in_a_manifest"], 1, "{found}");
        assert_eq!(found["problems"], serde_json::json!([]), "{found}");
        assert_eq!(found["head"]["key"], lost_chain["manifests"]["newest"]);

        // Assert: the rebuilt ledger answers as the lost one did.
        // Every archived call is back; unanswered calls never reached the bucket (a `sync`
        // with the provider's bill list brings back what it still has).
        let mut expected = status.clone();
        expected["counts"]["no_recording"] = 0.into();
        expected["total"] = 9.into();
        let shown = output(on(url, &["status", "--json"])).await;
        assert_eq!(counts(&shown), expected, "{url}");
        // Its last run is the rebuild, with its report, and no exit code: it archived nothing.
        let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
        let rebuild = &shown["last_run"]["summary"]["rebuild"];
        assert_eq!(rebuild["consistent"], true, "{shown}");
        assert_eq!(rebuild["calls"], 9, "{shown}");
        assert_eq!(shown["last_run"]["exit_code"], Value::Null, "{shown}");
        let verified = output(on(url, &["verify"])).await;
        assert_exit(&verified, 0);
        assert_eq!(
            String::from_utf8_lossy(&verified.stdout),
            String::from_utf8_lossy(&verify.stdout),
            "{url}"
        );
        let chained = output(on(url, &["verify", "--manifests"])).await;
        assert_exit(&chained, 0);
        assert_eq!(
            String::from_utf8_lossy(&chained.stdout),
            String::from_utf8_lossy(&chain.stdout),
            "{url}"
        );
        // Its calls are found by number again.
        let found = output(on(url, &["find", "--number", &number, "--json"])).await;
        assert_exit(&found, 0);
        assert!(
            String::from_utf8_lossy(&found.stdout).contains(&uuid),
            "{url}: {}",
            String::from_utf8_lossy(&found.stdout)
        );
        // The late recording is back, with its original record and its attempt.
        let ledger = Ledger::open(url).await.unwrap();
        let row = ledger.get(&cu("late-1")).await.unwrap().expect("recovered");
        assert_eq!(row.state, RecordState::Archived);
        assert_eq!(row.object_key.as_deref(), Some(late.as_str()));
        assert_eq!(row.size_bytes, Some(3000));
        assert_eq!(row.manifest_seq, None, "in no manifest yet");
        assert_eq!(
            row.record.record_file, "late-1.wav",
            "the provider's record"
        );
        assert_eq!(row.record.billsec, Some(25));
        assert_eq!(row.attempts, 1);
        ledger.close().await;

        // A second rebuild into the now full ledger is refused; with --merge it adds nothing.
        let twice = output(on(url, &["ledger", "rebuild", "--from-store"])).await;
        assert_exit(&twice, 2);
        assert!(String::from_utf8_lossy(&twice.stderr).contains("--merge"));
        let merged = output(on(
            url,
            &["ledger", "rebuild", "--from-store", "--merge", "--json"],
        ))
        .await;
        assert_exit(&merged, 0);
        let merged = report(&merged);
        assert_eq!(merged["calls_already_known"], 8, "{merged}");
        assert_eq!(merged["calls_from_manifests"], 0, "{merged}");
        assert_eq!(merged["calls_not_in_a_manifest"], 0, "{merged}");
        assert_eq!(
            counts(&output(on(url, &["status", "--json"])).await),
            expected
        );
    }

    // The chain goes on from the rebuilt head (on the SQLite ledger; the PostgreSQL one
    // would then be behind the bucket).
    let more = world.dir.path().join("more.jsonl");
    let lines: Vec<String> = world
        .sim
        .sample_callbacks(2, chrono::Utc::now())
        .iter()
        .map(|c| c.to_string())
        .collect();
    std::fs::write(&more, lines.join("\n") + "\n").unwrap();
    assert_exit(
        &output(callvault(&world, &["import", more.to_str().unwrap()])).await,
        0,
    );
    let run = output(callvault(&world, &["run", "--json"])).await;
    assert_exit(&run, 0);
    let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
    let written = summary["manifests"].as_array().unwrap();
    assert_eq!(written.len(), 1, "{summary}");
    assert_eq!(written[0]["seq"], 3);
    // Listing the late recording too: it was in no manifest.
    assert_eq!(written[0]["entries"], 3, "{summary}");
    let bytes = crate::audit::bytes_of(&world.store, written[0]["key"].as_str().unwrap())
        .await
        .unwrap();
    let header = crate::audit::header_of(&bytes);
    let previous = header.previous.expect("it links to the rebuilt head");
    assert_eq!(Value::from(previous.key), lost_chain["manifests"]["newest"]);
    let chain_now = output(callvault(&world, &["verify", "--manifests"])).await;
    assert_exit(&chain_now, 0);
    assert_exit(&output(callvault(&world, &["verify"])).await, 0);
}

#[tokio::test]
async fn a_bucket_that_does_not_add_up_is_reported_and_exits_1() {
    let world = World::new().await;
    for i in 0..4 {
        world
            .import_call(&format!("r-{i}"), &format!("r-{i}.wav"), 2000 + i)
            .await;
    }
    let run = world.run(&world.options()).await;
    assert_eq!(run.report.archived, 4);
    world.import_call("r-4", "r-4.wav", 2004).await;
    assert_eq!(world.run(&world.options()).await.report.archived, 1);
    // Manifest 1 edited behind the chain's back (a line added): manifest 2's link breaks.
    let first = world.store.manifest_key(1);
    let mut bytes = crate::audit::bytes_of(&world.store, &first).await.unwrap();
    bytes.extend_from_slice(b"\n");
    crate::audit::put(&world.store, &first, bytes).await;
    let key = |uuid: &str| {
        let row = futures::executor::block_on(world.ledger.get(&cu(uuid)))
            .unwrap()
            .unwrap();
        row.object_key.unwrap()
    };
    let (without_sidecar, without_object) = (key("r-1"), key("r-2"));
    delete(&world.store, &world.store.sidecar_key(&without_sidecar)).await;
    delete(&world.store, &without_object).await;
    let fresh = format!("sqlite://{}", world.dir.path().join("rebuilt.db").display());

    let rebuilt = output({
        let mut cmd = callvault(&world, &["ledger", "rebuild", "--from-store", "--json"]);
        cmd.env("CALLVAULT_LEDGER", &fresh);
        cmd
    })
    .await;

    assert_exit(&rebuilt, 1);
    let found = report(&rebuilt);
    assert_eq!(found["calls_from_manifests"], 5, "{found}");
    assert_eq!(found["manifests"], 2, "{found}");
    assert_eq!(
        found["problem_counts"],
        serde_json::json!({
            "chain_break": 1,
            "entry_without_sidecar": 1,
            "object_without_sidecar": 1,
            "sidecar_without_object": 1,
        }),
        "{found}"
    );
    let problems = found["problems"].as_array().unwrap();
    let chain_break = problems
        .iter()
        .find(|p| p["kind"] == "chain_break")
        .unwrap();
    assert_eq!(chain_break["key"], world.store.manifest_key(2).as_str());
    assert!(
        chain_break["reason"].as_str().unwrap().contains("SHA-256"),
        "{chain_break}"
    );
    // The manifest still lists both: r-1 is recovered from its entry alone, r-2 from its
    // sidecar; `verify` then finds r-2's object missing, as it would have on the lost ledger.
    let mut cmd = callvault(&world, &["verify", "--json"]);
    cmd.env("CALLVAULT_LEDGER", &fresh);
    let verify = output(cmd).await;
    assert_exit(&verify, 1);
    assert!(String::from_utf8_lossy(&verify.stdout).contains(&without_object));
}

#[tokio::test]
async fn erasures_come_back_as_tombstones_and_erased_calls() {
    // Arrange: a manifest, an erasure, a second manifest listing it.
    let world = World::new().await;
    for i in 0..3 {
        world
            .import_call(&format!("e-{i}"), &format!("e-{i}.wav"), 2000 + i)
            .await;
    }
    assert_eq!(world.run(&world.options()).await.report.archived, 3);
    let erase = output(callvault(
        &world,
        &["erase", "--uuid", "e-1", "--reason", "GDPR-42", "--yes"],
    ))
    .await;
    assert_exit(&erase, 0);
    world.import_call("e-3", "e-3.wav", 2003).await;
    assert_eq!(world.run(&world.options()).await.report.archived, 1);
    let status = counts(&output(callvault(&world, &["status", "--json"])).await);
    assert_eq!(status["counts"]["erased"], 1, "{status}");
    let verify = output(callvault(&world, &["verify"])).await;
    let chain = output(callvault(&world, &["verify", "--manifests"])).await;
    assert_exit(&verify, 0);
    assert_exit(&chain, 0);
    let sqlite = format!("sqlite://{}", world.dir.path().join("rebuilt.db").display());
    let postgres = crate::pg::database().await;
    for fresh in [sqlite, postgres] {
        let on = |args: &[&str]| {
            let mut cmd = callvault(&world, args);
            cmd.env("CALLVAULT_LEDGER", &fresh);
            cmd
        };

        // Act
        let rebuilt = output(on(&["ledger", "rebuild", "--from-store", "--json"])).await;

        // Assert
        assert_exit(&rebuilt, 0);
        let found = report(&rebuilt);
        assert_eq!(found["erased"], 1, "{found}");
        assert_eq!(found["entries_erased"], 1, "{found}");
        assert_eq!(found["calls_from_manifests"], 3, "{found}");
        assert_eq!(found["problems"], serde_json::json!([]), "{found}");
        assert_eq!(counts(&output(on(&["status", "--json"])).await), status);
        for (args, lost) in [
            (&["verify"][..], &verify),
            (&["verify", "--manifests"][..], &chain),
        ] {
            let again = output(on(args)).await;
            assert_exit(&again, 0);
            assert_eq!(
                String::from_utf8_lossy(&again.stdout),
                String::from_utf8_lossy(&lost.stdout),
                "{fresh} {args:?}"
            );
        }
        let ledger = Ledger::open(&fresh).await.unwrap();
        let tombstone = ledger
            .tombstone(&cu("e-1"))
            .await
            .unwrap()
            .expect("a tombstone");
        assert_eq!(tombstone.reason, "GDPR-42");
        assert_eq!(tombstone.manifest_seq, Some(2));
        let row = ledger.get(&cu("e-1")).await.unwrap().unwrap();
        assert_eq!(row.state, RecordState::Erased);
        assert_eq!(row.record.raw_json, "{}", "no personal data");
        ledger.close().await;
    }
}
