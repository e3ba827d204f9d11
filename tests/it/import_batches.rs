//! An import in large batches (each batch's rows one statement argument) leaves the ledger
//! exactly as importing the same records one by one does: the same outcomes, rows, per-state
//! counts, search terms and search results, on both backends. The records are as sloppy as
//! the provider's: numbers as strings, unanswered calls whose recording comes later, the same
//! callback twice, undated calls, odd characters in the raw JSON.

use callvault::domain::CallRecord;
use callvault::ledger::{BackendKind, CallQuery, ImportOutcome, Ledger, PhoneNumber, Table};
use callvault::timefmt::default_provider_tz;
use chrono::{Duration, SubsecRound, Utc};
use serde_json::{Value, json};

use crate::inspect::table_rows;
use crate::world::TempLedger;

/// Distinct calls; with the repeats below, a few thousand records.
const CALLS: usize = 2_400;
/// Records per batch: several batches, repeats inside a batch and across batches.
const BATCH: usize = 900;

/// Call `i`'s callback; `recording` false sends it unanswered.
fn callback(i: usize, recording: bool) -> Value {
    let sloppy = i.is_multiple_of(3);
    let num = |v: usize| {
        if sloppy {
            json!(v.to_string())
        } else {
            json!(v)
        }
    };
    let start = match i % 13 {
        0 => String::new(),
        _ => format!("2026-11-{:02} {:02}:{:02}:07", 1 + i % 28, i % 24, i % 60),
    };
    json!({
        "uuid": format!("{:08x}-0000-4000-8000-{i:012x}", (i * 2_654_435_761) % (1 << 32)),
        "companycode": num(20_000_013 + i % 2),
        "id": num(i + 1),
        "recordfilename": if recording { format!("rec-{i}.wav") } else { String::new() },
        "starttime": start,
        "billsec": num(if recording { 10 + i % 50 } else { 0 }),
        "destnumber": format!("01{:010}", (i * 104_729) % 10_000_000_000),
        "disnumber": format!("025{:08}", i * 7_919 % 100_000_000),
        "crmid": (2001 + i % 7).to_string(),
        "extnumber": (7001 + i % 5).to_string(),
        "type": "callout",
        "customuuid": format!("note \"{i}\" \u{e9}\\ {}", "\u{1F4DE}"),
    })
}

/// The records as a receiver would get them: every call once, every fifth first
/// unanswered and its recording later (sometimes in the same batch, sometimes in a later
/// one), every eleventh sent twice.
fn records() -> Vec<CallRecord> {
    let tz = default_provider_tz();
    let parse = |v: Value| callvault::callback::parse_record(&v.to_string(), tz).expect("valid");
    let mut out: Vec<CallRecord> = Vec::new();
    for i in 0..CALLS {
        out.push(parse(callback(i, i % 5 != 4)));
        if i % 11 == 0 {
            out.push(parse(callback(i, i % 5 != 4)));
        }
        if i % 5 == 4 && i >= 300 {
            let late = i - 300 + (i % 7) * 100;
            if late < CALLS {
                out.push(parse(callback(late, true)));
            }
        }
    }
    out
}

/// The searches compared: by number suffix, agent, extension, company, date range, all.
fn queries() -> Vec<CallQuery> {
    let all = CallQuery::all(callvault::ledger::MAX_PAGE);
    vec![
        CallQuery {
            number: PhoneNumber::parse("104729"),
            ..all.clone()
        },
        CallQuery {
            number: PhoneNumber::parse("07919"),
            ..all.clone()
        },
        CallQuery {
            agent: Some("2003".into()),
            ..all.clone()
        },
        CallQuery {
            extension: Some("7004".into()),
            company: Some("20000013".into()),
            ..all.clone()
        },
        CallQuery {
            since: callvault::timefmt::from_ledger("2026-11-05T00:00:00Z"),
            until: callvault::timefmt::from_ledger("2026-11-09T00:00:00Z"),
            ..all.clone()
        },
        all,
    ]
}

async fn found(ledger: &Ledger, query: &CallQuery) -> Vec<String> {
    let calls = ledger.find_calls(query).await.expect("search");
    calls.iter().map(|c| c.uuid.to_string()).collect()
}

async fn a_batched_import_leaves_the_ledger_as_one_by_one_does(kind: BackendKind) {
    let records = records();
    assert!(records.len() > 2 * BATCH, "several batches");
    let now = Utc::now().trunc_subsecs(3);
    let batched = TempLedger::new(kind).await;
    let single = TempLedger::new(kind).await;

    let mut batched_outcomes = Vec::new();
    for batch in records.chunks(BATCH) {
        batched_outcomes.extend(batched.import(batch, now).await.expect("batch import"));
    }
    let mut single_outcomes = Vec::new();
    for record in &records {
        let one = single.import(std::slice::from_ref(record), now).await;
        single_outcomes.extend(one.expect("single import"));
    }

    assert_eq!(batched_outcomes, single_outcomes);
    for outcome in [ImportOutcome::Known, ImportOutcome::RecordingAdded] {
        assert!(batched_outcomes.contains(&outcome), "some {outcome:?}");
    }
    let unindexed = batched.refresh_terms(u32::MAX).await.expect("refresh");
    assert_eq!(unindexed, 0, "each batch indexed its own calls for search");
    let rows = table_rows(&batched, Table::Calls).await;
    assert_eq!(rows.len(), CALLS);
    assert!(
        rows == table_rows(&single, Table::Calls).await,
        "the same rows"
    );
    let status = |l: &TempLedger| {
        let l = l.ledger.clone();
        async move { l.status(now, Duration::days(90)).await.expect("status") }
    };
    let (b, s) = (status(&batched).await, status(&single).await);
    assert_eq!((b.total, &b.counts), (s.total, &s.counts));
    assert!(b.counts["no_recording"] > 0 && b.counts["pending"] > 0);
    for query in queries() {
        let hits = found(&batched, &query).await;
        assert!(!hits.is_empty(), "{}", query.describe());
        assert_eq!(hits, found(&single, &query).await, "{}", query.describe());
    }
}
on_both_backends!(a_batched_import_leaves_the_ledger_as_one_by_one_does);
