//! The ledger on its own: imports, late recordings, the status report, the claim order.

use crate::world::cu;
use callvault::domain::{ArchivedObject, RecordState};

use callvault::ledger::{ImportOutcome, Ledger, Settlement, Slice};

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
        ledger
            .get(&crate::world::cu("c1"))
            .await
            .unwrap()
            .unwrap()
            .state,
        RecordState::NoRecording
    );

    let late = call("c1", "c1.wav", "2026-11-01 10:00:00");
    let mut changed = answered.clone();
    changed.record_file = "other.wav".into();
    assert_eq!(
        ledger.import(&[late, changed], now).await.unwrap(),
        [ImportOutcome::RecordingAdded, ImportOutcome::Known]
    );

    let c1 = ledger.get(&crate::world::cu("c1")).await.unwrap().unwrap();
    assert_eq!(
        (c1.state, c1.record.record_file.as_str()),
        (RecordState::Pending, "c1.wav")
    );
    assert_eq!(
        ledger
            .get(&crate::world::cu("c2"))
            .await
            .unwrap()
            .unwrap()
            .record
            .record_file,
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
    use callvault::ledger::{AttemptEnd, RunRecord};
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
        crate::world::claim_one(&ledger, "run-a", &slice, now, now, short)
            .await
            .unwrap()
            .is_some()
    );
    let attempt_a = ledger
        .begin_attempt(&cu("c1"), &"run-a".into(), now)
        .await
        .unwrap();
    // run-a's lease runs out; run-b takes the record over.
    let later = now + Duration::seconds(1);
    let long = later + Duration::seconds(60);
    assert!(
        crate::world::claim_one(&ledger, "run-b", &slice, later, later, long)
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
        outcome: callvault::domain::AttemptOutcome::Archived,
        error_code: None,
        message: None,
        bytes: 1,
    };
    let held = ledger
        .settle(
            &cu("c1"),
            &"run-a".into(),
            &Settlement::Archived(&object),
            Some(&end),
            later,
        )
        .await
        .unwrap();

    assert!(!held, "run-a no longer holds the record");
    let row = ledger.get(&crate::world::cu("c1")).await.unwrap().unwrap();
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
            .bind(attempt_a.0)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (outcome.as_str(), code.as_deref()),
        ("lease_lost", Some("lease_lost"))
    );
}

/// The counts `status` reports (kept by triggers) equal a full count of every state.
async fn assert_counts_match(ledger: &Ledger, step: &str) {
    let status = ledger
        .status(chrono::Utc::now(), chrono::Duration::days(90))
        .await
        .unwrap();
    let mut total = 0;
    for state in RecordState::ALL {
        let counted = ledger.uuids_in_state(state).await.unwrap().len() as i64;
        assert_eq!(
            status.counts[state.as_str()],
            counted,
            "{state} after {step}"
        );
        total += counted;
    }
    assert_eq!(status.total, total, "total after {step}");
}

#[tokio::test]
async fn status_counts_follow_every_change_of_state() {
    let (_dir, ledger) = temp_ledger().await;
    let now = chrono::Utc::now();
    let records: Vec<_> = (0..6)
        .map(|i| {
            call(
                &format!("c{i}"),
                &format!("c{i}.wav"),
                "2026-11-01 10:00:00",
            )
        })
        .chain([call("quiet", "", "2026-11-01 10:00:00")])
        .collect();
    ledger.import(&records, now).await.unwrap();
    ledger.import(&records, now).await.unwrap();
    assert_counts_match(&ledger, "importing twice").await;

    let later = now + chrono::Duration::seconds(1);
    let lease = later + chrono::Duration::minutes(5);
    let all = Slice::default();
    let mut claimed = Vec::new();
    for _ in 0..6 {
        let claim = crate::world::claim_one(&ledger, "run", &all, later, later, lease)
            .await
            .unwrap();
        claimed.push(claim.unwrap().record.uuid.to_string());
    }
    assert_counts_match(&ledger, "claiming").await;

    let object = ArchivedObject {
        key: "k".into(),
        size: 1,
        sha256: "0".repeat(64),
        content_type: None,
        etag: None,
        version: None,
        archived_at: later,
    };
    let (code, message) = ("e", "m");
    let settlements = [
        Settlement::Archived(&object),
        Settlement::Retry {
            next_attempt_at: later,
            code,
            message,
        },
        Settlement::Failed { code, message },
        Settlement::Expired { code, message },
        Settlement::Released { message },
    ];
    for (uuid, settlement) in claimed.iter().zip(&settlements) {
        assert!(
            ledger
                .settle(&cu(uuid), &"run".into(), settlement, None, later)
                .await
                .unwrap()
        );
    }
    assert_counts_match(&ledger, "settling").await;

    // The sixth claim's lease runs out and another run takes it over: still in progress.
    // (Due by `now`: the records given back above are due only from `later`.)
    let after_lease = lease + chrono::Duration::seconds(1);
    let taken = crate::world::claim_one(
        &ledger,
        "other",
        &all,
        now,
        after_lease,
        after_lease + chrono::Duration::minutes(5),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(taken.record.uuid.as_str(), claimed[5]);
    ledger
        .import(&[call("quiet", "quiet.wav", "2026-11-01 10:00:00")], later)
        .await
        .unwrap();
    assert_counts_match(&ledger, "a lapsed lease taken over and a late recording").await;
}

#[tokio::test]
async fn claims_take_the_oldest_due_call_first_undated_last_and_skip_what_is_not_due() {
    let (_dir, ledger) = temp_ledger().await;
    let now = chrono::Utc::now();
    let records = [
        call("a", "a.wav", "2026-10-01 10:00:00"),
        call("c", "c.wav", "2026-10-05 10:00:00"),
        call("b", "b.wav", "2026-10-05 10:00:00"),
        call("e", "e.wav", ""),
        call("d", "d.wav", ""),
        call("f", "f.wav", "2026-09-01 10:00:00"),
        call("g", "g.wav", "2026-09-15 10:00:00"),
    ];
    ledger.import(&records, now).await.unwrap();
    let due_by = now + chrono::Duration::seconds(1);
    let long = due_by + chrono::Duration::hours(1);
    let claim = |owner: &'static str, slice: Slice, lease_until| {
        let ledger = ledger.clone();
        async move {
            crate::world::claim_one(&ledger, owner, &slice, due_by, due_by, lease_until)
                .await
                .unwrap()
                .map(|c| c.record.uuid.to_string())
        }
    };
    // "f" is retried later; "g" is held by a run whose lease has already run out.
    assert_eq!(
        claim("x", Slice::default(), long).await.as_deref(),
        Some("f")
    );
    let retry = Settlement::Retry {
        next_attempt_at: long,
        code: "e",
        message: "m",
    };
    assert!(
        ledger
            .settle(&cu("f"), &"x".into(), &retry, None, due_by)
            .await
            .unwrap()
    );
    assert_eq!(
        claim("dead", Slice::default(), now).await.as_deref(),
        Some("g")
    );

    let october = Slice {
        since: Some(
            chrono::DateTime::parse_from_rfc3339("2026-10-02T00:00:00Z")
                .unwrap()
                .into(),
        ),
        ..Slice::default()
    };
    assert_eq!(claim("y", october, long).await.as_deref(), Some("b"));
    let other_company = Slice {
        company: Some("99999999".into()),
        ..Slice::default()
    };
    assert_eq!(claim("y", other_company, long).await, None);

    let mut order = Vec::new();
    while let Some(uuid) = claim("z", Slice::default(), long).await {
        order.push(uuid);
    }
    assert_eq!(
        order,
        ["g", "a", "c", "d", "e"],
        "oldest call first, undated last, ties by uuid"
    );
}
