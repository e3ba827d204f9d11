//! Claims and leases: a dead run's records come back, two runs never share a record, and a
//! stop gives in-flight records back.

use std::time::Duration;

use callvault::domain::RecordState;
use callvault::ledger::{Ledger, Slice, Table};
use callvault::provider::Downloader;
use callvault::simulator::DownloadFault;

use crate::inspect::table_rows;
use crate::world::World;

/// A run that claimed records and died: its records wait while its lease lasts and are
/// taken over once it has run out (the clock moved past it, not slept through).
#[tokio::test]
async fn a_dead_runs_records_are_reclaimed_once_its_lease_runs_out() {
    let world = World::new().await;
    world.import_samples(5).await;
    // A run that claimed two records and died (no renewals, no settlement).
    let now = world.clock.now();
    let lease_until = now + chrono::Duration::minutes(5);
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

    world.clock.advance(Duration::from_secs(5 * 60));
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
/// The stop's two moments (stop claiming, then abort once the grace is over) are given by
/// the test, as `Shutdown::begin` gives them after its grace period.
#[tokio::test]
async fn a_stop_lets_short_transfers_finish_and_gives_stalled_ones_back() {
    let world = World::new().await;
    world.import_call("quick", "quick.wav", 10_000).await;
    world.import_call("stuck", "stuck.wav", 10_000).await;
    // Both in flight when the stop begins: the short one for a moment more.
    world.sim.push_download_fault(
        "quick.wav",
        DownloadFault::Stall(Duration::from_millis(300)),
    );
    world
        .sim
        .push_download_fault("stuck.wav", DownloadFault::Stall(Duration::from_secs(30)));
    let mut opts = world.options();
    opts.concurrency = 2;
    let shutdown = opts.shutdown.clone();
    let ledger = world.ledger.clone();
    let stopper = async move {
        let both_claimed = crate::cli::wait_for(Duration::from_secs(20), async || {
            ledger
                .uuids_in_state(RecordState::Pending)
                .await
                .unwrap()
                .is_empty()
        })
        .await;
        shutdown.stop_claiming.cancel();
        let quick_done = crate::cli::wait_for(Duration::from_secs(20), async || {
            ledger
                .uuids_in_state(RecordState::Archived)
                .await
                .unwrap()
                .len()
                == 1
        })
        .await;
        // The grace period is over.
        shutdown.abort.cancel();
        (both_claimed, quick_done)
    };

    let started = std::time::Instant::now();
    let (result, (both_claimed, quick_done)) = tokio::join!(world.run(&opts), stopper);

    assert!(both_claimed && quick_done, "{:?}", result.report);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the stall was cut off by the abort"
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
        stuck.next_attempt_at.unwrap() <= world.clock.now(),
        "due again at once"
    );
    assert!(
        world
            .object_sha256("20000013/2026/11/01/stuck.wav")
            .await
            .is_none()
    );
}

/// The lease's end of `uuid` as the ledger holds it, if it is leased.
async fn lease_until(world: &World, uuid: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    table_rows(&world.ledger, Table::Calls)
        .await
        .into_iter()
        .find(|row| row.get("uuid").and_then(|v| v.as_str()) == Some(uuid))?
        .get("lease_until")?
        .as_str()
        .and_then(callvault::timefmt::from_ledger)
}

/// A transfer that outlasts its lease (30 s) keeps it: the run renews it every third of the
/// lease on its clock, so when the clock has moved past the first lease's end, another run
/// leaves the record alone. Then the first run is stopped and gives it back.
#[tokio::test]
async fn a_long_transfer_keeps_its_lease_and_no_other_run_takes_it() {
    let world = World::new().await;
    world.import_call("slow", "slow.wav", 20_000).await;
    world
        .sim
        .push_download_fault("slow.wav", DownloadFault::Stall(Duration::from_secs(60)));
    let opts = world.options();
    let mut deps = world.deps();
    let mut settings = world.downloader_settings(&[], &[crate::world::LOOPBACK]);
    settings.stall_timeout = Duration::from_secs(120);
    deps.downloader = Downloader::new(settings).unwrap();
    let first_opts = opts.clone();
    let first = tokio::spawn(async move {
        callvault::archive::run_pass(&deps, &first_opts)
            .await
            .unwrap()
    });
    let mut taken = None;
    assert!(
        crate::cli::wait_for(Duration::from_secs(20), async || {
            taken = lease_until(&world, "slow").await;
            taken.is_some()
        })
        .await,
        "the first run claims the record"
    );
    let taken = taken.unwrap();

    world.clock.advance(Duration::from_secs(25));
    assert!(
        crate::cli::wait_for(Duration::from_secs(20), async || {
            lease_until(&world, "slow").await > Some(taken)
        })
        .await,
        "the lease is renewed once a third of it has passed"
    );
    world.clock.advance(Duration::from_secs(10));
    assert!(
        world.clock.now() > taken,
        "the first lease would have run out"
    );
    let other = world.deps_with(
        Ledger::open(&world.ledger_url).await.unwrap(),
        world.store.clone(),
    );
    let second = callvault::archive::run_pass(&other, &opts.clone())
        .await
        .unwrap();

    assert_eq!(
        second.report.attempted(),
        0,
        "the renewed lease kept the record: {:?}",
        second.report
    );
    opts.shutdown.begin(Duration::ZERO);
    let first = first.await.unwrap();
    assert_eq!(
        (first.report.released, first.report.lease_lost),
        (1, 0),
        "{:?}",
        first.report
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
