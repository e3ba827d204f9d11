//! Several `callvault run` processes on one PostgreSQL ledger, with the real binary: workers
//! started together share the work; a worker killed mid-transfer is taken over once its
//! lease runs out; the database restarted under a run loses nothing and archives nothing
//! falsely. Every process is bounded in time and killed if it overruns. The run that
//! finishes what the processes left is a pass in the test, its clock moved past their
//! leases.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use callvault::domain::{CallRecord, RecordState};
use callvault::simulator::DownloadFault;

use crate::cli::{assert_exit, callvault, output, wait_for};
use crate::ledger::assert_counts_match;
use crate::serve::drain;
use crate::world::{World, call};

/// How long one `callvault` process may take before the test kills it and fails.
const PROCESS_LIMIT: Duration = Duration::from_secs(180);

/// Imports `n` answered calls with small recordings (2–8 KiB) the simulator serves, one
/// minute apart, so that claim order is their order; returns them oldest first.
pub(crate) async fn small_recordings(world: &World, prefix: &str, n: usize) -> Vec<CallRecord> {
    let records: Vec<CallRecord> = (0..n)
        .map(|i| {
            let uuid = format!("{prefix}-{i:03}");
            let file = format!("{uuid}.wav");
            world
                .sim
                .add_recording(&file, 2048 + (i as u64 * 617) % 6144);
            let start = format!(
                "2026-11-{:02} {:02}:{:02}:00",
                1 + i / 1440,
                i / 60 % 24,
                i % 60
            );
            call(&uuid, &file, &start)
        })
        .collect();
    world
        .ledger
        .import(&records, chrono::Utc::now())
        .await
        .expect("import");
    records
}

/// Spawns `callvault` with its output piped.
pub(crate) fn spawn(mut cmd: std::process::Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs")
}

/// Waits for a spawned `callvault` (draining its output), killing it and failing the test
/// when it overruns [`PROCESS_LIMIT`].
pub(crate) async fn finish(mut child: Child) -> Output {
    let drained = drain(&mut child);
    let pid = child.id();
    let waited = tokio::time::timeout(
        PROCESS_LIMIT,
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await;
    match waited {
        Ok(status) => {
            let status = status.unwrap().expect("waiting for callvault");
            let (stdout, stderr) = drained.collect();
            Output {
                status,
                stdout,
                stderr,
            }
        }
        Err(_) => {
            // SAFETY: our own child, not reaped yet (its waiter is still blocked).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("callvault (pid {pid}) did not finish within {PROCESS_LIMIT:?}");
        }
    }
}

/// A run after the processes are gone: a pass in the test, its clock moved `past` the
/// leases they may have left (instead of waiting for them to run out); it must leave
/// nothing due.
async fn a_later_run(world: &World, past: Duration) {
    world.clock.advance(past);
    let later = world.run(&world.options()).await;
    assert_eq!(later.exit_code(), 0, "{:?}", later.report);
}

fn summary(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--json prints the summary ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// One manifest chain (seq 1, 2, … all written) lists every archived record exactly once,
/// and `callvault verify --manifests` finds the chain whole and equal to the ledger's.
async fn assert_one_chain_lists_every_record_once(world: &World, records: &[CallRecord]) {
    let manifests = world.ledger.manifests().await.unwrap();
    let seqs: Vec<i64> = manifests.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=manifests.len() as i64).collect::<Vec<_>>());
    assert!(manifests.iter().all(|m| m.written), "{manifests:?}");
    let mut listed: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for manifest in &manifests {
        let mut after = None;
        loop {
            let page = world
                .ledger
                .manifest_entries(manifest.seq, after.as_ref(), 500)
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.uuid.clone());
            for entry in &page {
                listed
                    .entry(entry.uuid.to_string())
                    .or_default()
                    .push(manifest.seq);
            }
        }
    }
    let twice: Vec<_> = listed.iter().filter(|(_, seqs)| seqs.len() > 1).collect();
    assert!(twice.is_empty(), "listed more than once: {twice:?}");
    let all: BTreeSet<String> = records.iter().map(|r| r.uuid.to_string()).collect();
    assert_eq!(listed.keys().cloned().collect::<BTreeSet<_>>(), all);
    assert_eq!(world.ledger.unlisted_archived().await.unwrap(), 0);

    let verify = output(callvault(world, &["verify", "--manifests", "--json"])).await;
    assert_exit(&verify, 0);
    let chain = &summary(&verify)["manifests"];
    assert_eq!(chain["problems"], serde_json::json!([]), "{chain}");
    assert_eq!(chain["compared_with_ledger"], true, "{chain}");
    assert_eq!(chain["entries_checked"], records.len(), "{chain}");
    let objects = output(callvault(world, &["verify", "--json"])).await;
    assert_exit(&objects, 0);
}

/// Four workers with 16 transfers each, started together on ~200 recordings: every record
/// is archived by one of them and downloaded once, and one manifest chain lists each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_started_together_archive_and_download_each_record_once() {
    let world = World::postgres().await;
    let records = small_recordings(&world, "w", 200).await;

    let workers: Vec<Child> = (0..4)
        .map(|_| spawn(callvault(&world, &["run", "--json", "--concurrency", "16"])))
        .collect();
    let outputs = futures::future::join_all(workers.into_iter().map(finish)).await;

    let mut shares = Vec::new();
    for out in &outputs {
        assert_exit(out, 0);
        let summary = summary(out);
        assert_eq!(
            (summary["lease_lost"].as_u64(), summary["left_due"].as_u64()),
            (Some(0), Some(0)),
            "{summary}"
        );
        shares.push(summary["archived"].as_u64().unwrap());
    }
    assert_eq!(
        shares.iter().sum::<u64>(),
        200,
        "each record archived by one worker"
    );
    assert!(
        shares.iter().filter(|n| **n > 0).count() >= 2,
        "the workers shared the work: {shares:?}"
    );
    let stats = world.sim.stats();
    assert_eq!(
        (stats.url_requests, stats.downloads),
        (200, 200),
        "{stats:?}"
    );
    world.assert_archived_exactly_once(200).await;
    assert_counts_match(&world.ledger, "four workers").await;
    let status = world
        .ledger
        .status(chrono::Utc::now(), chrono::Duration::days(90))
        .await
        .unwrap();
    assert_eq!((status.counts["archived"], status.total), (200, 200));
    // A worker that found the chain head busy leaves its last records to the next pass.
    let next = output(callvault(&world, &["run", "--json"])).await;
    assert_exit(&next, 0);
    assert_eq!(summary(&next)["archived"], 0);
    assert_eq!(world.sim.stats().downloads, 200, "nothing downloaded again");
    assert_one_chain_lists_every_record_once(&world, &records).await;
}

/// One of three workers is killed with SIGKILL while it holds four stalled transfers: the
/// two others archive the rest; once its lease has run out a later run takes its records
/// over. Nothing is archived that is not stored, nothing is stored or archived twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_transfer_is_taken_over_after_its_lease() {
    let world = World::postgres().await;
    let records = small_recordings(&world, "k", 30).await;
    // The victim starts alone and claims the 4 oldest, whose downloads stall.
    let held: Vec<String> = records[..4].iter().map(|r| r.uuid.to_string()).collect();
    for record in &records[..4] {
        world.sim.push_download_fault(
            &record.record_file,
            DownloadFault::Stall(Duration::from_secs(60)),
        );
    }
    let lease = ["--lease", "2s", "--concurrency", "4", "--json"];
    let mut victim = callvault(&world, &[&["run"][..], &lease[..]].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ledger = world.ledger.clone();
    let holds_four = wait_for(Duration::from_secs(60), async || {
        ledger
            .uuids_in_state(RecordState::InProgress)
            .await
            .unwrap()
            .len()
            == 4
            && world.sim.stats().downloads == 4
    })
    .await;
    assert!(holds_four, "the victim is mid-transfer on 4 records");
    let mut victim_run = None;
    for uuid in &held {
        let row = world
            .ledger
            .get(&crate::world::cu(uuid))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.state, RecordState::InProgress, "{uuid}");
        victim_run.get_or_insert(row.lease_owner.clone().unwrap());
        assert_eq!(row.lease_owner, victim_run, "{uuid}");
    }
    let victim_run = victim_run.unwrap();

    let others: Vec<Child> = (0..2)
        .map(|_| spawn(callvault(&world, &[&["run"][..], &lease[..]].concat())))
        .collect();
    let started = wait_for(Duration::from_secs(60), async || {
        world.count(RecordState::Archived).await > 0
    })
    .await;
    assert!(started, "the other workers are archiving");
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    for out in futures::future::join_all(others.into_iter().map(finish)).await {
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(summary(&out)["lease_lost"], 0);
    }

    // Once the victim's lease has run out (2 s after its last renewal), a later run.
    a_later_run(&world, Duration::from_secs(3)).await;

    world.assert_archived_exactly_once(30).await;
    let stats = world.sim.stats();
    assert_eq!(
        stats.downloads,
        30 + 4,
        "the 4 stalled downloads, then one each: {stats:?}"
    );
    let attempts = world.attempts().await;
    for uuid in &held {
        let mine: Vec<(&str, &str)> = attempts
            .iter()
            .filter(|a| &a.uuid == uuid)
            .map(|a| (a.run_id.as_str(), a.outcome.as_str()))
            .collect();
        assert_eq!(mine.len(), 2, "{uuid}: {mine:?}");
        assert_eq!(mine[0], (victim_run.as_str(), "interrupted"), "{uuid}");
        assert_ne!(mine[1].0, victim_run.as_str(), "{uuid}");
        assert_eq!(mine[1].1, "archived", "{uuid}");
    }
    assert_counts_match(&world.ledger, "a killed worker taken over").await;
    assert_one_chain_lists_every_record_once(&world, &records).await;
}

/// The run's PostgreSQL restarts (fast shutdown: every session ended; down for 1.5 s,
/// less than the run's lease) while transfers are under way: the run recovers or stops
/// with exit 1, no record changes hands, a later run finishes, and the ledger and the
/// store agree: every record archived once, with its object, nothing stored that is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_during_a_run_loses_nothing_and_archives_nothing_falsely() {
    let server = crate::pg::dedicated().await;
    let world = World::on_ledger(
        server.url().to_owned(),
        tempfile::tempdir().expect("temp dir"),
    )
    .await;
    let records = small_recordings(&world, "r", 40).await;
    for record in &records {
        world.sim.push_download_fault(
            &record.record_file,
            DownloadFault::Stall(Duration::from_millis(400)),
        );
    }
    let run = spawn(callvault(
        &world,
        &["run", "--json", "--concurrency", "4", "--lease", "6s"],
    ));
    let ledger = world.ledger.clone();
    let under_way = wait_for(Duration::from_secs(60), async || {
        ledger
            .uuids_in_state(RecordState::Archived)
            .await
            .is_ok_and(|a| a.len() >= 4)
    })
    .await;
    assert!(under_way, "the run is archiving");

    // Down for longer than a transfer takes, so that settlements and claims meet it.
    server.restart(Duration::from_millis(1500)).await;
    let first = finish(run).await;

    let stderr = String::from_utf8_lossy(&first.stderr);
    let code = first.status.code();
    assert!(
        matches!(code, Some(0 | 1)),
        "a ledger that went away is not a configuration error: {stderr}"
    );
    assert_eq!(
        summary(&first)["lease_lost"],
        0,
        "the outage was shorter than the lease: {stderr}"
    );
    if code == Some(0) {
        assert_eq!(
            world.sim.stats().downloads,
            40,
            "recovered: one download each"
        );
    }
    // Records a stopped run still held come back when its lease (6 s) runs out.
    a_later_run(&world, Duration::from_secs(7)).await;

    world.assert_archived_exactly_once(40).await;
    assert_counts_match(&world.ledger, "a restart").await;
    assert_one_chain_lists_every_record_once(&world, &records).await;
}
