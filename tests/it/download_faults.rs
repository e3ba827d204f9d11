//! Broken downloads beyond those in `faults.rs` (truncation, error pages, 500, expired
//! links): a connection reset mid-body, a stall longer than the stall timeout, an empty file.

use std::time::{Duration, Instant};

use callvault::domain::RecordState;
use callvault::provider::Downloader;
use callvault::simulator::DownloadFault;

use crate::world::{TEST_PART, World};

/// The connection is reset in the middle of the body (a small file after 10 kB, a large one
/// inside its second part): the attempt fails, the multipart upload is aborted, nothing is
/// stored, and the retry (with a fresh link) archives the whole file.
#[tokio::test]
async fn a_connection_reset_mid_body_is_retried_and_never_archived_short() {
    let world = World::new().await;
    world.import_call("small", "small.wav", 40_000).await;
    world
        .import_call("large", "large.wav", TEST_PART as u64 + 200_000)
        .await;
    world
        .sim
        .push_download_fault("small.wav", DownloadFault::ResetMidBody(10_000));
    world.sim.push_download_fault(
        "large.wav",
        DownloadFault::ResetMidBody(TEST_PART as u64 + 100_000),
    );

    let result = world.run(&world.options()).await;

    assert_eq!(
        (result.report.archived, result.report.failed),
        (2, 0),
        "{:?}",
        result.report
    );
    for uuid in ["small", "large"] {
        let tried = world.attempts_of(uuid).await;
        assert_eq!(tried.len(), 2, "{uuid}: {tried:?}");
        assert_eq!(tried[0].0, "transient");
        assert!(
            tried[0]
                .1
                .as_deref()
                .is_some_and(|c| c.starts_with("download_")),
            "{uuid}: {tried:?}"
        );
        assert_eq!(tried[1].0, "archived");
    }
    assert_eq!(
        world.sim.stats().url_requests,
        4,
        "a fresh link per attempt"
    );
    assert!(
        world.no_pending_multipart(),
        "the broken upload was aborted"
    );
    assert_eq!(world.verify_archived().await, 2);
    assert_eq!(world.object_keys().await.len(), 2);
}

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
    deps.downloader = Downloader::new(Duration::from_secs(5), Duration::from_millis(300)).unwrap();

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

/// A zero-length recording (HTTP 200, `Content-Length: 0`) is never marked archived: every
/// attempt fails as `download_empty` and the record stays pending for a later run.
#[tokio::test]
async fn a_zero_length_recording_is_never_archived() {
    let world = World::new().await;
    world.import_call("empty", "empty.wav", 0).await;
    let mut opts = world.options();
    opts.retry.attempts_per_run = 2;

    let result = world.run(&opts).await;

    assert_eq!(
        (result.report.archived, result.report.retry_later),
        (0, 1),
        "{:?}",
        result.report
    );
    let row = world.ledger.get("empty").await.unwrap().unwrap();
    assert_eq!(row.state, RecordState::Pending);
    assert!(row.sha256.is_none() && row.object_key.is_none());
    assert_eq!(
        world.attempts_of("empty").await,
        vec![("transient".into(), Some("download_empty".into())); 2]
    );
}
