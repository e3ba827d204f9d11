//! Moving a ledger with history from SQLite to PostgreSQL through the binary: `ledger copy`
//! checks every table, and the copy then answers `status`, `verify` and `verify --manifests`
//! as the original does, and a further run continues its work and its manifest chain.

use serde_json::Value;

use crate::cli::{assert_exit, callvault, output, write_callbacks};
use crate::world::World;

fn status_without_times(out: &std::process::Output) -> Value {
    let mut status: Value = serde_json::from_slice(&out.stdout).expect("status --json");
    // Ages are measured from now, and now moves between the two reads.
    status["oldest_pending_age_seconds"] = Value::Null;
    status
}

#[tokio::test]
async fn a_sqlite_ledger_copied_to_postgres_behaves_the_same_and_goes_on() {
    let world = World::new().await;
    let file = write_callbacks(&world, 12);
    assert_exit(
        &output(callvault(&world, &["import", file.to_str().unwrap()])).await,
        0,
    );
    // Two passes of history: two manifests, attempts and runs.
    assert_exit(
        &output(callvault(&world, &["run", "--max-records", "4"])).await,
        1,
    );
    assert_exit(&output(callvault(&world, &["run"])).await, 0);
    assert_exit(&output(callvault(&world, &["verify"])).await, 0);
    // A legal hold and an erasure through the binary: the held call is refused, naming the
    // hold; the other is erased, and the next pass's manifest lists the erasure.
    let found = output(callvault(
        &world,
        &["find", "--state", "archived", "--limit", "2", "--json"],
    ))
    .await;
    assert_exit(&found, 0);
    let uuids: Vec<String> = String::from_utf8_lossy(&found.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["uuid"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let (held, gone) = (&uuids[0], &uuids[1]);
    let hold = output(callvault(
        &world,
        &[
            "hold", "--uuid", held, "--reason", "CASE-9", "--actor", "legal",
        ],
    ))
    .await;
    assert_exit(&hold, 0);
    let hold_text = String::from_utf8_lossy(&hold.stdout).into_owned();
    assert!(hold_text.contains("no Object Lock"), "{hold_text}");
    let refused = output(callvault(
        &world,
        &["erase", "--uuid", held, "--reason", "GDPR-3", "--yes"],
    ))
    .await;
    assert_exit(&refused, 1);
    let refused_text = String::from_utf8_lossy(&refused.stdout).into_owned();
    assert!(
        refused_text.contains("on hold: hold-") && refused_text.contains("CASE-9"),
        "{refused_text}"
    );
    let erased = output(callvault(
        &world,
        &["erase", "--uuid", gone, "--reason", "GDPR-4", "--yes"],
    ))
    .await;
    assert_exit(&erased, 0);
    let holds = output(callvault(&world, &["holds", "--json"])).await;
    assert_exit(&holds, 0);
    let holds: Value = serde_json::from_slice(&holds.stdout).unwrap();
    assert_eq!(holds[0]["reason"], "CASE-9", "{holds}");
    assert_eq!(holds[0]["placed_by"], "legal", "{holds}");
    assert_exit(&output(callvault(&world, &["run"])).await, 0);
    let chain = output(callvault(&world, &["verify", "--manifests"])).await;
    assert_exit(&chain, 0);
    assert!(
        String::from_utf8_lossy(&chain.stdout).contains("1 erasure(s) listed"),
        "{}",
        String::from_utf8_lossy(&chain.stdout)
    );
    let target = crate::pg::database().await;

    let copy = output(callvault(
        &world,
        &[
            "ledger",
            "copy",
            "--from",
            &world.ledger_url,
            "--to",
            &target,
            "--json",
        ],
    ))
    .await;

    assert_exit(&copy, 0);
    let report: Value = serde_json::from_slice(&copy.stdout).unwrap();
    let tables = report["tables"].as_array().unwrap();
    assert_eq!(
        tables.len(),
        callvault::ledger::Table::ALL.len(),
        "{report}"
    );
    for t in tables {
        assert_eq!(t["source_rows"], t["target_rows"], "{t}");
        assert_eq!(t["source_sha256"], t["target_sha256"], "{t}");
    }
    let calls = tables.iter().find(|t| t["table"] == "calls").unwrap();
    assert_eq!(calls["target_rows"], 12);
    for table in ["holds", "held_calls", "tombstones"] {
        let t = tables.iter().find(|t| t["table"] == table).unwrap();
        assert_eq!(t["target_rows"], 1, "{t}");
    }
    // A second copy into the same (now full) target is refused as a configuration error.
    let again = output(callvault(
        &world,
        &[
            "ledger",
            "copy",
            "--from",
            &world.ledger_url,
            "--to",
            &target,
        ],
    ))
    .await;
    assert_exit(&again, 2);
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    let on = |url: &str, args: &[&str]| {
        let mut cmd = callvault(&world, args);
        cmd.env("CALLVAULT_LEDGER", url);
        cmd
    };
    let before = output(on(&world.ledger_url, &["status", "--json"])).await;
    let after = output(on(&target, &["status", "--json"])).await;
    assert_exit(&after, 0);
    assert_eq!(status_without_times(&before), status_without_times(&after));
    for args in [&["verify"][..], &["verify", "--manifests"][..]] {
        let original = output(on(&world.ledger_url, args)).await;
        let copied = output(on(&target, args)).await;
        assert_exit(&copied, 0);
        assert_eq!(original.stdout, copied.stdout, "{args:?}");
    }

    // The copy goes on: new calls are archived and the chain grows from the copied head.
    let more = world.dir.path().join("more.jsonl");
    let lines: Vec<String> = world
        .sim
        .sample_callbacks(5, chrono::Utc::now())
        .iter()
        .map(|c| c.to_string())
        .collect();
    std::fs::write(&more, lines.join("\n") + "\n").unwrap();
    assert_exit(
        &output(on(&target, &["import", more.to_str().unwrap()])).await,
        0,
    );
    let run = output(on(&target, &["run", "--json"])).await;
    assert_exit(&run, 0);
    let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(
        summary["manifests"].as_array().map(Vec::len),
        Some(1),
        "{summary}"
    );
    let chain = output(on(&target, &["verify", "--manifests", "--json"])).await;
    assert_exit(&chain, 0);
    assert_exit(&output(on(&target, &["verify"])).await, 0);
}
