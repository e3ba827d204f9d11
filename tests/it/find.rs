//! The ledger's search and access log on both backends: numbers by suffix across the caller,
//! callee and displayed number (the provider's own malformed example included), agents,
//! extensions, companies, date ranges, states and uuids; paging in call order with undated
//! calls last; a call's details; the access log appended, filtered, and refusing changes.

use callvault::callback::parse_record;
use callvault::domain::{CallRecord, RecordState};
use callvault::ledger::{
    AccessAction, AccessEntry, AccessQuery, BackendKind, CallCursor, CallQuery, PhoneNumber,
};
use callvault::timefmt::default_provider_tz;
use chrono::{Duration, Utc};
use sqlx::Connection;

use crate::world::{TempLedger, cu};

/// The provider document's own example, missing commas and all, with a recording.
const DOC_EXAMPLE: &str = r#"{
"callmethod": 3,
"starttime": "2018-03-14 12:18:21",
"answertime": "2018-03-14 12:18:25",
"endtime": "2018-03-14 12:18:35",
"duration": 14,
"billsec": 10,
"crmid": "2001",
"disnumber": "02566823420",
"destnumber": "015029913692",
"recordfilename": "20000013-20180314-doc.wav",
"companycode": 20000013,
"type": "callout",
"id": 982,
"extnumber": "7003"
"uuid": "cda5c6c4-0a17-11e8-b177-e7cbf2bd1f36"
"userkey":1
}"#;

/// A call with these numbers, agent and extension, started at `start` (provider time).
fn call_with(uuid: &str, start: &str, from: &str, to: &str, agent: &str, ext: &str) -> CallRecord {
    let json = serde_json::json!({
        "uuid": uuid, "companycode": if uuid.starts_with('b') { "B" } else { "A" },
        "recordfilename": format!("{uuid}.wav"), "starttime": start, "answertime": start,
        "endtime": start, "duration": 30, "billsec": 25, "type": "callout",
        "disnumber": from, "destnumber": to, "crmid": agent, "extnumber": ext,
    });
    parse_record(&json.to_string(), default_provider_tz()).expect("valid call")
}

fn uuids(found: &[callvault::ledger::CallSummary]) -> Vec<&str> {
    found.iter().map(|c| c.uuid.as_str()).collect()
}

async fn seeded(kind: BackendKind) -> TempLedger {
    let ledger = TempLedger::new(kind).await;
    let doc = parse_record(DOC_EXAMPLE, default_provider_tz()).expect("the document's example");
    let mut undated = call_with("u1", "", "0301111", "0302222", "2002", "7001");
    undated.call_start = None;
    ledger
        .import(
            &[
                call_with(
                    "a1",
                    "2026-03-02 09:00:00",
                    "02560000001",
                    "01710013692",
                    "2001",
                    "7001",
                ),
                call_with(
                    "a2",
                    "2026-03-01 09:00:00",
                    "02560000002",
                    "0170000000",
                    "2002",
                    "7002",
                ),
                call_with(
                    "b1",
                    "2026-04-05 09:00:00",
                    "+49 30 13692",
                    "0170000001",
                    "2001",
                    "7001",
                ),
                call_with(
                    "a3",
                    "2026-03-20 09:00:00",
                    "02560000003",
                    "0179999999",
                    "2003",
                    "7003",
                ),
                undated,
                doc,
            ],
            Utc::now(),
        )
        .await
        .expect("import");
    ledger
}

fn query() -> CallQuery {
    CallQuery::all(100)
}

async fn a_number_is_found_by_its_last_digits_in_any_of_its_fields(kind: BackendKind) {
    let ledger = seeded(kind).await;

    let by_suffix = ledger
        .find_calls(&CallQuery {
            number: PhoneNumber::parse("13692"),
            ..query()
        })
        .await
        .unwrap();
    // Sorted by call start: the 2018 document example, a1 (callee), b1 (caller shown).
    assert_eq!(
        uuids(&by_suffix),
        ["cda5c6c4-0a17-11e8-b177-e7cbf2bd1f36", "a1", "b1"]
    );
    assert_eq!(by_suffix[0].parties.callee.as_deref(), Some("015029913692"));
    assert_eq!(by_suffix[0].parties.crmid.as_deref(), Some("2001"));

    let exact = ledger
        .find_calls(&CallQuery {
            number: PhoneNumber::parse("015029913692"),
            ..query()
        })
        .await
        .unwrap();
    assert_eq!(uuids(&exact), ["cda5c6c4-0a17-11e8-b177-e7cbf2bd1f36"]);
    let formatted = ledger
        .find_calls(&CallQuery {
            number: PhoneNumber::parse("+49 30 13692"),
            ..query()
        })
        .await
        .unwrap();
    assert_eq!(uuids(&formatted), ["b1"], "digits only, as indexed");
    let nothing = ledger
        .find_calls(&CallQuery {
            number: PhoneNumber::parse("99913692"),
            ..query()
        })
        .await
        .unwrap();
    assert!(nothing.is_empty(), "{nothing:?}");
}
on_both_backends!(a_number_is_found_by_its_last_digits_in_any_of_its_fields);

async fn agents_extensions_companies_dates_states_and_uuids_narrow_a_search(kind: BackendKind) {
    let ledger = seeded(kind).await;
    let find = |q: CallQuery| {
        let ledger = ledger.ledger.clone();
        async move { ledger.find_calls(&q).await.unwrap() }
    };

    let agent = find(CallQuery {
        agent: Some("2001".into()),
        ..query()
    })
    .await;
    assert_eq!(
        uuids(&agent),
        ["cda5c6c4-0a17-11e8-b177-e7cbf2bd1f36", "a1", "b1"]
    );
    let ext = find(CallQuery {
        extension: Some("7001".into()),
        ..query()
    })
    .await;
    assert_eq!(uuids(&ext), ["a1", "b1", "u1"], "the undated call last");
    let agent_and_ext = find(CallQuery {
        agent: Some("2002".into()),
        extension: Some("7001".into()),
        ..query()
    })
    .await;
    assert_eq!(uuids(&agent_and_ext), ["u1"]);
    let company = find(CallQuery {
        company: Some("B".into()),
        ..query()
    })
    .await;
    assert_eq!(uuids(&company), ["b1"]);
    let march = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .with_timezone(&Utc)
    };
    let in_march = find(CallQuery {
        since: Some(march("2026-03-01T00:00:00Z")),
        until: Some(march("2026-04-01T00:00:00Z")),
        ..query()
    })
    .await;
    assert_eq!(uuids(&in_march), ["a2", "a1", "a3"], "no undated call");
    let number_in_march = find(CallQuery {
        number: PhoneNumber::parse("13692"),
        since: Some(march("2026-03-01T00:00:00Z")),
        until: Some(march("2026-04-01T00:00:00Z")),
        ..query()
    })
    .await;
    assert_eq!(uuids(&number_in_march), ["a1"]);
    let pending = find(CallQuery {
        states: vec![RecordState::Pending],
        uuids: vec![cu("a3"), cu("b1"), cu("nope")],
        ..query()
    })
    .await;
    assert_eq!(uuids(&pending), ["a3", "b1"]);
    let archived = find(CallQuery {
        states: vec![RecordState::Archived],
        ..query()
    })
    .await;
    assert!(archived.is_empty());
}
on_both_backends!(agents_extensions_companies_dates_states_and_uuids_narrow_a_search);

async fn pages_follow_call_start_and_end_with_the_undated_calls(kind: BackendKind) {
    let ledger = seeded(kind).await;
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = ledger
            .find_calls(&CallQuery {
                after: after.clone(),
                ..CallQuery::all(2)
            })
            .await
            .unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(CallCursor::after(last));
        // The cursor survives being printed and read back (`find --after`).
        let text = after.as_ref().map(ToString::to_string).unwrap();
        assert_eq!(CallCursor::parse(&text), after);
        seen.extend(page.iter().map(|c| c.uuid.as_str().to_owned()));
    }
    assert_eq!(
        seen,
        [
            "cda5c6c4-0a17-11e8-b177-e7cbf2bd1f36",
            "a2",
            "a1",
            "a3",
            "b1",
            "u1"
        ]
    );
}
on_both_backends!(pages_follow_call_start_and_end_with_the_undated_calls);

async fn a_changed_record_is_searched_by_its_new_numbers_and_a_call_shows_its_story(
    kind: BackendKind,
) {
    let ledger = seeded(kind).await;
    // A late recording brings a new record: the terms follow it.
    let mut unanswered = call_with(
        "late",
        "2026-05-01 09:00:00",
        "111",
        "0155554444",
        "2009",
        "7009",
    );
    unanswered.record_file = String::new();
    ledger.import(&[unanswered], Utc::now()).await.unwrap();
    assert_eq!(
        ledger
            .find_calls(&CallQuery {
                number: PhoneNumber::parse("4444"),
                ..query()
            })
            .await
            .unwrap()
            .len(),
        1
    );
    let answered = call_with(
        "late",
        "2026-05-01 09:00:00",
        "111",
        "0155557777",
        "2009",
        "7009",
    );
    ledger.import(&[answered], Utc::now()).await.unwrap();
    let by_new = ledger
        .find_calls(&CallQuery {
            number: PhoneNumber::parse("7777"),
            ..query()
        })
        .await
        .unwrap();
    assert_eq!(uuids(&by_new), ["late"]);
    assert!(
        ledger
            .find_calls(&CallQuery {
                number: PhoneNumber::parse("4444"),
                ..query()
            })
            .await
            .unwrap()
            .is_empty()
    );

    let claimed = crate::world::claim_one(
        &ledger,
        "run-1",
        &Default::default(),
        Utc::now() + Duration::days(1),
        Utc::now(),
        Utc::now() + Duration::minutes(5),
    )
    .await
    .unwrap()
    .expect("a claim");
    ledger
        .begin_attempt(&claimed.record.uuid, &"run-1".into(), Utc::now())
        .await
        .unwrap();
    let detail = ledger
        .call_detail(&claimed.record.uuid)
        .await
        .unwrap()
        .expect("the claimed call");
    assert_eq!(detail.summary.state, RecordState::InProgress);
    // The claim started the first attempt, begin_attempt the second.
    assert_eq!(detail.attempts.len(), 2);
    assert!(detail.attempts.iter().all(|a| a.run_id == "run-1"));
    assert_eq!(detail.attempts_made, 2);
    assert!(detail.manifests.is_empty());
    assert!(ledger.call_detail(&cu("nope")).await.unwrap().is_none());
    let doc = ledger
        .call_detail(&cu("cda5c6c4-0a17-11e8-b177-e7cbf2bd1f36"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(doc.summary.parties.extension.as_deref(), Some("7003"));
    assert_eq!(doc.raw_json, DOC_EXAMPLE);
    assert_eq!(doc.summary.company, "20000013");
}
on_both_backends!(a_changed_record_is_searched_by_its_new_numbers_and_a_call_shows_its_story);

fn entry(actor: &str, action: AccessAction, calls: &[&str]) -> AccessEntry {
    AccessEntry {
        at: Utc::now(),
        actor: actor.into(),
        action,
        source: "cli@test".into(),
        reason: Some(format!("{actor} asked")),
        query: Some("number=13692".into()),
        calls: calls.iter().map(|c| cu(c)).collect(),
    }
}

/// Runs `sql` on the ledger at `url` directly, as another program with the ledger's
/// credentials could.
async fn raw(kind: BackendKind, url: &str, sql: &str) -> Result<u64, String> {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match kind {
        BackendKind::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .map(|r| r.rows_affected())
                .map_err(|e| e.to_string())
        }
        BackendKind::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .map(|r| r.rows_affected())
                .map_err(|e| e.to_string())
        }
    }
}

async fn the_access_log_keeps_every_entry_and_refuses_changes(kind: BackendKind) {
    let ledger = TempLedger::new(kind).await;
    let before = Utc::now() - Duration::seconds(1);
    let first = ledger
        .log_access(&entry("ann", AccessAction::Find, &["c1", "c2"]))
        .await
        .unwrap();
    let second = ledger
        .log_access(&entry("bob", AccessAction::Get, &["c2"]))
        .await
        .unwrap();
    ledger
        .log_access(&entry("ann", AccessAction::Link, &[]))
        .await
        .unwrap();
    assert!(second > first);

    let all = ledger
        .access_entries(&AccessQuery {
            limit: 100,
            ..AccessQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(
        all[0].entry,
        entry_at(&all[0].entry, "ann", AccessAction::Find, &["c1", "c2"])
    );
    let c2: Vec<AccessAction> = ledger
        .access_entries(&AccessQuery {
            uuid: Some(cu("c2")),
            limit: 100,
            ..AccessQuery::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|e| e.entry.action)
        .collect();
    assert_eq!(c2, [AccessAction::Find, AccessAction::Get]);
    let ann: Vec<AccessAction> = ledger
        .access_entries(&AccessQuery {
            actor: Some("ann".into()),
            since: Some(before),
            limit: 100,
            ..AccessQuery::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|e| e.entry.action)
        .collect();
    assert_eq!(ann, [AccessAction::Find, AccessAction::Link]);
    let later = ledger
        .access_entries(&AccessQuery {
            since: Some(Utc::now() + Duration::hours(1)),
            limit: 100,
            ..AccessQuery::default()
        })
        .await
        .unwrap();
    assert!(later.is_empty());

    for sql in [
        "UPDATE access_log SET actor = 'mallory'",
        "DELETE FROM access_log",
        "DELETE FROM access_log_calls",
        "UPDATE access_log_calls SET call_uuid = 'other'",
    ] {
        let refused = raw(kind, &ledger.url, sql).await;
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("append-only")),
            "{sql}: {refused:?}"
        );
    }
    if kind == BackendKind::Postgres {
        let refused = raw(kind, &ledger.url, "TRUNCATE access_log_calls").await;
        assert!(refused.is_err(), "{refused:?}");
    }
    assert_eq!(
        ledger
            .access_entries(&AccessQuery {
                limit: 100,
                ..AccessQuery::default()
            })
            .await
            .unwrap()
            .len(),
        3
    );
}
on_both_backends!(the_access_log_keeps_every_entry_and_refuses_changes);

fn entry_at(read: &AccessEntry, actor: &str, action: AccessAction, calls: &[&str]) -> AccessEntry {
    AccessEntry {
        at: read.at,
        ..entry(actor, action, calls)
    }
}

async fn ledger_copy_carries_the_access_log_and_the_copy_is_searchable(kind: BackendKind) {
    let from = seeded(kind).await;
    from.log_access(&entry("ann", AccessAction::Get, &["a1"]))
        .await
        .unwrap();
    let other = match kind {
        BackendKind::Sqlite => BackendKind::Postgres,
        BackendKind::Postgres => BackendKind::Sqlite,
    };
    let to = TempLedger::new(other).await;
    callvault::ledger::copy_ledger(&from, &to).await.unwrap();
    let copied = to
        .access_entries(&AccessQuery {
            uuid: Some(cu("a1")),
            limit: 10,
            ..AccessQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(copied.len(), 1);
    assert_eq!(copied[0].entry.actor, "ann");
    let found = to
        .find_calls(&CallQuery {
            number: PhoneNumber::parse("13692"),
            ..query()
        })
        .await
        .unwrap();
    assert_eq!(found.len(), 3);
    // The copy numbers its own next entry after the copied ones.
    let next = to
        .log_access(&entry("bob", AccessAction::Find, &[]))
        .await
        .unwrap();
    assert!(next > copied[0].id);
}
on_both_backends!(ledger_copy_carries_the_access_log_and_the_copy_is_searchable);
