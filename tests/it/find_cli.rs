//! `find`, `get`, `link` and `access-log` from the binary, on an archive the real pass wrote
//! to the in-process S3 server: searches by number suffix, agent and date range (table and
//! JSON), a recording copied out with its SHA-256 proven and its sidecar, a tampered object
//! refused with no file left behind, a presigned link fetched with a plain HTTP GET, a
//! local-directory store refusing to sign, and the access log holding each step.

use std::process::Output;

use callvault::domain::RecordState;
use callvault::ledger::CallParties;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cli::{assert_exit, callvault, output};
use crate::world::{BUCKET, World};

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn uuids(found: &[Value]) -> Vec<String> {
    found
        .iter()
        .map(|c| c["uuid"].as_str().unwrap().to_owned())
        .collect()
}

async fn run(world: &World, args: &[&str]) -> Output {
    output(callvault(world, args)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_get_link_and_the_access_log_from_the_command_line() {
    let world = World::new().await;
    let records = world.import_samples(15).await;
    assert_eq!(world.run(&world.options()).await.exit_code(), 0);
    let archived = world
        .ledger
        .uuids_in_state(RecordState::Archived)
        .await
        .unwrap();
    let target = world.ledger.get(&archived[0]).await.unwrap().unwrap();
    let parties = CallParties::of(&target.record.raw_json);
    let callee = parties.callee.clone().unwrap();
    let agent = parties.crmid.clone().unwrap();

    // By the callee's last five digits, as JSON lines.
    let suffix = &callee[callee.len() - 5..];
    let by_number = run(
        &world,
        &["find", "--number", suffix, "--json", "--actor", "ann"],
    )
    .await;
    assert_exit(&by_number, 0);
    let found = lines(&by_number);
    assert!(
        uuids(&found).contains(&target.record.uuid.to_string()),
        "{found:?}"
    );
    for call in &found {
        let numbers = [&call["callee"], &call["display_number"], &call["caller"]];
        assert!(
            numbers
                .iter()
                .any(|n| n.as_str().is_some_and(|n| n.ends_with(suffix))),
            "{call}"
        );
    }

    // By agent: every call found is that agent's, sorted by call start.
    let by_agent = run(&world, &["find", "--agent", &agent, "--json"]).await;
    assert_exit(&by_agent, 0);
    let found = lines(&by_agent);
    let expected = records
        .iter()
        .filter(|r| CallParties::of(&r.raw_json).crmid.as_deref() == Some(agent.as_str()))
        .count();
    assert_eq!(found.len(), expected);
    let starts: Vec<DateTime<Utc>> = found
        .iter()
        .map(|c| c["call_start"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(starts.is_sorted(), "{starts:?}");

    // By date range (provider time, +08:00): exactly the calls that started within it.
    let mut all_starts: Vec<DateTime<Utc>> = records.iter().filter_map(|r| r.call_start).collect();
    all_starts.sort();
    let (from, to) = (all_starts[3], all_starts[9]);
    let tz = callvault::timefmt::default_provider_tz();
    let local = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S").to_string();
    let by_dates = run(
        &world,
        &[
            "find",
            "--since",
            &local(from),
            "--until",
            &local(to),
            "--json",
        ],
    )
    .await;
    assert_exit(&by_dates, 0);
    let in_range = all_starts
        .iter()
        .filter(|t| **t >= from && **t < to)
        .count();
    assert_eq!(lines(&by_dates).len(), in_range);

    // The table, paged.
    let table = run(&world, &["find", "--limit", "2"]).await;
    assert_exit(&table, 0);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("ACCOUNT  UUID"), "{text}");
    assert!(text.contains("2 call(s)"), "{text}");
    assert!(String::from_utf8_lossy(&table.stderr).contains("--after "));
    assert_exit(&run(&world, &["find", "--number", "abc"]).await, 2);

    // get: the file and its sidecar, the checksum the ledger's.
    let out_dir = world.dir.path().join("out");
    let get = run(
        &world,
        &[
            "get",
            target.record.uuid.as_str(),
            "-o",
            out_dir.to_str().unwrap(),
            "--actor",
            "ann",
            "--reason",
            "complaint 7",
        ],
    )
    .await;
    assert_exit(&get, 0);
    let key = target.object_key.clone().unwrap();
    let name = key.rsplit('/').next().unwrap();
    let bytes = std::fs::read(out_dir.join(name)).unwrap();
    assert_eq!(
        Some(hex::encode(Sha256::digest(&bytes))),
        target.sha256.clone()
    );
    let sidecar: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    assert_eq!(sidecar["uuid"], target.record.uuid.as_str());
    assert_eq!(sidecar["sha256"].as_str(), target.sha256.as_deref());

    // link: a presigned URL a plain HTTP client fetches, the same bytes.
    let link = run(
        &world,
        &[
            "link",
            target.record.uuid.as_str(),
            "--expires",
            "15m",
            "--json",
            "--actor",
            "ann",
            "--reason",
            "for the customer",
        ],
    )
    .await;
    assert_exit(&link, 0);
    let link: Value = serde_json::from_slice(&link.stdout).unwrap();
    let url = link["url"].as_str().unwrap();
    assert!(!url.contains(crate::world::S3_SECRET_KEY));
    let fetched = reqwest::get(url).await.unwrap();
    assert!(fetched.status().is_success(), "{}", fetched.status());
    assert_eq!(fetched.bytes().await.unwrap(), bytes);
    let local_store = format!("file://{}", world.dir.path().join("local").display());
    let refused = run(
        &world,
        &["link", target.record.uuid.as_str(), "--store", &local_store],
    )
    .await;
    assert_exit(&refused, 2);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot sign links"));

    // A tampered object: non-zero exit, no file (not even a partial one) left behind.
    let victim = world.ledger.get(&archived[1]).await.unwrap().unwrap();
    let victim_key = victim.object_key.clone().unwrap();
    let on_disk = world
        .s3
        .root
        .path()
        .join(BUCKET)
        .join("calls")
        .join(&victim_key);
    let mut tampered = std::fs::read(&on_disk).unwrap();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    std::fs::write(&on_disk, &tampered).unwrap();
    let bad_dir = world.dir.path().join("bad");
    let bad = run(
        &world,
        &[
            "get",
            victim.record.uuid.as_str(),
            "-o",
            bad_dir.to_str().unwrap(),
            "--actor",
            "bob",
        ],
    )
    .await;
    assert_exit(&bad, 1);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does not match the ledger"));
    let left: Vec<_> = std::fs::read_dir(&bad_dir).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");

    // The access log: each step, with its actor and reason; by uuid.
    let log = run(&world, &["access-log", "--json", "--actor", "ann"]).await;
    assert_exit(&log, 0);
    let entries = lines(&log);
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["find", "get", "link"]);
    assert_eq!(entries[1]["reason"], "complaint 7");
    assert_eq!(entries[2]["reason"], "for the customer");
    assert_eq!(entries[1]["calls"][0], target.record.uuid.as_str());
    assert!(entries[0]["source"].as_str().unwrap().starts_with("cli@"));
    let of_victim = run(
        &world,
        &[
            "access-log",
            "--json",
            "--uuid",
            victim.record.uuid.as_str(),
        ],
    )
    .await;
    assert_exit(&of_victim, 0);
    let of_victim = lines(&of_victim);
    assert!(
        of_victim
            .iter()
            .any(|e| e["action"] == "get" && e["actor"] == "bob"),
        "{of_victim:?}"
    );
    assert!(
        of_victim.iter().all(|e| e["calls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == victim.record.uuid.as_str())),
        "{of_victim:?}"
    );
    let human = run(&world, &["access-log", "--since", "1h"]).await;
    assert_exit(&human, 0);
    assert!(String::from_utf8_lossy(&human.stdout).contains("reason: complaint 7"));
}
