//! Claims and leases: a dead run's records come back, two runs never share a record, and a
//! stop gives in-flight records back.

use std::time::Duration;

use callvault::domain::RecordState;
use callvault::ledger::{Ledger, Slice};
use callvault::simulator::DownloadFault;

use crate::world::World;

#[tokio::test]
async fn a_dead_runs_records_are_reclaimed_once_its_lease_runs_out() {
    let world = World::new().await;
    world.import_samples(5).await;
    // A run that claimed two records and died (no renewals, no settlement).
    let now = chrono::Utc::now();
    let lease_until = now + chrono::Duration::milliseconds(1500);
    for _ in 0..2 {
        crate::world::claim_one(
            &world.ledger,
            "run-that-died",
            &Slice::default(),
            now,
            now,
            lease_until,
        )
        .await
        .unwrap()
        .unwrap();
    }

    let during_lease = world.run(&world.options()).await;
    assert_eq!(
        during_lease.report.archived, 2,
        "only the unclaimed records: {:?}",
        during_lease.report
    );
    assert_eq!(world.count(RecordState::InProgress).await, 2);

    tokio::time::sleep(Duration::from_millis(1600)).await;
    let after_lease = world.run(&world.options()).await;
    assert_eq!(after_lease.report.archived, 2, "{:?}", after_lease.report);
    assert!(world.count(RecordState::InProgress).await == 0);
}

/// Two runs at once in one process, each with its own connection pool on the ledger file:
/// every record archived once, one download per record, no lease lost.
#[tokio::test]
async fn two_runs_at_once_never_work_on_the_same_record() {
    let world = World::new().await;
    world.import_samples(40).await;
    // A second process's view of the same ledger file: its own connection pool.
    let other_ledger = Ledger::open(&world.ledger_url).await.unwrap();
    let a = world.deps();
    let b = world.deps_with(other_ledger, world.store.clone());
    let opts = world.options();

    let (ra, rb) = tokio::join!(
        callvault::archive::run_pass(&a, &opts),
        callvault::archive::run_pass(&b, &opts)
    );

    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(
        ra.error.is_none() && rb.error.is_none(),
        "{:?} {:?}",
        ra.error,
        rb.error
    );
    assert_eq!(
        ra.report.archived + rb.report.archived,
        32,
        "{:?} {:?}",
        ra.report,
        rb.report
    );
    assert_eq!(ra.report.lease_lost + rb.report.lease_lost, 0);
    // One download per record: no record was transferred twice.
    assert_eq!(world.sim.stats().downloads, 32);
}

/// A stop (as on SIGTERM) lets a short transfer finish within the grace period and aborts
/// and releases a stalled one: it is pending and due at once, and nothing of it is stored.
#[tokio::test]
async fn a_stop_lets_short_transfers_finish_and_gives_stalled_ones_back() {
    let world = World::new().await;
    world.import_call("quick", "quick.wav", 10_000).await;
    world.import_call("stuck", "stuck.wav", 10_000).await;
    world
        .sim
        .push_download_fault("stuck.wav", DownloadFault::Stall(Duration::from_secs(30)));
    let mut opts = world.options();
    opts.concurrency = 2;
    let shutdown = opts.shutdown.clone();
    let grace = Duration::from_millis(700);
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        shutdown.begin(grace);
    });

    let started = std::time::Instant::now();
    let result = world.run(&opts).await;
    stopper.await.unwrap();

    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the stall was cut off by the grace period"
    );
    assert_eq!(
        (result.report.archived, result.report.released),
        (1, 1),
        "{:?}",
        result.report
    );
    assert_eq!(result.exit_code(), 1);
    let stuck = world
        .ledger
        .get(&crate::world::cu("stuck"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stuck.state, RecordState::Pending);
    assert!(
        stuck.next_attempt_at.unwrap() <= chrono::Utc::now(),
        "due again at once"
    );
    assert!(
        world
            .object_sha256("20000013/2026/11/01/stuck.wav")
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_long_transfer_keeps_its_lease_and_no_other_run_takes_it() {
    let world = World::new().await;
    world.import_call("slow", "slow.wav", 20_000).await;
    world.sim.push_download_fault(
        "slow.wav",
        DownloadFault::Stall(Duration::from_millis(2500)),
    );
    let mut opts = world.options();
    opts.lease = Duration::from_secs(1);
    let other = world.deps_with(
        Ledger::open(&world.ledger_url).await.unwrap(),
        world.store.clone(),
    );
    let second_opts = opts.clone();
    let second = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1700)).await;
        callvault::archive::run_pass(&other, &second_opts)
            .await
            .unwrap()
    });

    let first = world.run(&opts).await;
    let second = second.await.unwrap();

    assert_eq!(first.report.archived, 1, "{:?}", first.report);
    assert_eq!(
        second.report.attempted(),
        0,
        "the renewed lease kept the record: {:?}",
        second.report
    );
    assert_eq!(world.sim.stats().downloads, 1);
}

#[tokio::test]
async fn the_deadline_stops_claiming_but_lets_claimed_work_finish() {
    let world = World::new().await;
    for i in 0..6 {
        let file = format!("d{i}.wav");
        world.import_call(&format!("d{i}"), &file, 10_000).await;
        world
            .sim
            .push_download_fault(&file, DownloadFault::Stall(Duration::from_millis(500)));
    }
    let mut opts = world.options();
    opts.concurrency = 2;
    opts.deadline = Some(Duration::from_millis(200));

    let result = world.run(&opts).await;

    assert_eq!(result.report.archived, 2, "{:?}", result.report);
    assert!(result.report.stopped.is_some());
    assert_eq!(world.count(RecordState::Pending).await, 4);
    assert_eq!(result.report.left_due, 4, "{:?}", result.report);
    assert_eq!(
        result.exit_code(),
        1,
        "records are still due: a work-queue worker must not report the queue empty"
    );
}
