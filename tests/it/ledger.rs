//! The ledger on its own, the same tests on both backends: imports, late recordings, the
//! status report, claim order and batches, concurrent claimers, settlements and imports,
//! and `ledger copy` between backends.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration as StdDuration;

use callvault::domain::{ArchivedObject, AttemptOutcome, CallRecord, RecordState, RunId};
use callvault::ledger::{
    AttemptEnd, BackendKind, ClaimRequest, CopyError, ImportOutcome, Ledger, MediaNote, RunRecord,
    Settlement, Slice, Table, copy_ledger, table_checksum,
};
use chrono::{DateTime, Duration, SubsecRound, Utc};

use crate::inspect::{attempts, table_rows};
use crate::world::{TempLedger, World, call, claim_one, cu};

/// Limit for a test's concurrent part: a ledger that deadlocks fails the test, not CI.
const RACE_LIMIT: StdDuration = StdDuration::from_secs(120);

async fn a_late_recording_makes_an_unanswered_call_pending_and_nothing_else_changes(
    kind: BackendKind,
) {
    let ledger = TempLedger::new(kind).await;
    let now = Utc::now();
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
        ledger.get(&cu("c1")).await.unwrap().unwrap().state,
        RecordState::NoRecording
    );

    let late = call("c1", "c1.wav", "2026-11-01 10:00:00");
    let mut changed = answered.clone();
    changed.record_file = "other.wav".into();
    assert_eq!(
        ledger.import(&[late, changed], now).await.unwrap(),
        [ImportOutcome::RecordingAdded, ImportOutcome::Known]
    );

    let c1 = ledger.get(&cu("c1")).await.unwrap().unwrap();
    assert_eq!(
        (c1.state, c1.record.record_file.as_str()),
        (RecordState::Pending, "c1.wav")
    );
    assert_eq!(
        ledger
            .get(&cu("c2"))
            .await
            .unwrap()
            .unwrap()
            .record
            .record_file,
        "c2.wav",
        "a known record is not overwritten"
    );
}
on_both_backends!(a_late_recording_makes_an_unanswered_call_pending_and_nothing_else_changes);

async fn status_counts_states_and_calls_near_the_retention_horizon(kind: BackendKind) {
    let ledger = TempLedger::new(kind).await;
    let now = Utc::now();
    let at = |days: i64| {
        (now - Duration::days(days))
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

    let status = ledger.status(now, Duration::days(90)).await.unwrap();

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
on_both_backends!(status_counts_states_and_calls_near_the_retention_horizon);

async fn start_runs(ledger: &Ledger, ids: &[&str], now: DateTime<Utc>) {
    for id in ids {
        let run = RunRecord {
            id: (*id).into(),
            started_at: now,
            host: "test".into(),
            pid: 1,
            options: "{}".into(),
        };
        ledger.start_run(&run).await.unwrap();
    }
}

fn object(at: DateTime<Utc>) -> ArchivedObject {
    ArchivedObject {
        key: "k".into(),
        size: 1,
        sha256: "0".repeat(64),
        content_type: None,
        etag: None,
        version: None,
        archived_at: at,
    }
}

async fn an_attempt_whose_lease_ran_out_is_recorded_as_lost_not_as_its_outcome(kind: BackendKind) {
    let ledger = TempLedger::new(kind).await;
    let now = Utc::now();
    ledger
        .import(&[call("c1", "c1.wav", "2026-11-01 10:00:00")], now)
        .await
        .unwrap();
    start_runs(&ledger, &["run-a", "run-b"], now).await;
    let slice = Slice::default();
    let short = now + Duration::milliseconds(1);
    assert!(
        claim_one(&ledger, "run-a", &slice, now, now, short)
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
        claim_one(&ledger, "run-b", &slice, later, later, long)
            .await
            .unwrap()
            .is_some()
    );

    let object = object(later);
    let end = AttemptEnd {
        id: attempt_a,
        outcome: AttemptOutcome::Archived,
        error_code: None,
        message: None,
        bytes: 1,
    };
    let held = ledger
        .settle(
            &cu("c1"),
            &"run-a".into(),
            &Settlement::Archived(&object, &MediaNote::default()),
            Some(&end),
            later,
        )
        .await
        .unwrap();

    assert!(!held, "run-a no longer holds the record");
    let row = ledger.get(&cu("c1")).await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.lease_owner.as_deref(), row.sha256),
        (RecordState::InProgress, Some("run-b"), None)
    );
    let attempt = attempts(&ledger)
        .await
        .into_iter()
        .find(|a| a.id == attempt_a.0)
        .expect("run-a's attempt");
    assert_eq!(
        (attempt.outcome.as_str(), attempt.error_code.as_deref()),
        ("lease_lost", Some("lease_lost"))
    );
}
on_both_backends!(an_attempt_whose_lease_ran_out_is_recorded_as_lost_not_as_its_outcome);

/// The counts `status` reports (kept by triggers) equal a full count of every state.
pub(crate) async fn assert_counts_match(ledger: &Ledger, step: &str) {
    let status = ledger.status(Utc::now(), Duration::days(90)).await.unwrap();
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

async fn status_counts_follow_every_change_of_state(kind: BackendKind) {
    let ledger = TempLedger::new(kind).await;
    let now = Utc::now();
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

    let later = now + Duration::seconds(1);
    let lease = later + Duration::minutes(5);
    let all = Slice::default();
    let mut claimed = Vec::new();
    for _ in 0..6 {
        let claim = claim_one(&ledger, "run", &all, later, later, lease)
            .await
            .unwrap();
        claimed.push(claim.unwrap().record.uuid.to_string());
    }
    assert_counts_match(&ledger, "claiming").await;

    let object = object(later);
    let (code, message) = ("e", "m");
    let settlements = [
        Settlement::Archived(&object, &MediaNote::default()),
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
    let after_lease = lease + Duration::seconds(1);
    let taken = claim_one(
        &ledger,
        "other",
        &all,
        now,
        after_lease,
        after_lease + Duration::minutes(5),
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
on_both_backends!(status_counts_follow_every_change_of_state);

async fn claims_take_the_oldest_due_call_first_undated_last_and_skip_what_is_not_due(
    kind: BackendKind,
) {
    let ledger = TempLedger::new(kind).await;
    let now = Utc::now();
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
    let due_by = now + Duration::seconds(1);
    let long = due_by + Duration::hours(1);
    let claim = |owner: &'static str, slice: Slice, lease_until| {
        let ledger = ledger.ledger.clone();
        async move {
            claim_one(&ledger, owner, &slice, due_by, due_by, lease_until)
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
            DateTime::parse_from_rfc3339("2026-10-02T00:00:00Z")
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
on_both_backends!(claims_take_the_oldest_due_call_first_undated_last_and_skip_what_is_not_due);

/// Claims up to `limit` records for `owner`, due by and leased from `now`; their uuids.
async fn claim_batch(
    ledger: &Ledger,
    owner: &str,
    limit: u32,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Vec<String> {
    crate::world::ensure_run(ledger, owner).await;
    let owner = RunId::from(owner);
    let request = ClaimRequest {
        owner: &owner,
        slice: &Slice::default(),
        due_by: now,
        now,
        lease_until,
        limit,
    };
    ledger
        .claim(&request)
        .await
        .unwrap_or_else(|e| panic!("{owner} claiming: {e}"))
        .into_iter()
        .map(|c| c.record.uuid.to_string())
        .collect()
}

async fn a_claim_takes_up_to_its_limit_in_claim_order(kind: BackendKind) {
    let ledger = TempLedger::new(kind).await;
    let now = Utc::now();
    let records = [
        call("a", "a.wav", "2026-10-01 10:00:00"),
        call("c", "c.wav", "2026-10-05 10:00:00"),
        call("b", "b.wav", "2026-10-05 10:00:00"),
        call("e", "e.wav", ""),
        call("d", "d.wav", ""),
        call("f", "f.wav", "2026-09-01 10:00:00"),
        call("g", "g.wav", "2026-09-15 10:00:00"),
        call("quiet", "", "2026-08-01 10:00:00"),
    ];
    ledger.import(&records, now).await.unwrap();
    let due = now + Duration::seconds(1);
    let lease = due + Duration::hours(1);

    let batches = [
        claim_batch(&ledger, "run", 3, due, lease).await,
        claim_batch(&ledger, "run", 3, due, lease).await,
        claim_batch(&ledger, "run", 3, due, lease).await,
        claim_batch(&ledger, "run", 3, due, lease).await,
    ];

    assert_eq!(
        batches,
        [vec!["f", "g", "a"], vec!["b", "c", "d"], vec!["e"], vec![]],
        "oldest call first, undated last, then by uuid; never the unanswered call"
    );
    for uuid in ["a", "b", "c", "d", "e", "f", "g"] {
        let row = ledger.get(&cu(uuid)).await.unwrap().unwrap();
        assert_eq!(
            (row.state, row.lease_owner.as_deref()),
            (RecordState::InProgress, Some("run")),
            "{uuid}"
        );
    }
}
on_both_backends!(a_claim_takes_up_to_its_limit_in_claim_order);

/// `n` answered calls `r000`…, one minute apart.
fn numbered_calls(n: usize) -> Vec<CallRecord> {
    (0..n)
        .map(|i| {
            let start = format!(
                "2026-10-{:02} {:02}:{:02}:00",
                1 + i / 1440,
                i / 60 % 24,
                i % 60
            );
            call(&format!("r{i:03}"), &format!("r{i:03}.wav"), &start)
        })
        .collect()
}

async fn concurrent_claimers_never_get_the_same_record(kind: BackendKind) {
    let ledger = TempLedger::new(kind).await;
    let now = Utc::now();
    let records = numbered_calls(200);
    ledger.import(&records, now).await.unwrap();
    let due = now + Duration::seconds(1);
    let lease = due + Duration::hours(1);

    let mut claimers = tokio::task::JoinSet::new();
    for i in 0..8 {
        let handle = ledger.reopen().await;
        claimers.spawn(async move {
            let owner = format!("claimer-{i}");
            let mut batches = Vec::new();
            loop {
                let batch = claim_batch(&handle, &owner, 5, due, lease).await;
                if batch.is_empty() {
                    break;
                }
                batches.push(batch);
            }
            (owner, batches)
        });
    }
    let results = tokio::time::timeout(RACE_LIMIT, claimers.join_all())
        .await
        .expect("the claimers finish");

    let mut claimed_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (owner, batches) in &results {
        for batch in batches {
            assert!((1..=5).contains(&batch.len()), "{owner}: {batch:?}");
            let mut sorted = batch.clone();
            sorted.sort();
            assert_eq!(&sorted, batch, "{owner}'s batch in claim order");
            for uuid in batch {
                claimed_by
                    .entry(uuid.clone())
                    .or_default()
                    .push(owner.clone());
            }
        }
    }
    let twice: Vec<_> = claimed_by.iter().filter(|(_, o)| o.len() > 1).collect();
    assert!(twice.is_empty(), "claimed more than once: {twice:?}");
    let all: BTreeSet<String> = records.iter().map(|r| r.uuid.to_string()).collect();
    assert_eq!(
        claimed_by.keys().cloned().collect::<BTreeSet<_>>(),
        all,
        "every record claimed"
    );
    for (uuid, owners) in &claimed_by {
        let row = ledger.get(&cu(uuid)).await.unwrap().unwrap();
        assert_eq!(
            row.lease_owner.as_deref(),
            Some(owners[0].as_str()),
            "{uuid}"
        );
    }
    assert_counts_match(&ledger, "concurrent claims").await;
}
on_both_backends!(concurrent_claimers_never_get_the_same_record);

async fn a_lapsed_lease_is_taken_over_exactly_once_when_claimers_race(kind: BackendKind) {
    const RACERS: usize = 8;
    const ROUNDS: i64 = 6;
    let ledger = TempLedger::new(kind).await;
    let t0 = Utc::now();
    ledger
        .import(&[call("c1", "c1.wav", "2026-11-01 10:00:00")], t0)
        .await
        .unwrap();
    let racers: Vec<String> = (0..RACERS).map(|i| format!("racer-{i}")).collect();
    let mut runs: Vec<&str> = racers.iter().map(String::as_str).collect();
    runs.push("dead");
    start_runs(&ledger, &runs, t0).await;
    let mut handles = Vec::new();
    for _ in 0..RACERS {
        handles.push(ledger.reopen().await);
    }
    // The first holder dies mid-attempt; its lease runs out a millisecond later.
    let lapses = |at: DateTime<Utc>| at + Duration::milliseconds(1);
    // (The claim starts its attempt in the same commit.)
    assert_eq!(
        claim_batch(&ledger, "dead", 1, t0, lapses(t0)).await,
        ["c1"]
    );

    // Each round, every racer tries to take the lapsed record over at once; the winner
    // has started an attempt with its claim, and its lease lapses in turn.
    let mut winners = Vec::new();
    for round in 1..=ROUNDS {
        let now = t0 + Duration::seconds(round);
        let mut race = tokio::task::JoinSet::new();
        for (racer, handle) in racers.iter().zip(&handles) {
            let (racer, handle) = (racer.clone(), handle.clone());
            race.spawn(async move {
                let got = claim_batch(&handle, &racer, 1, now, lapses(now)).await;
                (racer, got)
            });
        }
        let results = tokio::time::timeout(RACE_LIMIT, race.join_all())
            .await
            .expect("the racers finish");
        let won: Vec<_> = results.iter().filter(|(_, got)| !got.is_empty()).collect();
        assert_eq!(won.len(), 1, "round {round}: {results:?}");
        winners.push(won[0].0.clone());
    }

    let row = ledger.get(&cu("c1")).await.unwrap().unwrap();
    assert_eq!(
        row.lease_owner.as_deref(),
        winners.last().map(String::as_str)
    );
    let outcomes: Vec<(String, String)> = attempts(&ledger)
        .await
        .into_iter()
        .map(|a| (a.run_id, a.outcome))
        .collect();
    let mut expected: Vec<(String, String)> = std::iter::once("dead".to_owned())
        .chain(winners.iter().take(ROUNDS as usize - 1).cloned())
        .map(|run| (run, "interrupted".to_owned()))
        .collect();
    expected.push((winners.last().unwrap().clone(), "running".to_owned()));
    assert_eq!(
        outcomes, expected,
        "each lapsed attempt closed once, by the one takeover"
    );
}
on_both_backends!(a_lapsed_lease_is_taken_over_exactly_once_when_claimers_race);

async fn status_counts_stay_exact_after_concurrent_settlements(kind: BackendKind) {
    let ledger = TempLedger::new(kind).await;
    let now = Utc::now();
    ledger.import(&numbered_calls(100), now).await.unwrap();
    let due = now + Duration::seconds(1);
    let claimed = claim_batch(&ledger, "run", 100, due, due + Duration::hours(1)).await;
    assert_eq!(claimed.len(), 100);
    let later = due + Duration::seconds(1);
    let newcomers: Vec<CallRecord> = (0..50)
        .map(|i| {
            let file = if i % 5 == 0 {
                String::new()
            } else {
                format!("n{i:02}.wav")
            };
            call(&format!("n{i:02}"), &file, "2026-11-02 10:00:00")
        })
        .collect();

    // 8 settlers, each with its own connections, settle 100 records their own way while
    // 2 receivers import 50 new ones.
    let mut tasks = tokio::task::JoinSet::new();
    for settler in 0..8 {
        let handle = ledger.reopen().await;
        let mine: Vec<(usize, String)> = claimed
            .iter()
            .cloned()
            .enumerate()
            .filter(|(i, _)| i % 8 == settler)
            .collect();
        tasks.spawn(async move {
            let object = object(later);
            let (code, message) = ("e", "m");
            for (i, uuid) in mine {
                let settlement = match i % 5 {
                    0 => Settlement::Archived(&object, &MediaNote::default()),
                    1 => Settlement::Retry {
                        next_attempt_at: later,
                        code,
                        message,
                    },
                    2 => Settlement::Failed { code, message },
                    3 => Settlement::Expired { code, message },
                    _ => Settlement::Released { message },
                };
                let held = handle
                    .settle(&cu(&uuid), &"run".into(), &settlement, None, later)
                    .await
                    .unwrap_or_else(|e| panic!("settling {uuid}: {e}"));
                assert!(held, "{uuid}");
            }
        });
    }
    for half in newcomers.chunks(25) {
        let (handle, half) = (ledger.reopen().await, half.to_vec());
        tasks.spawn(async move {
            for record in half {
                handle.import(&[record], later).await.unwrap();
            }
        });
    }
    tokio::time::timeout(RACE_LIMIT, tasks.join_all())
        .await
        .expect("the settlers finish");

    let status = ledger.status(Utc::now(), Duration::days(90)).await.unwrap();
    let counts: Vec<(&str, i64)> = status.counts.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(
        counts,
        [
            ("archived", 20),
            ("erased", 0),
            ("expired", 20),
            ("failed", 20),
            ("in_progress", 0),
            ("no_recording", 10),
            ("pending", 40 + 40),
        ]
    );
    assert_eq!(status.total, 150);
    assert_counts_match(&ledger, "concurrent settlements and imports").await;
}
on_both_backends!(status_counts_stay_exact_after_concurrent_settlements);

async fn concurrent_imports_of_the_same_records_give_one_row_and_one_new_each(kind: BackendKind) {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;

    let ledger = TempLedger::new(kind).await;
    let now = Utc::now();
    // Every 6th call is first known as unanswered by half the receivers, and with its
    // recording by the other half.
    let uuids: Vec<String> = (0..60).map(|i| format!("u{i:02}")).collect();
    let late = |i: usize| i.is_multiple_of(6);
    let version = |with_all_recordings: bool| -> Vec<CallRecord> {
        uuids
            .iter()
            .enumerate()
            .map(|(i, uuid)| {
                let file = if late(i) && !with_all_recordings {
                    String::new()
                } else {
                    format!("{uuid}.wav")
                };
                call(uuid, &file, "2026-11-01 10:00:00")
            })
            .collect()
    };

    let mut receivers = tokio::task::JoinSet::new();
    for receiver in 0..8u64 {
        let handle = ledger.reopen().await;
        let mut records = version(receiver >= 4);
        records.shuffle(&mut rand::rngs::StdRng::seed_from_u64(receiver));
        receivers.spawn(async move {
            let outcomes = handle
                .import(&records, now)
                .await
                .unwrap_or_else(|e| panic!("receiver {receiver} importing: {e}"));
            (receiver, records, outcomes)
        });
    }
    let results = tokio::time::timeout(RACE_LIMIT, receivers.join_all())
        .await
        .expect("the imports finish");

    let mut seen: BTreeMap<String, Vec<(u64, ImportOutcome)>> = BTreeMap::new();
    for (receiver, records, outcomes) in &results {
        assert_eq!(outcomes.len(), records.len());
        for (record, outcome) in records.iter().zip(outcomes) {
            seen.entry(record.uuid.to_string())
                .or_default()
                .push((*receiver, *outcome));
        }
    }
    for (i, uuid) in uuids.iter().enumerate() {
        let outcomes = &seen[uuid];
        let news: Vec<_> = outcomes
            .iter()
            .filter(|(_, o)| *o == ImportOutcome::New)
            .collect();
        assert_eq!(news.len(), 1, "{uuid}: {outcomes:?}");
        let added = outcomes
            .iter()
            .filter(|(_, o)| *o == ImportOutcome::RecordingAdded)
            .count();
        // A late call first stored without its recording gets it from exactly one of the
        // receivers that have it; stored with it, it never needs one.
        let first_without = late(i) && news[0].0 < 4;
        assert_eq!(added, usize::from(first_without), "{uuid}: {outcomes:?}");
        let row = ledger.get(&cu(uuid)).await.unwrap().expect("stored");
        assert_eq!(
            (row.state, row.record.record_file.as_str()),
            (RecordState::Pending, format!("{uuid}.wav").as_str()),
            "{uuid}"
        );
    }
    assert_eq!(table_rows(&ledger, Table::Calls).await.len(), 60);
    let status = ledger.status(Utc::now(), Duration::days(90)).await.unwrap();
    assert_eq!((status.total, status.counts["pending"]), (60, 60));
}
on_both_backends!(concurrent_imports_of_the_same_records_give_one_row_and_one_new_each);

/// A SQLite ledger with history (runs, attempts of several outcomes, a manifest, a
/// verification) copied into an empty ledger of each kind: every table's rows and checksum
/// match, the copy works as a ledger, a copy back reads the same, and copying into a
/// ledger that is not empty is refused.
async fn ledger_copy_from_sqlite_with_history_matches_table_by_table(kind: BackendKind) {
    let world = World::new().await;
    world.import_samples(10).await;
    let pending = world
        .ledger
        .uuids_in_state(RecordState::Pending)
        .await
        .unwrap();
    let flaky = world.ledger.get(&pending[0]).await.unwrap().unwrap();
    world.sim.push_download_fault(
        &flaky.record.record_file,
        callvault::simulator::DownloadFault::Http500,
    );
    let run = world.run(&world.options()).await;
    assert_eq!(run.exit_code(), 0);
    let archived = world
        .ledger
        .uuids_in_state(RecordState::Archived)
        .await
        .unwrap();
    world
        .ledger
        .start_verification("verify-1", &serde_json::json!({"sample": 2}), Utc::now())
        .await
        .unwrap();
    let results: Vec<_> = archived
        .iter()
        .take(2)
        .map(|u| (u.clone(), callvault::ledger::VerifyResult::Ok))
        .collect();
    world
        .ledger
        .record_verified(&results, Utc::now())
        .await
        .unwrap();
    world
        .ledger
        .finish_verification("verify-1", 2, 0, &serde_json::json!({"ok": 2}), Utc::now())
        .await
        .unwrap();
    let provider = world.provider_config();
    let sync = callvault::sync::run_sync(
        &callvault::sync::SyncDeps {
            ledger: world.ledger.clone(),
            provider: std::sync::Arc::new(
                callvault::provider::ProviderClient::new(provider).unwrap(),
            ),
        },
        &callvault::sync::SyncOptions::new(callvault::timefmt::default_provider_tz()),
    )
    .await
    .unwrap();
    assert_eq!(sync.progress.bills, 10, "{sync:?}");
    let looked_at = callvault::ledger::AccessEntry {
        at: Utc::now(),
        actor: "auditor".into(),
        action: callvault::ledger::AccessAction::Find,
        source: "cli@test".into(),
        reason: None,
        query: Some("company=20000013".into()),
        calls: archived.iter().take(2).cloned().collect(),
    };
    world.ledger.log_access(&looked_at).await.unwrap();
    // A legal hold placed and released, and an erasure (a tombstone).
    let hold = callvault::ledger::HoldId::generate();
    world
        .ledger
        .create_hold(&callvault::ledger::NewHold {
            id: &hold,
            reason: "CASE-1",
            placed_by: "legal",
            placed_at: Utc::now(),
            selection: &serde_json::json!("uuid=x"),
        })
        .await
        .unwrap();
    world
        .ledger
        .add_held_calls(
            &hold,
            &[(
                archived[0].clone(),
                callvault::ledger::ObjectHold::Unsupported,
            )],
        )
        .await
        .unwrap();
    world
        .ledger
        .release_calls(&archived[..1], None, "legal", "closed", Utc::now())
        .await
        .unwrap();
    let erased = world.ledger.call_facts(&archived[1..2]).await.unwrap();
    let object = erased[0].object.clone().unwrap();
    let tombstone = callvault::ledger::Tombstone {
        uuid: object.uuid.clone(),
        sidecar_key: format!("{}.json", object.key),
        key: object.key,
        sha256: object.sha256,
        size: object.size,
        archived_at: Some(object.archived_at),
        erased_at: Utc::now(),
        reason: "GDPR-1".into(),
        erased_by: "dpo".into(),
        versions_deleted: 2,
        manifest_seq: None,
    };
    assert_eq!(
        world.ledger.record_erasure(&tombstone).await.unwrap(),
        callvault::ledger::EraseRecorded::Erased
    );
    // A time-stamp token over a checkpoint (the pass above logged the manifests).
    let now = chrono::Utc::now();
    let stamp = callvault::ledger::StampRow {
        seq: 1,
        tsa: "http://127.0.0.1:1/tsa".into(),
        key: "manifests/0000000001.checkpoint.tsr".into(),
        token: vec![0x30, 0x03, 0x02, 0x01, 0x00],
        gen_time: now,
    };
    world.ledger.add_stamp(&stamp, now).await.unwrap();
    // A web page session (only its token's hash is kept).
    let session = callvault::ledger::UiSession {
        username: "officer".into(),
        created_at: now,
        expires_at: now + chrono::Duration::hours(8),
    };
    world
        .ledger
        .create_session(&"e".repeat(64), &session, now)
        .await
        .unwrap();
    let target = TempLedger::new(kind).await;

    let report = copy_ledger(&world.ledger, &target).await.expect("the copy");

    for check in &report.tables {
        assert!(check.matches(), "{check:?}");
        assert!(
            check.source_rows > 0,
            "{} has history: {check:?}",
            check.table
        );
    }
    assert!(report.all_match());
    let outcomes: BTreeSet<String> = attempts(&target)
        .await
        .into_iter()
        .map(|a| a.outcome)
        .collect();
    assert!(
        outcomes.contains("transient") && outcomes.contains("archived"),
        "{outcomes:?}"
    );
    let (source, copied) = (
        world
            .ledger
            .status(Utc::now(), Duration::days(90))
            .await
            .unwrap(),
        target.status(Utc::now(), Duration::days(90)).await.unwrap(),
    );
    assert_eq!(copied.counts, source.counts);
    assert_eq!(copied.last_run.map(|r| r.id), source.last_run.map(|r| r.id));
    assert_eq!(
        target.manifests().await.unwrap().len(),
        world.ledger.manifests().await.unwrap().len()
    );
    let back = TempLedger::new(BackendKind::Sqlite).await;
    assert!(copy_ledger(&target, &back).await.unwrap().all_match());
    for table in Table::ALL {
        assert_eq!(
            table_checksum(&back, table).await.unwrap(),
            table_checksum(&world.ledger, table).await.unwrap(),
            "{} after a copy there and back",
            table.name()
        );
    }
    // New attempts are numbered after the copied ones.
    let last_copied = attempts(&target).await.iter().map(|a| a.id).max().unwrap();
    let run_id = RunId::from(run.report.run_id.as_str());
    let next = target
        .begin_attempt(&archived[0], &run_id, Utc::now())
        .await
        .expect("an attempt on the copy");
    assert!(next.0 > last_copied, "{next:?} after {last_copied}");

    let again = copy_ledger(&world.ledger, &target).await;
    assert!(
        matches!(again, Err(CopyError::TargetNotEmpty { table: "runs", rows }) if rows > 0),
        "{again:?}"
    );
    let one_call = TempLedger::new(kind).await;
    one_call
        .import(&[call("x", "x.wav", "2026-11-01 10:00:00")], Utc::now())
        .await
        .unwrap();
    assert!(matches!(
        copy_ledger(&world.ledger, &one_call).await,
        Err(CopyError::TargetNotEmpty {
            table: "calls",
            rows: 1
        })
    ));
    assert_eq!(
        table_rows(&one_call, Table::Calls).await.len(),
        1,
        "left alone"
    );
}
on_both_backends!(ledger_copy_from_sqlite_with_history_matches_table_by_table);

async fn a_run_never_takes_back_its_own_lapsed_lease(kind: BackendKind) {
    let ledger = TempLedger::new(kind).await;
    let now = Utc::now();
    ledger
        .import(&[call("mine", "m.wav", "2026-11-01 10:00:00")], now)
        .await
        .unwrap();
    let slice = Slice::default();
    let short = now + Duration::milliseconds(1);
    let first = crate::world::claim_one(&ledger, "run-a", &slice, now, now, short)
        .await
        .unwrap();
    assert!(first.is_some());
    // run-a's renewals failed and its lease ran out while its worker still transfers.
    let later = now + Duration::seconds(1);
    let long = later + Duration::seconds(60);
    let again = crate::world::claim_one(&ledger, "run-a", &slice, later, later, long)
        .await
        .unwrap();
    assert!(again.is_none(), "run-a's other workers leave it alone");
    let other = crate::world::claim_one(&ledger, "run-b", &slice, later, later, long)
        .await
        .unwrap();
    assert_eq!(
        other.map(|c| c.record.uuid.to_string()).as_deref(),
        Some("mine"),
        "another run takes it over"
    );
}
on_both_backends!(a_run_never_takes_back_its_own_lapsed_lease);

async fn a_claim_starts_and_counts_the_first_attempt_in_its_own_commit(kind: BackendKind) {
    let ledger = TempLedger::new(kind).await;
    let now = Utc::now();
    ledger
        .import(&[call("one", "one.wav", "2026-11-01 10:00:00")], now)
        .await
        .unwrap();
    let claim = claim_one(&ledger, "run-a", &Slice::default(), now, now, now)
        .await
        .unwrap()
        .expect("one due record");
    assert_eq!(claim.previous_attempts, 0);
    let row = ledger.get(&cu("one")).await.unwrap().unwrap();
    assert_eq!(row.attempts, 1, "counted with the claim");
    let started: Vec<(String, String)> = attempts(&ledger)
        .await
        .into_iter()
        .map(|a| (a.run_id, a.outcome))
        .collect();
    assert_eq!(started, [("run-a".to_owned(), "running".to_owned())]);
    // Its lease ran out at once: the next claimer closes it and starts its own.
    let later = now + Duration::seconds(1);
    let next = claim_one(&ledger, "run-b", &Slice::default(), later, later, later)
        .await
        .unwrap()
        .expect("the lapsed record");
    assert_eq!(next.previous_attempts, 1);
    assert_ne!(next.attempt, claim.attempt);
    let outcomes: Vec<String> = attempts(&ledger)
        .await
        .into_iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(outcomes, ["interrupted", "running"]);
}
on_both_backends!(a_claim_starts_and_counts_the_first_attempt_in_its_own_commit);

/// Leaves `uuid`, claimed by `run` from `slice`, pending for a later run (due in 5 minutes)
/// after attempts ending with `codes` (the claim's attempt first), the last its reason.
async fn leave_for_later(
    ledger: &Ledger,
    (run, slice): (&str, &Slice),
    uuid: &str,
    codes: &[&str],
    now: DateTime<Utc>,
) {
    let claim = claim_one(ledger, run, slice, now, now, now + Duration::minutes(1))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{uuid} is due"));
    assert_eq!(claim.record.uuid.as_str(), uuid);
    let mut id = claim.attempt;
    for (i, code) in codes.iter().enumerate() {
        let end = AttemptEnd {
            id,
            outcome: AttemptOutcome::Transient,
            error_code: Some(code),
            message: Some("failed"),
            bytes: 0,
        };
        if i + 1 < codes.len() {
            ledger.finish_attempt(&end, now).await.unwrap();
            id = ledger
                .begin_attempt(&cu(uuid), &run.into(), now)
                .await
                .unwrap();
        } else {
            let retry = Settlement::Retry {
                next_attempt_at: now + Duration::minutes(5),
                code,
                message: "failed",
            };
            let (uuid, run) = (cu(uuid), run.into());
            let held = ledger.settle(&uuid, &run, &retry, Some(&end), now).await;
            assert!(held.unwrap());
        }
    }
}

/// The outcomes of `uuid`'s attempts, in order.
async fn outcomes_of(ledger: &Ledger, uuid: &str) -> Vec<String> {
    attempts(ledger)
        .await
        .into_iter()
        .filter(|a| a.uuid == uuid)
        .map(|a| a.outcome)
        .collect()
}

/// Only the records a run left for the outage's reason get that run's attempts of it back:
/// not one left for another reason, nor one another run left for the same reason.
async fn attempts_a_run_spent_on_an_outage_are_given_back_to_the_records_left_for_it(
    kind: BackendKind,
) {
    let ledger = TempLedger::new(kind).await;
    let now = Utc::now().trunc_subsecs(3);
    let calls: Vec<CallRecord> = ["a", "b", "c", "d"]
        .iter()
        .enumerate()
        .map(|(i, u)| call(u, &format!("{u}.wav"), &format!("2026-11-01 10:00:0{i}")))
        .collect();
    ledger.import(&calls, now).await.unwrap();
    start_runs(&ledger, &["run-old", "run-a"], now).await;
    let (all, newest) = (
        Slice::default(),
        Slice {
            since: calls[3].call_start,
            ..Slice::default()
        },
    );
    // d: by another run, for the same reason; a: both of run-a's attempts on it; b: on
    // another; c: on it, then on another, which it was left for.
    leave_for_later(
        &ledger,
        ("run-old", &newest),
        "d",
        &["download_connect"],
        now,
    )
    .await;
    let connect = ["download_connect", "download_connect"];
    leave_for_later(&ledger, ("run-a", &all), "a", &connect, now).await;
    leave_for_later(&ledger, ("run-a", &all), "b", &["download_http_500"], now).await;
    let mixed = ["download_connect", "provider_ret_500"];
    leave_for_later(&ledger, ("run-a", &all), "c", &mixed, now).await;
    let later = now + Duration::seconds(3);

    let given = ledger
        .give_back_attempts(&"run-a".into(), "download_connect", later)
        .await
        .unwrap();

    assert_eq!(given, 1, "only a was left for that reason by run-a");
    let a = ledger.get(&cu("a")).await.unwrap().unwrap();
    assert_eq!((a.state, a.attempts), (RecordState::Pending, 0));
    assert_eq!(a.next_attempt_at, Some(later), "due at once");
    for (uuid, attempts) in [("b", 1), ("c", 2), ("d", 1)] {
        let r = ledger.get(&cu(uuid)).await.unwrap().unwrap();
        let unchanged = (attempts, Some(now + Duration::minutes(5)));
        assert_eq!((r.attempts, r.next_attempt_at), unchanged, "{uuid}");
    }
    assert_eq!(outcomes_of(&ledger, "a").await, ["stopped", "stopped"]);
    assert_eq!(outcomes_of(&ledger, "c").await, ["transient", "transient"]);
    assert_eq!(outcomes_of(&ledger, "d").await, ["transient"]);
    let run_a = "run-a".into();
    let again = ledger.give_back_attempts(&run_a, "download_connect", later);
    assert_eq!(again.await.unwrap(), 0, "nothing more to give back");
    assert_eq!(ledger.get(&cu("a")).await.unwrap().unwrap().attempts, 0);
}
on_both_backends!(attempts_a_run_spent_on_an_outage_are_given_back_to_the_records_left_for_it);
