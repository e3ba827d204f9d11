//! Object Lock retention against moto, an S3 server that enforces it: each recording and
//! its sidecar locked until the call's start plus the policy, before the record is archived;
//! a bucket without Object Lock refused at preflight.

use callvault::archive::run_pass;
use callvault::domain::RecordState;
use callvault::store::{LockMode, RetainFor, RetentionPolicy, Store, StoreConfig};
use chrono::Timelike;

use crate::moto::Moto;
use crate::s3proxy::{Fault, S3Op, S3Proxy};
use crate::world::{TEST_PART, World};

const LOCKED: &str = "locked";

fn policy(mode: LockMode) -> RetentionPolicy {
    RetentionPolicy {
        mode,
        retain_for: RetainFor::Years(7),
    }
}

fn store_on(
    endpoint: &str,
    moto: &Moto,
    bucket: &str,
    retention: Option<RetentionPolicy>,
) -> Store {
    let s3 = moto
        .options()
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "aws_endpoint" => (k, endpoint.to_owned()),
            _ => (k, v),
        })
        .collect();
    Store::open(&StoreConfig {
        s3,
        part_size: TEST_PART,
        retention,
        ..StoreConfig::new(format!("s3://{bucket}/calls"))
    })
    .expect("store")
}

fn key_of(file: &str) -> String {
    format!("20000013/2026/11/01/{file}")
}

/// With compliance retention the recording and its sidecar are locked until the call's start
/// plus 7 years (to the second), read back from the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_retention_locks_from_the_calls_start() {
    let world = World::new().await;
    let moto = Moto::start().await;
    moto.create_bucket(LOCKED, true).await;
    let store = store_on(
        &moto.endpoint,
        &moto,
        LOCKED,
        Some(policy(LockMode::Compliance)),
    );
    let record = world.import_call("locked-1", "locked-1.wav", 40_000).await;

    let result = run_pass(
        &world.deps_with(world.ledger.clone(), store.clone()),
        &world.options(),
    )
    .await
    .expect("ledger");

    assert_eq!(result.report.archived, 1, "{:?}", result.report.stopped);
    let start = record.call_start.expect("the call has a start");
    let want = RetainFor::Years(7)
        .until(start)
        .unwrap()
        .with_nanosecond(0)
        .unwrap();
    let key = key_of("locked-1.wav");
    for k in [key.clone(), store.sidecar_key(&key)] {
        let found = store
            .object_retention(&k)
            .await
            .expect("read retention")
            .expect("locked");
        assert_eq!(found.mode, LockMode::Compliance, "{k}");
        assert_eq!(found.until, want, "{k}: the call's start plus 7 years");
    }
}

/// Retention configured on a bucket without Object Lock: a configuration error (exit 2)
/// saying so, and nothing claimed or archived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_a_bucket_without_object_lock_is_refused() {
    let world = World::new().await;
    let moto = Moto::start().await;
    moto.create_bucket("plain", false).await;
    let store = store_on(
        &moto.endpoint,
        &moto,
        "plain",
        Some(policy(LockMode::Governance)),
    );
    world.import_call("plain-1", "plain-1.wav", 10_000).await;

    let result = run_pass(
        &world.deps_with(world.ledger.clone(), store),
        &world.options(),
    )
    .await
    .expect("ledger");

    assert_eq!(result.exit_code(), 2);
    let stopped = result.report.stopped.clone().unwrap_or_default();
    assert!(stopped.contains("Object Lock"), "{stopped}");
    assert_eq!(result.report.archived, 0);
    assert_eq!(world.count(RecordState::Archived).await, 0);
    assert_eq!(world.count(RecordState::InProgress).await, 0);
}

/// The lock fails after the upload (as when the process dies between them): the record is
/// not archived and the object is unlocked; the next run uploads and locks it, then archives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_is_archived_only_once_locked() {
    let world = World::new().await;
    let moto = Moto::start().await;
    moto.create_bucket(LOCKED, true).await;
    let proxy = S3Proxy::start(&moto.endpoint).await;
    let through = store_on(
        &proxy.endpoint,
        &moto,
        LOCKED,
        Some(policy(LockMode::Governance)),
    );
    let direct = store_on(
        &moto.endpoint,
        &moto,
        LOCKED,
        Some(policy(LockMode::Governance)),
    );
    let record = world.import_call("late-1", "late-1.wav", 20_000).await;
    proxy.inject(S3Op::PutRetention, Fault::Status(500), 100);
    let mut opts = world.options();
    opts.retry.attempts_per_run = 1;

    let first = run_pass(&world.deps_with(world.ledger.clone(), through), &opts)
        .await
        .expect("ledger");

    assert_eq!(first.report.archived, 0);
    assert_eq!(world.count(RecordState::Archived).await, 0);
    let key = key_of("late-1.wav");
    assert!(
        direct.size_of(&key).await.unwrap().is_some(),
        "the upload happened"
    );
    assert_eq!(
        direct.object_retention(&key).await.unwrap(),
        None,
        "but no lock"
    );

    let second = run_pass(
        &world.deps_with(world.ledger.clone(), direct.clone()),
        &opts,
    )
    .await
    .expect("ledger");

    assert_eq!(second.report.archived, 1, "{:?}", second.report.stopped);
    let found = direct
        .object_retention(&key)
        .await
        .unwrap()
        .expect("locked now");
    assert_eq!(found.mode, LockMode::Governance);
    let start = record.call_start.unwrap();
    assert_eq!(
        found.until,
        RetainFor::Years(7)
            .until(start)
            .unwrap()
            .with_nanosecond(0)
            .unwrap()
    );
}
