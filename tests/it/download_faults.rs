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
