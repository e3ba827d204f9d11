//! A flaky provider: rejected tokens, broken downloads, missing files, refused credentials.

use callvault::archive::RunError;
use callvault::domain::RecordState;
use callvault::simulator::DownloadFault;

use crate::world::{TEST_PART, World, call};

/// 32 workers, the token invalidated every 3rd link request (and code 1010 every 11th):
/// however many workers see the rejection, each invalidation costs exactly one login, and
/// no record is failed or left for later because of it.
#[tokio::test]
async fn thirty_two_workers_hitting_an_invalidated_token_cause_one_login_each_time() {
    let world = World::new().await;
    world.import_samples(60).await;
    world.sim.set_faults(|f| {
        f.invalidate_tokens_every = Some(3);
        f.extension_exception_every = Some(11);
    });
    let mut opts = world.options();
    opts.concurrency = 32;

    let result = world.run(&opts).await;

    let stats = world.sim.stats();
    assert!(stats.invalidations >= 10, "{stats:?}");
    assert_eq!(
        stats.logins,
        stats.invalidations + 1,
        "one login at the start, one per invalidation: {stats:?}"
    );
    assert_eq!(result.report.logins, stats.logins);
    let mut left = Vec::new();
    for uuid in world
        .ledger
        .uuids_in_state(RecordState::Pending)
        .await
        .unwrap()
    {
        left.push(
            world
                .ledger
                .get(&crate::world::cu(&uuid))
                .await
                .unwrap()
                .unwrap()
                .last_error,
        );
    }
    assert_eq!(
        (result.report.failed, result.report.retry_later),
        (0, 0),
        "{:?} {left:?}",
        result.report
    );
    assert_eq!(result.exit_code(), 0);
    assert_eq!(world.verify_archived().await, 48);
    // A token that worked and then died is churn, not a fault of the record: no attempt
    // was given up for it.
    let attempts = world.attempts().await;
    assert_eq!(attempts.len(), 48, "{attempts:?}");
    assert!(attempts.iter().all(|a| a.outcome == "archived"));
}

/// A body cut short (cleanly, after 10 kB of a small file and after two parts of a large
/// one): never archived, nothing half-written stays in the store, the multipart upload is
/// aborted; the record stays pending and a later run archives it whole.
#[tokio::test]
async fn a_truncated_download_is_never_archived_and_succeeds_later() {
    let world = World::new().await;
    // A server without ranges: the attempt must start over (resuming is `resume::*`).
    world.sim.set_faults(|f| f.ignore_ranges = true);
    world.import_call("small", "small.wav", 40_000).await;
    world
        .import_call("large", "large.wav", 3 * TEST_PART as u64)
        .await;
    // Two attempts, each a download and a refused resumption, all truncated.
    for _ in 0..4 {
        world
            .sim
            .push_download_fault("small.wav", DownloadFault::Truncate(10_000));
        world.sim.push_download_fault(
            "large.wav",
            DownloadFault::Truncate(2 * TEST_PART as u64 + 10),
        );
    }
    let mut opts = world.options();
    opts.retry.attempts_per_run = 2;

    let first = world.run(&opts).await;

    assert_eq!(
        (first.report.archived, first.report.retry_later),
        (0, 2),
        "{:?}",
        first.report
    );
    assert_eq!(first.exit_code(), 1);
    assert!(
        world.object_keys().await.is_empty(),
        "nothing half-written stays in the store"
    );
    assert!(
        world.no_pending_multipart(),
        "the multipart upload was aborted"
    );
    for uuid in ["small", "large"] {
        let row = world
            .ledger
            .get(&crate::world::cu(uuid))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.state, RecordState::Pending);
        assert_eq!(row.attempts, 2);
        assert!(row.sha256.is_none() && row.object_key.is_none());
        assert!(
            row.last_error_code
                .as_deref()
                .is_some_and(|c| c.starts_with("download_")),
            "{row:?}"
        );
    }

    let second = world.run(&opts).await;

    assert_eq!(second.report.archived, 2, "{:?}", second.report);
    for (uuid, file) in [("small", "small.wav"), ("large", "large.wav")] {
        let row = world
            .ledger
            .get(&crate::world::cu(uuid))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.sha256, world.sim.expected_sha256(file));
        assert_eq!(
            world
                .object_sha256(row.object_key.as_deref().unwrap())
                .await,
            row.sha256
        );
    }
}

/// HTTP 200 with an HTML page, HTTP 500 and an expired link (403) on downloads, plus `ret`
/// 500 and code 1001 on link requests: each costs one attempt with its own error code, is
/// retried with a fresh link, and every record ends archived with the source's SHA-256.
#[tokio::test]
async fn error_pages_and_server_errors_are_retried_not_archived() {
    let world = World::new().await;
    world.import_call("html", "html.wav", 30_000).await;
    world.import_call("five", "five.wav", 30_000).await;
    world.import_call("expired", "expired.wav", 30_000).await;
    world
        .sim
        .push_download_fault("expired.wav", DownloadFault::Expired);
    world
        .sim
        .push_download_fault("html.wav", DownloadFault::HtmlPage);
    world
        .sim
        .push_download_fault("five.wav", DownloadFault::Http500);
    world.sim.set_faults(|f| {
        f.server_error_next = 2;
        f.code_1001_next = 1;
    });
    let mut opts = world.options();
    opts.retry.attempts_per_run = 5;

    let result = world.run(&opts).await;

    assert_eq!(result.report.archived, 3, "{:?}", result.report);
    let mut attempts = 0;
    for uuid in ["html", "five", "expired"] {
        let row = world
            .ledger
            .get(&crate::world::cu(uuid))
            .await
            .unwrap()
            .unwrap();
        assert!(row.attempts >= 2, "{uuid} needed a retry: {row:?}");
        attempts += row.attempts as u64;
        assert_eq!(
            row.sha256,
            world.sim.expected_sha256(&row.record.record_file)
        );
    }
    // Every attempt (those answered with ret 500 or code 1001 included) asked for exactly
    // one fresh link: no link is ever reused.
    assert_eq!(world.sim.stats().url_requests, attempts);
    for (uuid, code) in [
        ("html", "download_not_a_recording"),
        ("five", "download_http_500"),
        ("expired", "download_http_403"),
    ] {
        let tried = world.attempts_of(uuid).await;
        assert!(
            tried.contains(&("transient".into(), Some(code.into()))),
            "{uuid}: {tried:?}"
        );
        assert_eq!(tried.last().unwrap().0, "archived", "{uuid}: {tried:?}");
    }
    let codes: Vec<_> = world
        .attempts()
        .await
        .into_iter()
        .filter_map(|a| a.error_code)
        .collect();
    assert_eq!(codes.len(), 3 + 2 + 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| *c == "provider_ret_500").count(), 2);
    assert_eq!(
        codes.iter().filter(|c| *c == "provider_code_1001").count(),
        1
    );
}

#[tokio::test]
async fn an_illegal_file_name_fails_without_retries() {
    let world = World::new().await;
    let record = call("illegal", "../../etc/passwd", "2026-11-01 10:00:00");
    world
        .ledger
        .import(&[record], chrono::Utc::now())
        .await
        .unwrap();

    let result = world.run(&world.options()).await;

    assert_eq!(result.report.failed, 1, "{:?}", result.report);
    let row = world
        .ledger
        .get(&crate::world::cu("illegal"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.state, row.attempts, row.last_error_code.as_deref()),
        (RecordState::Failed, 1, Some("provider_ret_400"))
    );
}

#[tokio::test]
async fn a_missing_file_fails_and_an_old_one_is_expired() {
    let world = World::new().await;
    let recent = call("recent", "never-existed.wav", "2026-11-01 10:00:00");
    let old_start = (chrono::Utc::now() - chrono::Duration::days(120))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let old = call("old", "deleted-by-provider.wav", &old_start);
    world
        .ledger
        .import(&[recent, old], chrono::Utc::now())
        .await
        .unwrap();

    let result = world.run(&world.options()).await;

    assert_eq!(
        (result.report.failed, result.report.expired),
        (1, 1),
        "{:?}",
        result.report
    );
    assert_eq!(result.exit_code(), 1);
    let recent = world
        .ledger
        .get(&crate::world::cu("recent"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (recent.state, recent.attempts),
        (RecordState::Failed, 1),
        "a permanent error is not retried"
    );
    assert_eq!(
        recent.last_error_code.as_deref(),
        Some("provider_code_1002")
    );
    assert_eq!(
        world
            .ledger
            .get(&crate::world::cu("old"))
            .await
            .unwrap()
            .unwrap()
            .state,
        RecordState::Expired
    );
}

/// Every login refused from the start: the run stops before any claim with exit code 3.
#[tokio::test]
async fn refused_credentials_stop_the_run_and_fail_no_record() {
    let world = World::new().await;
    world.import_samples(5).await;
    world.sim.set_faults(|f| f.refuse_logins = true);

    let result = world.run(&world.options()).await;

    assert!(
        matches!(result.error, Some(RunError::CredentialsRefused(_))),
        "{:?}",
        result.error
    );
    assert_eq!(result.exit_code(), 3);
    assert_eq!(result.report.attempted(), 0, "nothing was claimed");
    let pending = world.count(RecordState::Pending).await;
    assert_eq!(pending, 4, "every record with a recording is still pending");
}

/// Logins are refused in the middle of a run (the token dies on the 6th link request and
/// the re-login is refused): the run stops with exit code 3, the records it had archived
/// stay archived, the ones it held go back to pending, none is marked failed, and the run
/// is recorded as stopped for credentials.
#[tokio::test]
async fn logins_refused_mid_run_stop_it_with_exit_3_and_fail_nothing() {
    let world = World::new().await;
    world.import_samples(20).await;
    let deps = world.deps();
    deps.provider.ensure_login().await.unwrap();
    world.sim.set_faults(|f| {
        f.invalidate_tokens_every = Some(6);
        f.refuse_logins = true;
    });
    let mut opts = world.options();
    opts.concurrency = 2;

    let result = callvault::archive::run_pass(&deps, &opts).await.unwrap();

    assert!(
        matches!(result.error, Some(RunError::CredentialsRefused(_))),
        "{:?}",
        result.error
    );
    assert_eq!(result.exit_code(), 3);
    assert_eq!(
        result.report.archived, 5,
        "the five links handed out before: {:?}",
        result.report
    );
    assert_eq!(world.verify_archived().await, 5);
    assert_eq!(world.count(RecordState::Pending).await, 16 - 5);
    assert_eq!(world.count(RecordState::Failed).await, 0);
    assert_eq!(world.count(RecordState::InProgress).await, 0);
    let stopped: Vec<_> = world
        .attempts()
        .await
        .into_iter()
        .filter(|a| a.outcome != "archived")
        .collect();
    assert!(!stopped.is_empty() && stopped.len() <= 2, "{stopped:?}");
    assert!(stopped.iter().all(|a| a.outcome == "stopped"
        && a.error_code.as_deref() == Some("provider_credentials_refused")));
    let status = world
        .ledger
        .status(chrono::Utc::now(), chrono::Duration::days(90))
        .await
        .unwrap();
    let last_run = status.last_run.expect("the run is recorded");
    assert_eq!(
        (last_run.status.as_str(), last_run.exit_code),
        ("credentials_refused", Some(3))
    );
}

/// An answer that the recording cannot be had must repeat before the record fails: `1002`
/// twice, then the provider has the file: archived. `1002` three times within the window:
/// still pending; three times once the window (an hour, on the pass's clock) has passed:
/// failed.
#[tokio::test]
async fn a_missing_file_fails_only_once_the_answer_repeats_over_the_window() {
    let world = World::new().await;
    let soon = call("soon", "soon.wav", "2026-11-01 10:00:00");
    let never = call("never", "never.wav", "2026-11-01 10:00:00");
    world
        .ledger
        .import(&[soon, never], chrono::Utc::now())
        .await
        .unwrap();
    let mut opts = world.options();
    opts.retry.give_up_answers = 3;
    opts.retry.give_up_window = std::time::Duration::from_secs(3600);
    opts.retry.attempts_per_run = 2;

    let first = world.run(&opts).await;

    assert_eq!(
        (first.report.failed, first.report.retry_later),
        (0, 2),
        "{:?}",
        first.report
    );
    world.sim.add_recording("soon.wav", 40_000);
    let second = world.run(&opts).await;

    assert_eq!(second.report.archived, 1, "{:?}", second.report);
    assert_eq!(
        (second.report.failed, second.report.retry_later),
        (0, 1),
        "three answers, but not over an hour: {:?}",
        second.report
    );
    world.clock.advance(std::time::Duration::from_secs(3600));
    let third = world.run(&opts).await;

    assert_eq!(third.report.failed, 1, "{:?}", third.report);
    let never = world
        .ledger
        .get(&crate::world::cu("never"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(never.state, RecordState::Failed);
    assert_eq!(never.last_error_code.as_deref(), Some("provider_code_1002"));
    let soon = world
        .ledger
        .get(&crate::world::cu("soon"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(soon.state, RecordState::Archived);
}
