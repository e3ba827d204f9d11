//! Failed and expired records listed with their reasons; `retry` sends only those round again.

use callvault::domain::RecordState;
use callvault::ledger::RetrySelection;

use crate::world::{World, call};

#[tokio::test]
async fn failures_are_listed_with_reasons_and_retry_requeues_only_failed_records() {
    let world = World::new().await;
    let old_start = (chrono::Utc::now() - chrono::Duration::days(120))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let records = [
        call("missing", "never-existed.wav", "2026-11-01 10:00:00"),
        call("illegal", "../../etc/passwd", "2026-11-01 10:00:00"),
        call("gone", "deleted-by-provider.wav", &old_start),
    ];
    world
        .ledger
        .import(&records, chrono::Utc::now())
        .await
        .unwrap();
    world.import_call("fine", "fine.wav", 2000).await;
    let result = world.run(&world.options()).await;
    assert_eq!(
        (
            result.report.failed,
            result.report.expired,
            result.report.archived
        ),
        (2, 1, 1)
    );

    let listed = world.ledger.failures_page(None, None, 100).await.unwrap();
    let summary: Vec<_> = listed
        .iter()
        .map(|f| {
            (
                f.uuid.as_str(),
                f.state,
                f.last_error_code.as_deref(),
                f.attempts,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("gone", RecordState::Expired, Some("provider_code_1002"), 1),
            ("illegal", RecordState::Failed, Some("provider_ret_400"), 1),
            (
                "missing",
                RecordState::Failed,
                Some("provider_code_1002"),
                1
            ),
        ]
    );
    assert!(listed.iter().all(|f| f.last_error.is_some()));
    let by_code = world
        .ledger
        .failures_page(Some("provider_ret_400"), None, 100)
        .await
        .unwrap();
    assert_eq!(by_code.len(), 1);
    let paged = world
        .ledger
        .failures_page(None, Some(&crate::world::cu("gone")), 1)
        .await
        .unwrap();
    assert_eq!(paged[0].uuid, "illegal");

    let now = chrono::Utc::now();
    let named = [
        crate::world::cu("missing"),
        crate::world::cu("fine"),
        crate::world::cu("nobody"),
    ];
    let by_uuid = world
        .ledger
        .retry_failed(RetrySelection::Uuids(&named), false, now)
        .await
        .unwrap();
    assert_eq!(by_uuid.requeued, 1);
    assert_eq!(
        by_uuid.skipped,
        [
            (crate::world::cu("fine"), Some(RecordState::Archived)),
            (crate::world::cu("nobody"), None)
        ]
    );
    let missing = world
        .ledger
        .get(&crate::world::cu("missing"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((missing.state, missing.attempts), (RecordState::Pending, 0));
    assert!(missing.next_attempt_at.unwrap() <= chrono::Utc::now());
    assert_eq!(
        world
            .ledger
            .get(&crate::world::cu("fine"))
            .await
            .unwrap()
            .unwrap()
            .state,
        RecordState::Archived
    );

    let by_code = world
        .ledger
        .retry_failed(RetrySelection::ErrorCode("provider_ret_400"), false, now)
        .await
        .unwrap();
    assert_eq!(by_code.requeued, 1);
    let all = |expired| world.ledger.retry_failed(RetrySelection::All, expired, now);
    assert_eq!(
        all(false).await.unwrap().requeued,
        0,
        "expired needs asking"
    );
    assert_eq!(all(true).await.unwrap().requeued, 1);
    assert_eq!(world.count(RecordState::Pending).await, 3);
    assert_eq!(world.count(RecordState::Archived).await, 1);

    // The provider has the missing file now: the next run archives it.
    world.sim.add_recording("never-existed.wav", 2000);
    let again = world.run(&world.options()).await;
    assert_eq!(again.report.archived, 1);
    assert_eq!(
        world
            .ledger
            .get(&crate::world::cu("missing"))
            .await
            .unwrap()
            .unwrap()
            .state,
        RecordState::Archived
    );
}
