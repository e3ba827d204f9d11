//! Settlements share commits: a grouped settlement writes every record of the group (or
//! none) on both backends and says where a lease was lost; settlements ready at the same
//! moment share one commit (counted, at the default concurrency); a crash between the
//! stored objects and the grouped commit loses nothing and stores nothing twice.

use callvault::domain::{ArchivedObject, AttemptOutcome, RecordState, RunId};
use callvault::ledger::{
    AttemptEnd, BackendKind, ClaimRequest, MediaNote, SettleItem, Settlement, Slice,
};
use callvault::simulator::DownloadFault;
use chrono::{Duration, Utc};

use crate::inspect::attempts;
use crate::world::{TempLedger, World, call, cu, ensure_run};

async fn a_grouped_settlement_writes_each_record_and_reports_lost_leases(kind: BackendKind) {
    let ledger = TempLedger::new(kind).await;
    let now = Utc::now();
    let calls: Vec<_> = (1..=3)
        .map(|i| {
            call(
                &format!("g{i}"),
                &format!("g{i}.wav"),
                "2026-11-01 10:00:00",
            )
        })
        .collect();
    ledger.import(&calls, now).await.unwrap();
    ensure_run(&ledger, "run-a").await;
    let owner = RunId::from("run-a");
    let claims = ledger
        .claim(&ClaimRequest {
            owner: &owner,
            slice: &Slice::default(),
            due_by: now,
            now,
            lease_until: now + Duration::seconds(60),
            limit: 3,
        })
        .await
        .unwrap();
    assert_eq!(claims.len(), 3, "one claim statement takes the batch");
    let object = ArchivedObject {
        key: "g1.wav".into(),
        size: 3,
        sha256: "a".repeat(64),
        content_type: Some("audio/wav".into()),
        etag: None,
        version: None,
        archived_at: now,
    };
    let note = MediaNote {
        duration_ms: Some(1000),
        note: None,
    };
    let stranger = RunId::from("run-b");
    let end = |i: usize, outcome| AttemptEnd {
        id: claims[i].attempt,
        outcome,
        error_code: None,
        message: None,
        bytes: 0,
    };
    let items = [
        SettleItem {
            uuid: &claims[0].record.uuid,
            owner: &owner,
            settlement: Settlement::Archived(&object, &note),
            last_attempt: Some(end(0, AttemptOutcome::Archived)),
        },
        SettleItem {
            uuid: &claims[1].record.uuid,
            owner: &owner,
            settlement: Settlement::Retry {
                next_attempt_at: now,
                code: "http_503",
                message: "busy",
            },
            last_attempt: Some(end(1, AttemptOutcome::Transient)),
        },
        // Not ours: the lease is run-a's.
        SettleItem {
            uuid: &claims[2].record.uuid,
            owner: &stranger,
            settlement: Settlement::Failed {
                code: "x",
                message: "x",
            },
            last_attempt: None,
        },
    ];
    let commits_before = ledger.commits();

    let held = ledger.settle_many(&items, Utc::now()).await.unwrap();

    assert_eq!(held, vec![true, true, false]);
    if let (Some(before), Some(after)) = (commits_before, ledger.commits()) {
        assert_eq!(after - before, 1, "the group is one commit");
    }
    let state = |uuid: &'static str| {
        let ledger = &ledger;
        async move { ledger.get(&cu(uuid)).await.unwrap().unwrap() }
    };
    let archived = state("g1").await;
    assert_eq!(
        (archived.state, archived.sha256.as_deref()),
        (RecordState::Archived, Some("a".repeat(64).as_str()))
    );
    assert_eq!(state("g2").await.state, RecordState::Pending);
    assert_eq!(state("g3").await.state, RecordState::InProgress);
    let ended: Vec<_> = attempts(&ledger)
        .await
        .into_iter()
        .map(|a| a.outcome)
        .collect();
    assert!(ended.contains(&"archived".to_owned()) && ended.contains(&"transient".to_owned()));
}
on_both_backends!(a_grouped_settlement_writes_each_record_and_reports_lost_leases);

/// Polls `done` every 10 ms for up to 30 s.
async fn wait_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Settlements that are ready at the same moment share commits: a pass at the default
/// concurrency (8) claims its batch in one commit; while another connection holds the
/// SQLite write lock (as a busy ledger does), every worker stores its recording and sidecar
/// and queues its settlement; once the lock goes, the queued settlements are written in
/// one or two commits, not eight. The commits are counted (SQLite's commit hook), not
/// timed; the rate a backfill reaches (0.63 commits per archived record over 2,000
/// recordings at concurrency 8) is measured by the benchmark (BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlements_ready_together_share_one_commit() {
    use sqlx::Connection;
    let world = World::new().await;
    for i in 0..8 {
        let record = world
            .import_call(&format!("gc-{i}"), &format!("gc-{i}.wav"), 40_000)
            .await;
        // The downloads wait a second: time to take the lock after the claim.
        world.sim.push_download_fault(
            &record.record_file,
            DownloadFault::Stall(std::time::Duration::from_secs(1)),
        );
    }
    let opts = callvault::archive::RunOptions {
        concurrency: 8,
        ..world.options()
    };
    let deps = world.deps();
    let pass = tokio::spawn(async move { callvault::archive::run_pass(&deps, &opts).await });

    // The test reads and locks the ledger through connections of its own: the pass's
    // commit counter counts every commit on the pass's pool.
    let mut holder = sqlx::SqliteConnection::connect(&world.ledger_url)
        .await
        .unwrap();
    let probe = sqlx::SqlitePool::connect(&world.ledger_url).await.unwrap();
    let count = |state: &'static str| {
        let probe = probe.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM calls WHERE state = $1")
                .bind(state)
                .fetch_one(&probe)
                .await
                .unwrap()
        }
    };
    wait_until("the batch is claimed", || async {
        count("in_progress").await == 8
    })
    .await;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();
    wait_until("every recording and sidecar is stored", || async {
        world.object_keys().await.len() == 16
    })
    .await;
    assert_eq!(
        count("archived").await,
        0,
        "nothing is archived before its commit"
    );
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    let result = pass.await.unwrap().expect("the ledger works");

    assert_eq!(
        (result.report.archived, result.exit_code()),
        (8, 0),
        "{:?}",
        result.report
    );
    // The pass's commits: the batch's claim, one empty claim per worker when it asks for
    // more (nothing is due any more), and the settlements. Without grouping that is
    // 1 + 8 + 8 = 17; grouped, the eight settlements take one commit for the one that
    // was waiting on the lock and one for those queued behind it (a worker still between
    // its sidecar and the queue when the lock went may add one more).
    let commits = result.report.ledger_commits.expect("SQLite counts commits");
    let settlement_commits = commits - 1 - 8;
    eprintln!(
        "{commits} ledger commits, {settlement_commits} for the settlements of 8 archived records"
    );
    assert!(
        (1..=3).contains(&settlement_commits),
        "eight settlements ready together take at most three commits, not eight: \
         {commits} ledger commits in all"
    );
    assert_eq!(world.verify_archived().await, 8);
}
