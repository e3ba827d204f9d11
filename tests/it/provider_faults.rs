//! A flaky provider API: bursts of `ret` 500, code 1010, answers slower than `--api-timeout`.
//! (Token invalidation under 32 workers, logins refused at the start and in the middle of a
//! run, and error pages are in `faults.rs`.)

use std::time::{Duration, Instant};

use callvault::archive::RunError;
use callvault::domain::RecordState;
use callvault::provider::ProviderClient;

use crate::world::World;

/// Bursts of `ret` 500 (the first 3 of every 10 API requests) while 4 workers run: every
/// answer in a burst costs exactly one attempt, retried with a fresh link; nothing is lost,
/// failed or left for later.
#[tokio::test]
async fn bursts_of_ret_500_are_retried_and_lose_nothing() {
    let world = World::new().await;
    world.import_samples(30).await;
    world
        .sim
        .set_faults(|f| f.server_error_bursts = Some((10, 3)));
    let mut opts = world.options();
    opts.retry.attempts_per_run = 20;

    let result = world.run(&opts).await;

    assert_eq!(
        (
            result.report.archived,
            result.report.failed,
            result.report.retry_later
        ),
        (24, 0, 0),
        "{:?}",
        result.report
    );
    let stats = world.sim.stats();
    // Logins are not counted in bursts; every other request asked for a link.
    let in_bursts = (0..stats.url_requests).filter(|i| i % 10 < 3).count() as u64;
    assert_eq!(stats.server_errors, in_bursts, "{stats:?}");
    assert!(stats.server_errors >= 9, "several bursts: {stats:?}");
    let attempts = world.attempts().await;
    assert_eq!(
        attempts.len() as u64,
        stats.url_requests,
        "one fresh link per attempt"
    );
    let retried = attempts
        .iter()
        .filter(|a| a.outcome == "transient" && a.error_code.as_deref() == Some("provider_ret_500"))
        .count() as u64;
    assert_eq!(retried, stats.server_errors);
    assert_eq!(
        attempts.len() as u64 - retried,
        24,
        "the other attempts archived"
    );
    assert_eq!(stats.logins, 1, "a server error is not a reason to log in");
    assert_eq!(world.verify_archived().await, 24);
}

/// Code 1010 (every 3rd link request) invalidates the token: callvault logs in again, once
/// per 1010, and repeats the request within the same attempt, so every record is archived
/// in one attempt.
#[tokio::test]
async fn code_1010_means_one_login_and_the_same_attempt_goes_on() {
    let world = World::new().await;
    for i in 0..8 {
        world
            .import_call(&format!("x{i}"), &format!("x{i}.wav"), 20_000)
            .await;
    }
    world
        .sim
        .set_faults(|f| f.extension_exception_every = Some(3));
    let mut opts = world.options();
    opts.concurrency = 1;

    let result = world.run(&opts).await;

    assert_eq!(result.report.archived, 8, "{:?}", result.report);
    let stats = world.sim.stats();
    let code_1010 = stats.url_requests / 3;
    assert_eq!(stats.url_requests, 8 + code_1010, "{stats:?}");
    assert_eq!(stats.invalidations, code_1010);
    assert_eq!(stats.logins, 1 + code_1010, "one login per 1010");
    assert_eq!(result.report.logins, stats.logins);
    let attempts = world.attempts().await;
    assert_eq!(attempts.len(), 8, "no attempt was lost to a 1010");
    assert!(attempts.iter().all(|a| a.outcome == "archived"));
    assert_eq!(world.verify_archived().await, 8);
}

/// API answers slower than the API timeout: link requests time out, each costs one attempt
/// and the records are left pending for a later run (nothing failed) within a bounded time;
/// once the provider is fast again they are archived. A login slower than the timeout stops
/// the run before it claims anything.
#[tokio::test]
async fn api_answers_slower_than_the_timeout_are_retried_later_and_fail_nothing() {
    let world = World::new().await;
    for i in 0..3 {
        world
            .import_call(&format!("s{i}"), &format!("s{i}.wav"), 20_000)
            .await;
    }
    let mut provider = world.provider_config();
    provider.api_timeout = Duration::from_millis(200);
    let mut deps = world.deps();
    deps.provider = std::sync::Arc::new(ProviderClient::new(provider.clone()).unwrap());
    deps.provider.ensure_login().await.unwrap();
    world
        .sim
        .set_faults(|f| f.api_delay = Some(Duration::from_millis(600)));
    let mut opts = world.options();
    opts.retry.attempts_per_run = 2;

    let started = Instant::now();
    let slow = callvault::archive::run_pass(&deps, &opts).await.unwrap();

    assert!(
        started.elapsed() < Duration::from_secs(3),
        "timed out, not waited"
    );
    assert_eq!(
        (
            slow.report.retry_later,
            slow.report.failed,
            slow.report.archived
        ),
        (3, 0, 0),
        "{:?}",
        slow.report
    );
    for i in 0..3 {
        let row = world
            .ledger
            .get(&crate::world::cu(&format!("s{i}")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (row.state, row.attempts, row.last_error_code.as_deref()),
            (RecordState::Pending, 2, Some("provider_timeout"))
        );
    }

    let mut cold = world.deps();
    cold.provider = std::sync::Arc::new(ProviderClient::new(provider).unwrap());
    let no_login = callvault::archive::run_pass(&cold, &opts).await.unwrap();

    assert!(
        matches!(no_login.error, Some(RunError::ProviderUnavailable(_))),
        "{:?}",
        no_login.error
    );
    assert_eq!((no_login.exit_code(), no_login.report.attempted()), (1, 0));

    world.sim.set_faults(|f| f.api_delay = None);
    let fast = callvault::archive::run_pass(&deps, &opts).await.unwrap();

    assert_eq!(fast.report.archived, 3, "{:?}", fast.report);
    assert_eq!(world.verify_archived().await, 3);
}
