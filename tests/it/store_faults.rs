//! A flaky object store: 5xx answers and dropped connections on part uploads, on multipart
//! completion and on single PUTs, injected by a proxy in front of the S3 server; a store
//! that stops taking writes after the run started.

use callvault::archive::RunResult;
use callvault::domain::RecordState;

use crate::s3proxy::{Fault, S3Op, S3Proxy};
use crate::world::{TEST_PART, World};

/// A recording just over one part: a two-part multipart upload.
const TWO_PARTS: u64 = TEST_PART as u64 + 70_000;

/// The key the default template gives a call imported by `World::import_call`.
fn key_of(file: &str) -> String {
    format!("20000013/2026/11/01/{file}")
}

async fn run_through(world: &World, proxy: &S3Proxy, attempts_per_run: u32) -> RunResult {
    let deps = world.deps_with(world.ledger.clone(), world.store_through(&proxy.endpoint));
    let mut opts = world.options();
    opts.concurrency = 1;
    opts.retry.attempts_per_run = attempts_per_run;
    callvault::archive::run_pass(&deps, &opts)
        .await
        .expect("the ledger works")
}

fn transient(code: &str) -> (String, Option<String>) {
    ("transient".into(), Some(code.into()))
}

fn archived() -> (String, Option<String>) {
    ("archived".into(), None)
}

/// A few failing part uploads (500, 503, a dropped connection) are absorbed by the store
/// client's own retries: the record is archived in its first attempt. A part that keeps
/// failing fails the attempt: the multipart upload is aborted, no object (half or whole) is
/// visible, the record stays pending and the next run archives it whole.
#[tokio::test]
async fn failing_part_uploads_are_retried_and_a_failed_upload_is_aborted() {
    let world = World::new().await;
    let proxy = S3Proxy::start(&world.s3.endpoint).await;
    world.import_call("parts-a", "parts-a.wav", TWO_PARTS).await;
    proxy.inject(S3Op::UploadPart, Fault::Status(500), 1);
    proxy.inject(S3Op::UploadPart, Fault::Status(503), 1);
    proxy.inject(S3Op::UploadPart, Fault::Drop, 1);

    let first = run_through(&world, &proxy, 1).await;

    assert_eq!(first.report.archived, 1, "{:?}", first.report);
    assert_eq!(world.attempts_of("parts-a").await, [archived()]);
    assert_eq!(proxy.injected(S3Op::UploadPart), 3);
    assert_eq!(
        proxy.seen(S3Op::UploadPart),
        2 + 3,
        "two parts, three retried"
    );
    assert_eq!(proxy.seen(S3Op::AbortMultipart), 0);

    world.import_call("parts-b", "parts-b.wav", TWO_PARTS).await;
    // More failures in a row than one request is retried: the upload must fail.
    proxy.inject(S3Op::UploadPart, Fault::Status(500), 8);

    let second = run_through(&world, &proxy, 1).await;

    assert_eq!(
        (second.report.archived, second.report.retry_later),
        (0, 1),
        "{:?}",
        second.report
    );
    assert!(proxy.injected(S3Op::UploadPart) >= 3 + 4);
    assert_eq!(
        proxy.seen(S3Op::AbortMultipart),
        1,
        "the upload was aborted"
    );
    assert!(world.no_pending_multipart(), "no part is left behind");
    assert_eq!(world.object_sha256(&key_of("parts-b.wav")).await, None);
    let row = world
        .ledger
        .get(&crate::world::cu("parts-b"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, RecordState::Pending);
    assert!(row.sha256.is_none() && row.object_key.is_none());
    assert_eq!(
        world.attempts_of("parts-b").await,
        [transient("store_failed")]
    );

    proxy.clear();
    let third = run_through(&world, &proxy, 1).await;

    assert_eq!(third.report.archived, 1, "{:?}", third.report);
    assert_eq!(world.verify_archived().await, 2);
    assert_eq!(
        world.recording_keys().await,
        [key_of("parts-a.wav"), key_of("parts-b.wav")].map(|k| format!("calls/{k}"))
    );
}

/// A CompleteMultipartUpload answered 500 or dropped once is retried by the store client;
/// one that keeps failing fails the attempt, the upload is aborted (so no object appears,
/// not even a partial one) and the next attempt archives the record whole.
#[tokio::test]
async fn failing_completions_are_retried_and_never_leave_a_partial_object() {
    let world = World::new().await;
    let proxy = S3Proxy::start(&world.s3.endpoint).await;
    world.import_call("done-a", "done-a.wav", TWO_PARTS).await;
    proxy.inject(S3Op::CompleteMultipart, Fault::Status(500), 1);
    proxy.inject(S3Op::CompleteMultipart, Fault::Drop, 1);

    let first = run_through(&world, &proxy, 1).await;

    assert_eq!(first.report.archived, 1, "{:?}", first.report);
    assert_eq!(world.attempts_of("done-a").await, [archived()]);
    assert_eq!(
        (
            proxy.injected(S3Op::CompleteMultipart),
            proxy.seen(S3Op::CompleteMultipart)
        ),
        (2, 3)
    );

    world.import_call("done-b", "done-b.wav", TWO_PARTS).await;
    proxy.inject(S3Op::CompleteMultipart, Fault::Status(503), 4);

    let second = run_through(&world, &proxy, 1).await;

    assert_eq!(second.report.retry_later, 1, "{:?}", second.report);
    assert_eq!(proxy.injected(S3Op::CompleteMultipart), 2 + 4);
    assert_eq!(
        proxy.seen(S3Op::AbortMultipart),
        1,
        "the upload was aborted"
    );
    assert!(world.no_pending_multipart());
    assert_eq!(world.object_sha256(&key_of("done-b.wav")).await, None);
    assert_eq!(
        world
            .ledger
            .get(&crate::world::cu("done-b"))
            .await
            .unwrap()
            .unwrap()
            .state,
        RecordState::Pending
    );

    let third = run_through(&world, &proxy, 1).await;

    assert_eq!(third.report.archived, 1, "{:?}", third.report);
    assert_eq!(
        world.attempts_of("done-b").await,
        [transient("store_failed"), archived()]
    );
    assert_eq!(world.verify_archived().await, 2);
}

/// The store completes the upload but the answer is lost on the way back: callvault cannot
/// know the object is whole, so it does not mark the record archived on that attempt; it
/// uploads again and archives it once, with the right SHA-256, under the same key.
#[tokio::test]
async fn a_lost_completion_answer_is_uploaded_again_and_archived_once() {
    let world = World::new().await;
    let proxy = S3Proxy::start(&world.s3.endpoint).await;
    world.import_call("lost", "lost.wav", TWO_PARTS).await;
    proxy.inject(S3Op::CompleteMultipart, Fault::DropAfterForward, 1);

    let result = run_through(&world, &proxy, 3).await;

    assert_eq!(result.report.archived, 1, "{:?}", result.report);
    assert_eq!(proxy.injected(S3Op::CompleteMultipart), 1);
    let attempts = world.attempts_of("lost").await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].0, "transient");
    assert!(
        attempts[0]
            .1
            .as_deref()
            .is_some_and(|c| c.starts_with("store_")),
        "{attempts:?}"
    );
    assert_eq!(attempts[1], archived());
    assert_eq!(world.verify_archived().await, 1);
    assert_eq!(
        world.recording_keys().await,
        [format!("calls/{}", key_of("lost.wav"))]
    );
    assert!(world.no_pending_multipart());
}

/// A single PUT answered 500/503 or dropped is retried by the store client; one that fails
/// every retry fails the attempt without leaving an object, and the next attempt (same run)
/// archives the record.
#[tokio::test]
async fn failing_single_puts_are_retried() {
    let world = World::new().await;
    let proxy = S3Proxy::start(&world.s3.endpoint).await;
    world.import_call("put-a", "put-a.wav", 60_000).await;
    proxy.inject(S3Op::PutObject, Fault::Status(500), 1);
    proxy.inject(S3Op::PutObject, Fault::Status(503), 1);
    proxy.inject(S3Op::PutObject, Fault::Drop, 1);

    let first = run_through(&world, &proxy, 1).await;

    assert_eq!(first.report.archived, 1, "{:?}", first.report);
    assert_eq!(world.attempts_of("put-a").await, [archived()]);
    assert_eq!(
        (proxy.injected(S3Op::PutObject), proxy.seen(S3Op::PutObject)),
        (3, 4)
    );

    world.import_call("put-b", "put-b.wav", 60_000).await;
    proxy.inject(S3Op::PutObject, Fault::Drop, 4);

    let second = run_through(&world, &proxy, 2).await;

    assert_eq!(second.report.archived, 1, "{:?}", second.report);
    assert_eq!(
        world.attempts_of("put-b").await,
        [transient("store_failed"), archived()]
    );
    assert_eq!(proxy.seen(S3Op::PutObject), 4 + 4 + 1);
    assert_eq!(world.verify_archived().await, 2);
}

/// The store answers the pre-flight check, then stops answering (every write dropped): the
/// breaker trips within seconds, nothing is archived, nothing is marked failed, every
/// record goes back to pending with its attempt count as before the run, no object is
/// written and the run exits 1. The next run, the store back, starts normally.
#[tokio::test]
async fn a_store_that_goes_away_mid_run_trips_the_breaker_and_spends_no_attempts() {
    let world = World::new().await;
    let proxy = S3Proxy::start(&world.s3.endpoint).await;
    for i in 0..3 {
        world
            .import_call(&format!("w{i}"), &format!("w{i}.wav"), 30_000)
            .await;
    }
    proxy.inject(S3Op::PutObject, Fault::Drop, u32::MAX);
    let deps = world.deps_with(world.ledger.clone(), world.store_through(&proxy.endpoint));
    let mut opts = world.options();
    opts.retry.attempts_per_run = 5;
    let started = std::time::Instant::now();

    let result = callvault::archive::run_pass(&deps, &opts).await.unwrap();

    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(
        (
            result.report.archived,
            result.report.failed,
            result.report.retry_later,
            result.report.released
        ),
        (0, 0, 0, 3),
        "{:?}",
        result.report
    );
    assert_eq!(result.exit_code(), 1);
    assert!(
        result
            .report
            .stopped
            .as_deref()
            .is_some_and(|s| s.contains("the object store is not answering")),
        "{:?}",
        result.report
    );
    assert!(world.object_keys().await.is_empty());
    for i in 0..3 {
        let row = world
            .ledger
            .get(&crate::world::cu(&format!("w{i}")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.state, RecordState::Pending);
        assert_eq!(row.attempts, 0, "no attempt spent: {row:?}");
        assert_eq!(row.last_error_code.as_deref(), Some("run_stopped"));
    }

    proxy.clear();
    let next = run_through(&world, &proxy, 1).await;

    assert_eq!(next.report.archived, 3, "{:?}", next.report);
    assert_eq!(next.exit_code(), 0);
}

/// The store starts refusing us mid-run (403 on every write): the run stops claiming at
/// once and exits 2 naming the cause, every record is pending again with its attempt count
/// unchanged, nothing is failed, no object is written.
#[tokio::test]
async fn a_store_that_refuses_mid_run_stops_the_run_with_exit_2_and_spends_no_attempts() {
    let world = World::new().await;
    let proxy = S3Proxy::start(&world.s3.endpoint).await;
    for i in 0..6 {
        world
            .import_call(&format!("r{i}"), &format!("r{i}.wav"), 30_000)
            .await;
    }
    proxy.inject(S3Op::PutObject, Fault::Status(403), u32::MAX);
    let deps = world.deps_with(world.ledger.clone(), world.store_through(&proxy.endpoint));
    let opts = world.options();

    let result = callvault::archive::run_pass(&deps, &opts).await.unwrap();

    assert_eq!(result.exit_code(), 2, "{:?}", result.report);
    assert_eq!(
        (
            result.report.archived,
            result.report.failed,
            result.report.retry_later
        ),
        (0, 0, 0),
        "{:?}",
        result.report
    );
    let stopped = result.report.stopped.clone().unwrap_or_default();
    assert!(stopped.contains("refused access"), "{stopped}");
    assert!(world.object_keys().await.is_empty());
    for i in 0..6 {
        let row = world
            .ledger
            .get(&crate::world::cu(&format!("r{i}")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.state, RecordState::Pending, "{row:?}");
        assert_eq!(row.attempts, 0, "no attempt spent: {row:?}");
    }
    assert!(
        proxy.seen(S3Op::PutObject) <= 4,
        "claiming stopped at once: {} PUTs",
        proxy.seen(S3Op::PutObject)
    );
}

/// A single PUT sent with `x-amz-checksum-sha256` was checked by the server: no HEAD
/// follows it. A multipart upload, or a store opened without checksums, is read back.
#[tokio::test]
async fn a_checksummed_single_put_needs_no_head_and_the_rest_are_read_back() {
    let world = World::new().await;
    let proxy = S3Proxy::start(&world.s3.endpoint).await;
    world.import_call("small-a", "small-a.wav", 40_000).await;
    world.import_call("large-a", "large-a.wav", TWO_PARTS).await;
    let deps = world.deps_with(world.ledger.clone(), world.store_through(&proxy.endpoint));
    let mut opts = world.options();
    opts.concurrency = 1;

    let checked = callvault::archive::run_pass(&deps, &opts).await.unwrap();

    assert_eq!(checked.report.archived, 2, "{:?}", checked.report);
    assert_eq!(proxy.seen(S3Op::PutObject), 1);
    // One HEAD for the multipart upload, one for the run's manifest (is its key free?).
    assert_eq!(
        proxy.seen(S3Op::Head),
        1 + 1,
        "the single PUT is not read back"
    );

    // Without checksums, the single PUT is read back too.
    world.import_call("small-b", "small-b.wav", 40_000).await;
    let unchecked = world.deps_with(
        world.ledger.clone(),
        world.store_through_with(&proxy.endpoint, false),
    );
    let run = callvault::archive::run_pass(&unchecked, &opts)
        .await
        .unwrap();

    assert_eq!(run.report.archived, 1, "{:?}", run.report);
    assert_eq!(
        proxy.seen(S3Op::Head),
        2 + 1 + 1,
        "the recording and the manifest"
    );
    assert_eq!(world.verify_archived().await, 3);
}
