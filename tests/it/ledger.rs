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
