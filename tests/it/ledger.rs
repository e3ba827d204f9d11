//! The ledger on its own: imports, late recordings, the status report.

use callvault::domain::RecordState;
use callvault::ledger::{ImportOutcome, Ledger};

use crate::world::call;

async fn temp_ledger() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&format!("sqlite://{}", dir.path().join("l.db").display()))
        .await
        .unwrap();
    (dir, ledger)
}

#[tokio::test]
async fn a_late_recording_makes_an_unanswered_call_pending_and_nothing_else_changes() {
    let (_dir, ledger) = temp_ledger().await;
    let now = chrono::Utc::now();
    let unanswered = call("c1", "", "2026-11-01 10:00:00");
    let answered = call("c2", "c2.wav", "2026-11-01 10:00:00");
    assert_eq!(
        ledger
            .import(&[unanswered, answered.clone()], now)
            .await
            .unwrap(),
        [ImportOutcome::New, ImportOutcome::New]
    );
    assert_eq!(
        ledger.get("c1").await.unwrap().unwrap().state,
        RecordState::NoRecording
    );

    let late = call("c1", "c1.wav", "2026-11-01 10:00:00");
    let mut changed = answered.clone();
    changed.record_file = "other.wav".into();
    assert_eq!(
        ledger.import(&[late, changed], now).await.unwrap(),
        [ImportOutcome::RecordingAdded, ImportOutcome::Known]
    );

    let c1 = ledger.get("c1").await.unwrap().unwrap();
    assert_eq!(
        (c1.state, c1.record.record_file.as_str()),
        (RecordState::Pending, "c1.wav")
    );
    assert_eq!(
        ledger.get("c2").await.unwrap().unwrap().record.record_file,
        "c2.wav",
        "a known record is not overwritten"
    );
}

#[tokio::test]
async fn status_counts_states_and_calls_near_the_retention_horizon() {
    let (_dir, ledger) = temp_ledger().await;
    let now = chrono::Utc::now();
    let at = |days: i64| {
        (now - chrono::Duration::days(days))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let records = [
        call("old", "a.wav", &at(80)),
        call("older", "b.wav", &at(89)),
        call("new", "c.wav", &at(3)),
        call("none", "", &at(85)),
    ];
    ledger.import(&records, now).await.unwrap();

    let status = ledger
        .status(now, chrono::Duration::days(90))
        .await
        .unwrap();

    assert_eq!(status.counts["pending"], 3);
    assert_eq!(status.counts["no_recording"], 1);
    assert_eq!((status.counts["archived"], status.total), (0, 4));
    assert_eq!(
        status.at_risk_within_14_days, 2,
        "calls older than 76 days and not archived"
    );
    let age_days = status.oldest_pending_age_seconds.unwrap() / 86_400;
    assert!((88..=89).contains(&age_days), "{age_days}");
    assert!(status.last_run.is_none());
}

#[tokio::test]
async fn an_attempt_whose_lease_ran_out_is_recorded_as_lost_not_as_its_outcome() {
    use callvault::domain::ArchivedObject;
    use callvault::ledger::{AttemptEnd, RunRecord, Settlement, Slice};
    use chrono::Duration;

    let (dir, ledger) = temp_ledger().await;
    let now = chrono::Utc::now();
    ledger
        .import(&[call("c1", "c1.wav", "2026-11-01 10:00:00")], now)
        .await
        .unwrap();
    for id in ["run-a", "run-b"] {
        let run = RunRecord {
            id: id.into(),
            started_at: now,
            host: "test".into(),
            pid: 1,
            options: "{}".into(),
        };
        ledger.start_run(&run).await.unwrap();
    }
    let slice = Slice::default();
    let short = now + Duration::milliseconds(1);
    assert!(
        ledger
            .claim("run-a", &slice, now, now, short)
            .await
            .unwrap()
            .is_some()
    );
    let attempt_a = ledger.begin_attempt("c1", "run-a", now).await.unwrap();
    // run-a's lease runs out; run-b takes the record over.
    let later = now + Duration::seconds(1);
    let long = later + Duration::seconds(60);
    assert!(
        ledger
            .claim("run-b", &slice, later, later, long)
            .await
            .unwrap()
            .is_some()
    );

    let object = ArchivedObject {
        key: "k".into(),
        size: 1,
        sha256: "00".into(),
        content_type: None,
        etag: None,
        version: None,
        archived_at: later,
    };
    let end = AttemptEnd {
        id: attempt_a,
        outcome: "archived",
        error_code: None,
        message: None,
        bytes: 1,
    };
    let held = ledger
        .settle(
            "c1",
            "run-a",
            &Settlement::Archived(&object),
            Some(&end),
            later,
        )
        .await
        .unwrap();

    assert!(!held, "run-a no longer holds the record");
    let row = ledger.get("c1").await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.lease_owner.as_deref(), row.sha256),
        (RecordState::InProgress, Some("run-b"), None)
    );
    let pool =
        sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.path().join("l.db").display()))
            .await
            .unwrap();
    let (outcome, code): (String, Option<String>) =
        sqlx::query_as("SELECT outcome, error_code FROM attempts WHERE id = $1")
            .bind(attempt_a)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (outcome.as_str(), code.as_deref()),
        ("lease_lost", Some("lease_lost"))
    );
}
