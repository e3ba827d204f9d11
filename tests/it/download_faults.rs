//! A download that stalls before its first byte for longer than the stall timeout. (Other
//! broken downloads: truncation, error pages, 500 and expired links in `faults.rs`; resets
//! and stalls mid-body in `resume.rs`; empty and header-only files in `media.rs`.)

use std::time::{Duration, Instant};

use callvault::provider::Downloader;
use callvault::simulator::DownloadFault;

use crate::world::World;

/// The server sends headers, then nothing for longer than the stall timeout: the transfer
/// is abandoned at the stall timeout (not when the server wakes up), counted as a
/// `download_timeout` attempt, and the retry archives the record.
#[tokio::test]
async fn a_download_stalled_past_the_stall_timeout_is_abandoned_and_retried() {
    let world = World::new().await;
    world.import_call("stalled", "stalled.wav", 30_000).await;
    world
        .sim
        .push_download_fault("stalled.wav", DownloadFault::Stall(Duration::from_secs(5)));
    let mut deps = world.deps();
    let mut settings = world.downloader_settings(&[], &[crate::world::LOOPBACK]);
    settings.stall_timeout = Duration::from_millis(300);
    deps.downloader = Downloader::new(settings).unwrap();

    let started = Instant::now();
    let result = callvault::archive::run_pass(&deps, &world.options())
        .await
        .unwrap();

    assert!(
        started.elapsed() < Duration::from_secs(3),
        "abandoned after the stall timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(result.report.archived, 1, "{:?}", result.report);
    assert_eq!(
        world.attempts_of("stalled").await,
        [
            ("transient".into(), Some("download_timeout".into())),
            ("archived".into(), None)
        ]
    );
    assert_eq!(world.verify_archived().await, 1);
}

/// The provider hands out links to a download host that refuses every connection (the API
/// answers; the recordings' host is down): an outage, not a property of each recording. The
/// breaker trips within seconds, the run exits 1 naming the download host, no record is
/// failed and no attempt is spent; the next run, the host back, archives them all.
#[tokio::test]
async fn a_download_host_refusing_every_connection_trips_the_breaker_and_spends_no_attempts() {
    let world = World::new().await;
    for i in 0..3 {
        world
            .import_call(&format!("down{i}"), &format!("down{i}.wav"), 30_000)
            .await;
    }
    // A port on the simulator's own address that nothing listens on any more.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    world
        .sim
        .set_faults(|f| f.link_base = Some(format!("http://127.0.0.1:{closed}/")));
    // Refused connections fail fast: enough tries that the streak outlasts the breaker's
    // window (200 ms in tests), whatever the machine's speed.
    let mut opts = world.options();
    opts.retry.attempts_per_run = 1000;
    opts.retry.max_attempts = 10_000;
    let started = Instant::now();

    let result = world.run(&opts).await;

    assert!(started.elapsed() < Duration::from_secs(10));
    let r = &result.report;
    assert_eq!(
        (r.archived, r.failed, r.retry_later, r.released),
        (0, 0, 0, 3),
        "{r:?}"
    );
    assert_eq!(result.exit_code(), 1);
    assert!(
        r.stopped
            .as_deref()
            .is_some_and(|s| s.contains("download host is not answering")),
        "{r:?}"
    );
    for i in 0..3 {
        let row = world
            .ledger
            .get(&crate::world::cu(&format!("down{i}")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (row.state, row.attempts),
            (callvault::domain::RecordState::Pending, 0),
            "no attempt spent: {row:?}"
        );
    }

    world.sim.set_faults(|f| f.link_base = None);
    let next = world.run(&world.options()).await;

    assert_eq!(
        (next.report.archived, next.exit_code()),
        (3, 0),
        "{:?}",
        next.report
    );
}

/// Links pointing at a closed port, one worker, two attempts per record and a breaker that
/// wants five unanswered tries: the first two records spend their two attempts on
/// `download_connect` and are left for a later run (5 minutes on) before the breaker knows;
/// the third trips it. Once it trips, those two get their attempts back and are due at once,
/// like every other record of the run: all pending, no attempt spent, none failed.
#[tokio::test]
async fn records_failed_by_an_outage_before_the_breaker_tripped_get_their_attempts_back() {
    let world = World::new().await;
    for i in 0..6 {
        world
            .import_call(&format!("early{i}"), &format!("early{i}.wav"), 30_000)
            .await;
    }
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    world
        .sim
        .set_faults(|f| f.link_base = Some(format!("http://127.0.0.1:{closed}/")));
    let mut opts = world.options();
    opts.concurrency = 1;
    opts.retry.attempts_per_run = 2;
    opts.retry.outage_failures = 5;
    opts.retry.outage_window = Duration::ZERO;
    opts.retry.later_base = Duration::from_secs(300);
    opts.retry.later_max = Duration::from_secs(6 * 3600);

    let result = world.run(&opts).await;

    let r = &result.report;
    assert_eq!(result.exit_code(), 1, "{r:?}");
    assert!(
        r.stopped
            .as_deref()
            .is_some_and(|s| s.contains("download host is not answering")),
        "{r:?}"
    );
    assert_eq!(
        (r.archived, r.failed, r.retry_later, r.released),
        (0, 0, 0, 3),
        "the two left for later count as given back: {r:?}"
    );
    let now = chrono::Utc::now();
    for i in 0..6 {
        let uuid = format!("early{i}");
        let row = world
            .ledger
            .get(&crate::world::cu(&uuid))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (row.state, row.attempts),
            (callvault::domain::RecordState::Pending, 0),
            "no attempt spent: {row:?}"
        );
        assert!(
            row.next_attempt_at.is_some_and(|t| t <= now),
            "due at once: {row:?}"
        );
    }
    for uuid in ["early0", "early1"] {
        assert_eq!(
            world.attempts_of(uuid).await,
            [
                ("stopped".into(), Some("download_connect".into())),
                ("stopped".into(), Some("download_connect".into()))
            ],
            "{uuid}: both attempts tried, neither counted"
        );
    }

    world.sim.set_faults(|f| f.link_base = None);
    let next = world.run(&world.options()).await;

    assert_eq!(
        (next.report.archived, next.exit_code()),
        (6, 0),
        "{:?}",
        next.report
    );
}
