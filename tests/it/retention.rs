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

/// The store refuses PutObjectRetention (403 AccessDenied, as when the credentials lack
/// `s3:PutObjectRetention`): the run stops like on any other store refusal, exit 2, every
/// record given back pending with no attempt spent and none failed; once the store takes
/// locks, the next run archives them locked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_refusing_the_lock_stops_the_run_with_exit_2_and_spends_no_attempt() {
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
    for i in 0..3 {
        world
            .import_call(&format!("refused-{i}"), &format!("refused-{i}.wav"), 20_000)
            .await;
    }
    proxy.inject(S3Op::PutRetention, Fault::Status(403), u32::MAX);

    let first = run_pass(
        &world.deps_with(world.ledger.clone(), through),
        &world.options(),
    )
    .await
    .expect("ledger");

    assert_eq!(first.exit_code(), 2, "{:?}", first.report);
    let r = &first.report;
    assert_eq!((r.archived, r.failed, r.retry_later), (0, 0, 0), "{r:?}");
    assert!(
        r.stopped.as_deref().is_some_and(|s| s.contains("refused")),
        "{r:?}"
    );
    assert!(proxy.injected(S3Op::PutRetention) >= 1);
    assert_given_back_unspent(&world, 3).await;

    proxy.clear();
    let direct = store_on(
        &moto.endpoint,
        &moto,
        LOCKED,
        Some(policy(LockMode::Governance)),
    );
    let second = run_pass(
        &world.deps_with(world.ledger.clone(), direct.clone()),
        &world.options(),
    )
    .await
    .expect("ledger");

    assert_eq!(
        (second.report.archived, second.exit_code()),
        (3, 0),
        "{:?}",
        second.report
    );
    let key = key_of("refused-0.wav");
    assert!(direct.object_retention(&key).await.unwrap().is_some());
}

/// Records `refused-0` .. `refused-{n-1}` are pending with no attempt spent, every attempt
/// on them closed as `stopped`, the refusal named in them.
async fn assert_given_back_unspent(world: &World, n: usize) {
    for i in 0..n {
        let uuid = format!("refused-{i}");
        let row = world.ledger.get(&crate::world::cu(&uuid)).await.unwrap();
        let row = row.expect("imported");
        assert_eq!(
            (row.state, row.attempts),
            (RecordState::Pending, 0),
            "given back unspent: {row:?}"
        );
        let attempts = world.attempts_of(&uuid).await;
        assert!(
            attempts.iter().all(|(outcome, _)| outcome == "stopped"),
            "{uuid}: no attempt counted: {attempts:?}"
        );
    }
    let refused = world
        .attempts()
        .await
        .into_iter()
        .filter(|a| a.error_code.as_deref() == Some("store_refused"))
        .count();
    assert!(refused > 0, "the refusal is named in the attempts");
}

/// The binary, killed (SIGKILL) while its PutObjectRetention hangs: the recording is stored
/// but unlocked and the record not archived; the next run archives it, locked until the
/// call's start plus the policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_between_upload_and_lock_leaves_the_record_for_the_next_run() {
    // Arrange: the binary against moto through a proxy that holds every retention request.
    let world = World::new().await;
    let moto = Moto::start().await;
    moto.create_bucket(LOCKED, true).await;
    let proxy = S3Proxy::start(&moto.endpoint).await;
    proxy.inject(S3Op::PutRetention, Fault::Stall, u32::MAX);
    let record = world.import_call("kill-1", "kill-1.wav", 30_000).await;
    let child = locking_run(&world, &moto, &proxy.endpoint)
        .spawn()
        .expect("the binary starts");

    // Act: kill it there.
    kill_at_the_lock(child, &proxy).await;

    // Assert: stored, unlocked, not archived.
    let direct = store_on(
        &moto.endpoint,
        &moto,
        LOCKED,
        Some(policy(LockMode::Governance)),
    );
    let key = key_of("kill-1.wav");
    assert!(direct.size_of(&key).await.unwrap().is_some(), "uploaded");
    assert_eq!(
        direct.object_retention(&key).await.unwrap(),
        None,
        "not locked"
    );
    let row = world.ledger.get(&crate::world::cu("kill-1")).await.unwrap();
    let row = row.expect("imported");
    assert_eq!(
        (row.state, row.archived_at),
        (RecordState::InProgress, None),
        "claimed by the dead run, not archived"
    );
    assert_eq!(
        moto.versions(LOCKED, &format!("calls/{key}")).await.len(),
        1
    );

    // The next run (a pass in the test, its clock past the dead run's 2 s lease) archives it
    // locked.
    world.clock.advance(std::time::Duration::from_secs(3));
    let next = run_pass(
        &world.deps_with(world.ledger.clone(), direct.clone()),
        &world.options(),
    )
    .await
    .expect("ledger");
    assert_eq!(
        (next.report.archived, next.exit_code()),
        (1, 0),
        "{:?}",
        next.report
    );
    let want = RetainFor::Years(7)
        .until(record.call_start.unwrap())
        .unwrap()
        .with_nanosecond(0)
        .unwrap();
    for k in [key.clone(), direct.sidecar_key(&key)] {
        let found = direct.object_retention(&k).await.unwrap();
        let found = found.unwrap_or_else(|| panic!("{k} locked now"));
        let locked = (found.mode, found.until);
        assert_eq!(locked, (LockMode::Governance, want), "{k}");
    }
    assert_only_the_current_version_locked(&moto, &key).await;
}

/// Waits until `child` sends its first PutObjectRetention (which the proxy holds), then
/// kills it (SIGKILL).
async fn kill_at_the_lock(mut child: std::process::Child, proxy: &S3Proxy) {
    let started = std::time::Instant::now();
    while proxy.injected(S3Op::PutRetention) == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the run never reached the lock"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before locking"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
}

/// `callvault run` with governance retention for 7 years and a 2 s lease, its store reached
/// at `endpoint`, its output dropped.
fn locking_run(world: &World, moto: &Moto, endpoint: &str) -> std::process::Command {
    let args = [
        "run",
        "--retention-mode",
        "governance",
        "--retain-for",
        "7y",
        "--lease",
        "2s",
    ];
    let mut cmd = crate::cli::callvault(world, &args);
    for (k, v) in moto.env() {
        cmd.env(k, v);
    }
    cmd.env("AWS_ENDPOINT", endpoint)
        .env("CALLVAULT_STORE", format!("s3://{LOCKED}/calls"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}

/// The next run uploaded again (S3 cannot tell it the bytes are the same): two versions of
/// the same recording, the current one locked; the dead run's stays unlocked and
/// noncurrent, for a lifecycle rule on noncurrent versions to remove.
async fn assert_only_the_current_version_locked(moto: &Moto, key: &str) {
    let versions = moto.versions(LOCKED, &format!("calls/{key}")).await;
    assert_eq!(versions.len(), 2, "{versions:?}");
    let lock_of = |version: String| {
        let path = format!("/{LOCKED}/calls/{key}");
        async move {
            let head = moto
                .signed(http::Method::HEAD, &path, &format!("versionId={version}"))
                .await;
            assert!(head.status().is_success(), "{}", head.status());
            head.headers()
                .get("x-amz-object-lock-mode")
                .map(|v| v.to_str().unwrap().to_owned())
        }
    };
    assert_eq!(
        lock_of(versions[0].clone()).await.as_deref(),
        Some("GOVERNANCE"),
        "the current version is locked"
    );
    assert_eq!(
        lock_of(versions[1].clone()).await,
        None,
        "the dead run's version never was"
    );
}
