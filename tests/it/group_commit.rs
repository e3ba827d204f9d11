//! Settlements share commits: a grouped settlement writes every record of the group (or
//! none) on both backends and says where a lease was lost; a pass at the default
//! concurrency makes at most one ledger commit per archived record; a crash between the
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_at_the_default_concurrency_commits_at_most_once_per_archived_record() {
    let world = World::new().await;
    // Every download's body comes 300 ms after its headers, so the workers of a batch end
    // their transfers together and their settlements meet at the ledger, as they do in a
    // backfill whenever the ledger's commits are the slower side.
    for record in world.import_samples(64).await {
        world.sim.push_download_fault(
            &record.record_file,
            DownloadFault::Stall(std::time::Duration::from_millis(300)),
        );
    }
    let opts = callvault::archive::RunOptions {
        concurrency: 8,
        ..world.options()
    };

    let result = world.run(&opts).await;

    // Some samples are calls without a recording (nothing to archive).
    let archived = result.report.archived;
    assert!(
        archived >= 32 && result.exit_code() == 0,
        "{:?}",
        result.report
    );
    let commits = result.report.ledger_commits.expect("SQLite counts commits");
    assert!(
        commits as f64 / archived as f64 <= 1.0,
        "{commits} ledger commits for {archived} archived records"
    );
    eprintln!("{commits} ledger commits for {archived} archived records");
    assert_eq!(world.verify_archived().await as u64, archived);
}
