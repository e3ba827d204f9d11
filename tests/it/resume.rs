//! Resume instead of restart: a large download that breaks mid-body (reset, early end, a
//! stall) continues from its last byte with a fresh link and a Range request, into the same
//! multipart upload; the stored SHA-256 is the whole file's. A server that ignores ranges
//! makes the attempt start over cleanly.

use std::time::Duration;

use callvault::domain::RecordState;
use callvault::provider::Downloader;
use callvault::simulator::DownloadFault;

use crate::world::{TEST_PART, World, files_under};

const MIB: u64 = 1024 * 1024;

/// The record was archived in one attempt with the source's SHA-256, in the store too.
async fn archived_whole(world: &World, uuid: &str, file: &str) {
    let row = world
        .ledger
        .get(&crate::world::cu(uuid))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, RecordState::Archived, "{row:?}");
    assert_eq!(row.attempts, 1, "resumed, not retried");
    assert_eq!(row.sha256, world.sim.expected_sha256(file));
    let key = row.object_key.as_deref().unwrap();
    assert_eq!(world.object_sha256(key).await, row.sha256);
}

fn no_pending_multipart(world: &World) -> bool {
    files_under(world.s3.root.path())
        .iter()
        .all(|p| !p.to_string_lossy().contains("upload"))
}

#[tokio::test]
async fn breaks_mid_body_are_resumed_from_the_last_byte_into_the_same_upload() {
    let world = World::new().await;
    let size = 3 * TEST_PART as u64 + 12_345;
    world.import_call("reset", "reset.wav", size).await;
    world.import_call("cut", "cut.wav", size).await;
    world.sim.push_download_fault(
        "reset.wav",
        DownloadFault::ResetMidBody(2 * TEST_PART as u64 + 7),
    );
    // A clean early end, twice: once on the first request, once on the resumed one.
    world
        .sim
        .push_download_fault("cut.wav", DownloadFault::Truncate(TEST_PART as u64 + 3));
    world
        .sim
        .push_download_fault("cut.wav", DownloadFault::Truncate(MIB));

    let result = world.run(&world.options()).await;

    assert_eq!(result.report.archived, 2, "{:?}", result.report);
    assert_eq!(result.report.resumed_downloads, 3);
    archived_whole(&world, "reset", "reset.wav").await;
    archived_whole(&world, "cut", "cut.wav").await;
    let stats = world.sim.stats();
    assert_eq!(stats.ranged_downloads, 3, "each break resumed with a range");
    assert_eq!(stats.url_requests, 5, "a fresh link for every request");
    // `cut` asks for the whole file, then from byte c1, then from c1 + 1 MiB; `reset` for the
    // whole file, then for less than all of it. Restarting would have asked for 5 whole files.
    let c1 = TEST_PART as u64 + 3;
    let cut = size + (size - c1) + (size - c1 - MIB);
    assert!(
        stats.bytes_announced > cut + size && stats.bytes_announced < cut + 2 * size,
        "ranges started where the bytes stopped: {} announced",
        stats.bytes_announced
    );
    assert!(no_pending_multipart(&world));
}

#[tokio::test]
async fn a_stall_mid_body_is_resumed_with_a_fresh_link() {
    let world = World::new().await;
    let size = 2 * TEST_PART as u64 + 999;
    world.import_call("stall", "stall.wav", size).await;
    world.sim.push_download_fault(
        "stall.wav",
        DownloadFault::StallAfter(TEST_PART as u64 + 1, Duration::from_secs(5)),
    );
    // Long enough that a body merely slowed by the other tests running beside this one on
    // two cores is not taken for a stall.
    let mut settings = world.downloader_settings(&[], &[crate::world::LOOPBACK]);
    settings.stall_timeout = Duration::from_secs(1);
    let mut deps = world.deps();
    deps.downloader = Downloader::new(settings).unwrap();

    let result = callvault::archive::run_pass(&deps, &world.options())
        .await
        .unwrap();

    assert_eq!(
        (result.report.archived, result.report.resumed_downloads),
        (1, 1),
        "{:?}",
        result.report
    );
    archived_whole(&world, "stall", "stall.wav").await;
    assert_eq!(world.sim.stats().ranged_downloads, 1);
}

#[tokio::test]
async fn a_server_that_ignores_ranges_makes_the_attempt_start_over_cleanly() {
    let world = World::new().await;
    world.sim.set_faults(|f| f.ignore_ranges = true);
    let size = 2 * TEST_PART as u64 + 5;
    world.import_call("whole", "whole.wav", size).await;
    world.sim.push_download_fault(
        "whole.wav",
        DownloadFault::ResetMidBody(TEST_PART as u64 + 9),
    );

    let result = world.run(&world.options()).await;

    assert_eq!(
        (result.report.archived, result.report.resumed_downloads),
        (1, 0),
        "{:?}",
        result.report
    );
    let row = world
        .ledger
        .get(&crate::world::cu("whole"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.attempts, 2,
        "the broken attempt was given up and redone"
    );
    assert_eq!(row.sha256, world.sim.expected_sha256("whole.wav"));
    assert_eq!(
        world
            .object_sha256(row.object_key.as_deref().unwrap())
            .await,
        row.sha256
    );
    assert!(no_pending_multipart(&world), "the first upload was aborted");
}
