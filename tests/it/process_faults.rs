//! The process dies or has company: SIGKILL at random moments, two runs started together as
//! two processes, the ledger locked by another process. All with the real binary.

use std::process::Stdio;
use std::time::{Duration, Instant};

use callvault::domain::RecordState;
use callvault::simulator::DownloadFault;
use rand::{Rng, SeedableRng};
use sqlx::Connection;

use crate::cli::{assert_exit, callvault, import_samples, output};
use crate::world::World;

/// Five runs killed with SIGKILL at random moments (50–800 ms after their start: during
/// start-up, claims, transfers or settlements), then one run to the end: nothing was lost,
/// nothing was archived twice or without its object, and no stray object is left. The seed
/// is printed so that a failure can be replayed.
#[tokio::test]
async fn runs_killed_at_random_moments_lose_nothing_and_archive_each_record_once() {
    let world = World::new().await;
    import_samples(&world, 40).await;
    let seed: u64 = rand::random();
    eprintln!("sigkill seed: {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Slow the transfers down (each download's first bytes come 100–500 ms late, twice), so
    // that a run is still at work when it is killed.
    for uuid in world
        .ledger
        .uuids_in_state(RecordState::Pending)
        .await
        .unwrap()
    {
        let file = world
            .ledger
            .get(&uuid)
            .await
            .unwrap()
            .unwrap()
            .record
            .record_file;
        for _ in 0..2 {
            let pause = Duration::from_millis(rng.random_range(100..500));
            world
                .sim
                .push_download_fault(&file, DownloadFault::Stall(pause));
        }
    }

    for _ in 0..5 {
        let mut child = callvault(&world, &["run", "--lease", "1s", "--concurrency", "4"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(rng.random_range(50..=800));
        tokio::time::sleep(delay).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    // A last run, in the test, its clock past the killed runs' leases (1 s).
    world.clock.advance(Duration::from_secs(2));
    let last = world.run(&world.options()).await;

    assert_eq!(last.exit_code(), 0, "{:?}", last.report);
    world.assert_archived_exactly_once(32).await;
}

/// Two `callvault run` processes started together on the same ledger share the work and
/// never transfer a record twice: one download per record at the simulator.
#[tokio::test]
async fn two_processes_started_together_download_each_record_once() {
    let world = World::new().await;
    import_samples(&world, 25).await;
    let spawn = || {
        callvault(&world, &["run", "--json", "--concurrency", "4"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());

    let (a, b) = tokio::task::spawn_blocking(move || {
        (a.wait_with_output().unwrap(), b.wait_with_output().unwrap())
    })
    .await
    .unwrap();

    assert_exit(&a, 0);
    assert_exit(&b, 0);
    let archived = |out: &std::process::Output| {
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["lease_lost"], 0, "{summary}");
        summary["archived"].as_u64().unwrap()
    };
    assert_eq!(archived(&a) + archived(&b), 20);
    let stats = world.sim.stats();
    assert_eq!((stats.url_requests, stats.downloads), (20, 20), "{stats:?}");
    world.assert_archived_exactly_once(20).await;
}

/// Holds the ledger's write lock from another connection, as another process would.
async fn lock_ledger(world: &World) -> sqlx::SqliteConnection {
    let mut holder = sqlx::SqliteConnection::connect(&world.ledger_url)
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();
    holder
}

/// A ledger locked by another process for less than the busy timeout: the run waits for
/// the lock, then archives everything.
#[tokio::test]
async fn a_run_waits_for_a_ledger_locked_briefly_by_another_process() {
    let world = World::new().await;
    import_samples(&world, 5).await;
    let mut holder = lock_ledger(&world).await;
    let started = Instant::now();
    let mut child = callvault(&world, &["run", "--json", "--ledger-busy-timeout", "20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(child.try_wait().unwrap().is_none(), "the run is waiting");
    assert_eq!(world.count(RecordState::Archived).await, 0);
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();

    assert_exit(&out, 0);
    assert!(started.elapsed() >= Duration::from_millis(800));
    world.assert_archived_exactly_once(4).await;
}

/// A ledger locked by another process for longer than the busy timeout: the run fails with
/// a message that says so and exit code 1, and marks nothing (no record claimed, no
/// attempt, no download).
#[tokio::test]
async fn a_ledger_locked_past_the_busy_timeout_fails_the_run_and_marks_nothing() {
    let world = World::new().await;
    import_samples(&world, 5).await;
    let mut holder = lock_ledger(&world).await;

    let out = output(callvault(
        &world,
        &["run", "--ledger-busy-timeout", "300ms"],
    ))
    .await;

    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    assert_exit(&out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the ledger is locked by another process"),
        "{stderr}"
    );
    assert_eq!(world.count(RecordState::Pending).await, 4);
    assert!(world.attempts().await.is_empty());
    assert_eq!(world.sim.stats().url_requests, 0);
}

/// Polls `done` every 10 ms for up to 20 s.
async fn wait_for<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The run is killed (SIGKILL) after every recording and sidecar is stored but before the
/// grouped commit that would settle them (held back by another process's lock on the
/// ledger): nothing was archived; the next run archives each record once, with one object
/// each and no stray object.
#[tokio::test]
async fn a_crash_between_the_stored_objects_and_the_grouped_commit_archives_each_record_once() {
    let world = World::new().await;
    import_samples(&world, 5).await;
    // Link requests answer late, so the test can take the ledger's lock between the claim
    // and the settlements.
    world
        .sim
        .set_faults(|f| f.api_delay = Some(Duration::from_millis(300)));
    let mut child = callvault(
        &world,
        &[
            "run",
            "--lease",
            "1s",
            "--concurrency",
            "8",
            "--ledger-busy-timeout",
            "60s",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    wait_for("the claim", || async {
        world.count(RecordState::InProgress).await == 4
    })
    .await;
    let mut holder = lock_ledger(&world).await;
    wait_for("every recording and sidecar stored", || async {
        let keys = world.object_keys().await;
        keys.iter().filter(|k| k.ends_with(".json")).count() == 4
    })
    .await;

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

    assert_eq!(
        world.count(RecordState::Archived).await,
        0,
        "no commit got through"
    );
    // The next run (in the test, its clock past the killed run's 1 s leases) takes the
    // records over.
    world.clock.advance(Duration::from_secs(2));
    world.sim.set_faults(|f| f.api_delay = None);
    let last = world.run(&world.options()).await;

    assert_eq!(last.exit_code(), 0, "{:?}", last.report);
    world.assert_archived_exactly_once(4).await;
    let interrupted = world
        .attempts()
        .await
        .iter()
        .filter(|a| a.outcome == "interrupted")
        .count();
    assert_eq!(
        interrupted, 4,
        "the killed run's attempts are closed honestly"
    );
}
