//! Accounts in the ledger (issue 18, point 2), on both backends: a call is (account, uuid),
//! so the same uuid in two accounts is two calls with their own states, attempts, claims,
//! manifests, holds and search; and a ledger made by the release before accounts comes over
//! with every row in the account `default`.

use callvault::accounts::AccountName;
use callvault::domain::{ArchivedObject, AttemptOutcome, RecordState};
use callvault::ledger::{
    AttemptEnd, BackendKind, CallQuery, ChainClaim, HoldId, ImportOutcome, Ledger, MediaNote,
    NewHold, ObjectHold, Settlement, Slice, Table, copy_ledger, table_checksum,
};
use chrono::{DateTime, Duration, Utc};

use crate::world::{TempLedger, call, claim_one, cu, fresh_ledger_url};

fn account(name: &str) -> AccountName {
    AccountName::parse(name).unwrap()
}

fn object(key: &str, at: DateTime<Utc>) -> ArchivedObject {
    ArchivedObject {
        key: key.into(),
        size: 1,
        sha256: "0".repeat(64),
        content_type: None,
        etag: None,
        version: None,
        archived_at: at,
    }
}

/// Claims `uuid` in `ledger`'s account for run `owner` and settles it archived under `key`.
async fn archive_one(ledger: &Ledger, owner: &str, key: &str, now: DateTime<Utc>) {
    let claim = claim_one(
        ledger,
        owner,
        &Slice::default(),
        now,
        now,
        now + Duration::minutes(5),
    )
    .await
    .unwrap()
    .expect("a due call");
    let end = AttemptEnd {
        id: claim.attempt,
        outcome: AttemptOutcome::Archived,
        error_code: None,
        message: None,
        bytes: 1,
    };
    let object = object(key, now);
    let held = ledger
        .settle(
            &claim.record.uuid,
            &owner.into(),
            &Settlement::Archived(&object, &MediaNote::default()),
            Some(&end),
            now,
        )
        .await
        .unwrap();
    assert!(held, "{owner} held its claim");
}

async fn the_same_uuid_in_two_accounts_is_two_calls(kind: BackendKind) {
    let ledger = TempLedger::new(kind).await;
    let (acme, globex) = (
        ledger.scoped(&account("acme")),
        ledger.scoped(&account("globex")),
    );
    let now = Utc::now();
    let record = call("same-uuid", "same.wav", "2026-11-01 10:00:00");
    for side in [&acme, &globex] {
        assert_eq!(
            side.import(std::slice::from_ref(&record), now)
                .await
                .unwrap(),
            [ImportOutcome::New],
            "each account learns of its own call"
        );
    }
    assert!(ledger.get(&cu("same-uuid")).await.unwrap().is_none());
    for side in [&acme, &globex] {
        let status = side.status(now, Duration::days(90)).await.unwrap();
        assert_eq!(status.counts["pending"], 1);
    }
    let default = ledger.status(now, Duration::days(90)).await.unwrap();
    assert_eq!(default.total, 0, "neither call is the default account's");

    // Acme's pass claims and archives its call; Globex's stays pending, unclaimed.
    archive_one(&acme, "run-acme", "acme/same.wav", now).await;
    let acme_row = acme.get(&cu("same-uuid")).await.unwrap().unwrap();
    let globex_row = globex.get(&cu("same-uuid")).await.unwrap().unwrap();
    assert_eq!(acme_row.state, RecordState::Archived);
    assert_eq!(acme_row.object_key.as_deref(), Some("acme/same.wav"));
    assert_eq!(globex_row.state, RecordState::Pending);
    assert_eq!(globex_row.attempts, 0, "acme's attempt is not globex's");
    let acme_detail = acme.call_detail(&cu("same-uuid")).await.unwrap().unwrap();
    assert_eq!(acme_detail.attempts.len(), 1);
    let globex_detail = globex.call_detail(&cu("same-uuid")).await.unwrap().unwrap();
    assert!(globex_detail.attempts.is_empty());

    // Globex archives its own: a second object, a second chain.
    archive_one(&globex, "run-globex", "globex/same.wav", now).await;
    let globex_row = globex.get(&cu("same-uuid")).await.unwrap().unwrap();
    assert_eq!(globex_row.object_key.as_deref(), Some("globex/same.wav"));
    for (side, prefix) in [(&acme, "acme"), (&globex, "globex")] {
        let claim = side
            .claim_manifest(
                &"run-m".into(),
                &|seq| format!("{prefix}/manifests/{seq}.jsonl"),
                now,
                now + Duration::minutes(5),
            )
            .await
            .unwrap();
        let ChainClaim::Claimed(claim) = claim else {
            panic!("{prefix}: {claim:?}")
        };
        assert_eq!(claim.seq, 1, "{prefix} starts its own chain");
        assert_eq!(claim.entries, 1, "{prefix}'s manifest lists its call only");
        assert!(claim.previous.is_none());
    }

    // Search, holds and the access log see one account's rows.
    let found = acme.find_calls(&CallQuery::all(50)).await.unwrap();
    assert_eq!(found.len(), 1);
    let hold = HoldId::generate();
    let selection = serde_json::json!({"uuids": ["same-uuid"]});
    acme.create_hold(&NewHold {
        id: &hold,
        reason: "dispute",
        placed_by: "tester",
        placed_at: now,
        selection: &selection,
    })
    .await
    .unwrap();
    acme.add_held_calls(&hold, &[(cu("same-uuid"), ObjectHold::Unsupported)])
        .await
        .unwrap();
    let acme_facts = acme.call_facts(&[cu("same-uuid")]).await.unwrap();
    let globex_facts = globex.call_facts(&[cu("same-uuid")]).await.unwrap();
    assert_eq!(acme_facts[0].holds, [hold]);
    assert!(
        globex_facts[0].holds.is_empty(),
        "acme's hold is not on globex's call"
    );
    assert_eq!(acme.holds(false).await.unwrap().len(), 1);
    assert!(globex.holds(false).await.unwrap().is_empty());
}

on_both_backends!(the_same_uuid_in_two_accounts_is_two_calls);

/// The last migration of the release before accounts.
const BEFORE_ACCOUNTS: i64 = 20261206120000;

/// Rows as that release wrote them: a run, a pending call, an archived call listed in a
/// written manifest with its attempt, a hold on it, and an access-log entry. Times as text,
/// which both engines read (SQLite keeps this text; PostgreSQL casts it).
const OLD_ROWS: &[&str] = &[
    "INSERT INTO runs (id, started_at, status, host, pid, options)
     VALUES ('run-old', '2026-11-01T10:00:00.000Z', 'running', 'h', 1, '{}')",
    "INSERT INTO calls (uuid, company_code, record_file, call_start, billsec, raw_json, state,
                        attempts, next_attempt_at, imported_at, updated_at)
     VALUES ('old-pending', '20000013', 'p.wav', '2026-11-01T10:00:00.000Z', 25,
             '{\"uuid\":\"old-pending\",\"disnumber\":\"02566823420\"}', 'pending', 0,
             '2026-11-01T10:00:00.000Z', '2026-11-01T10:00:00.000Z', '2026-11-01T10:00:00.000Z')",
    "INSERT INTO calls (uuid, company_code, record_file, call_start, billsec, raw_json, state,
                        attempts, next_attempt_at, imported_at, updated_at, object_key,
                        size_bytes, sha256, archived_at, manifest_seq)
     VALUES ('old-archived', '20000013', 'a.wav', '2026-11-01T09:00:00.000Z', 25,
             '{\"uuid\":\"old-archived\"}', 'archived', 1,
             '2026-11-01T10:00:00.000Z', '2026-11-01T10:00:00.000Z', '2026-11-01T10:00:00.000Z',
             'calls/a.wav', 10,
             '0000000000000000000000000000000000000000000000000000000000000000',
             '2026-11-01T10:00:00.000Z', 1)",
    "INSERT INTO attempts (call_uuid, run_id, started_at, finished_at, outcome, bytes)
     VALUES ('old-archived', 'run-old', '2026-11-01T10:00:00.000Z',
             '2026-11-01T10:00:01.000Z', 'archived', 10)",
    "INSERT INTO manifests (seq, object_key, state, run_id, entries, sha256, size_bytes,
                            created_at, written_at)
     VALUES (1, 'manifests/000001.jsonl', 'written', 'run-old', 1,
             '1111111111111111111111111111111111111111111111111111111111111111', 100,
             '2026-11-01T10:00:00.000Z', '2026-11-01T10:00:00.000Z')",
    "INSERT INTO holds (id, reason, placed_by, placed_at, selection)
     VALUES ('hold-0123456789abcdef', 'dispute', 'officer', '2026-11-01T10:00:00.000Z', '{}')",
    "INSERT INTO held_calls (id, hold_id, call_uuid, object_hold)
     VALUES ('hold-0123456789abcdef:old-archived', 'hold-0123456789abcdef', 'old-archived',
             'unsupported')",
    "INSERT INTO access_log (at, actor, action, source, calls)
     VALUES ('2026-11-01T10:00:00.000Z', 'officer', 'find', 'cli', 1)",
];

/// A ledger at `url` as the release before accounts left it, holding [`OLD_ROWS`].
async fn ledger_of_the_previous_release(kind: BackendKind, url: &str) {
    crate::world::ledger_migrated_to(kind, url, BEFORE_ACCOUNTS, OLD_ROWS).await;
}

async fn a_ledger_of_the_previous_release_comes_over_as_the_default_account(kind: BackendKind) {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_ledger_url(kind, dir.path()).await;
    ledger_of_the_previous_release(kind, &url).await;

    let ledger = Ledger::open(&url).await.expect("the upgrade applies");
    assert_eq!(ledger.account().as_str(), "default");
    let now = Utc::now();
    let status = ledger.status(now, Duration::days(90)).await.unwrap();
    assert_eq!(status.counts["pending"], 1);
    assert_eq!(status.counts["archived"], 1);
    let archived = ledger.get(&cu("old-archived")).await.unwrap().unwrap();
    assert_eq!(archived.manifest_seq, Some(1));
    assert_eq!(archived.object_key.as_deref(), Some("calls/a.wav"));
    let detail = ledger
        .call_detail(&cu("old-archived"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.attempts.len(), 1);
    assert_eq!(detail.manifests.len(), 1);
    assert_eq!(ledger.manifests().await.unwrap().len(), 1);
    let holds = ledger.holds(false).await.unwrap();
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].calls_held, 1);
    let found = ledger.find_calls(&CallQuery::all(50)).await.unwrap();
    assert_eq!(
        found.len(),
        2,
        "the queued search terms are indexed after the upgrade"
    );
    let logged = ledger
        .access_entries(&callvault::ledger::AccessQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(logged.len(), 1);

    // The chain goes on from the old head; another account starts empty, with the same
    // uuids free to be its own calls.
    let acme = ledger.scoped(&account("acme"));
    assert!(acme.get(&cu("old-pending")).await.unwrap().is_none());
    let acme_status = acme.status(now, Duration::days(90)).await.unwrap();
    assert_eq!(acme_status.counts["pending"], 0);
    let record = call("old-pending", "p.wav", "2026-11-01 10:00:00");
    assert_eq!(
        acme.import(&[record], now).await.unwrap(),
        [ImportOutcome::New]
    );
    archive_one(&ledger, "run-new", "calls/p.wav", now).await;
    let claim = ledger
        .claim_manifest(
            &"run-new".into(),
            &|seq| format!("manifests/{seq:06}.jsonl"),
            now,
            now + Duration::minutes(5),
        )
        .await
        .unwrap();
    let ChainClaim::Claimed(claim) = claim else {
        panic!("{claim:?}")
    };
    assert_eq!(claim.seq, 2);
    assert_eq!(
        claim.previous.map(|p| p.key),
        Some("manifests/000001.jsonl".to_owned())
    );
}

on_both_backends!(a_ledger_of_the_previous_release_comes_over_as_the_default_account);

/// `ledger copy` keeps each row's account: the same uuid in two accounts arrives as two
/// calls, each with its own state and manifest, on the other backend and back.
async fn a_copy_keeps_every_rows_account(kind: BackendKind) {
    let source = TempLedger::new(kind).await;
    let now = Utc::now();
    let record = call("same-uuid", "same.wav", "2026-11-01 10:00:00");
    for name in ["acme", "globex"] {
        let side = source.scoped(&account(name));
        side.import(std::slice::from_ref(&record), now)
            .await
            .unwrap();
    }
    let acme = source.scoped(&account("acme"));
    archive_one(&acme, "run-acme", "acme/same.wav", now).await;
    let other = match kind {
        BackendKind::Sqlite => BackendKind::Postgres,
        BackendKind::Postgres => BackendKind::Sqlite,
    };
    let target = TempLedger::new(other).await;

    let report = copy_ledger(&source, &target).await.expect("the copy");

    assert!(report.all_match(), "{report:?}");
    let copied = |name: &str| target.scoped(&account(name));
    let acme_row = copied("acme").get(&cu("same-uuid")).await.unwrap().unwrap();
    let globex_row = copied("globex")
        .get(&cu("same-uuid"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acme_row.state, RecordState::Archived);
    assert_eq!(globex_row.state, RecordState::Pending);
    let acme_status = copied("acme")
        .status(now, Duration::days(90))
        .await
        .unwrap();
    assert_eq!(
        acme_status.counts["archived"], 1,
        "counts per account are kept"
    );
    assert_eq!(acme_status.counts["pending"], 0);
    for table in Table::ALL {
        assert_eq!(
            table_checksum(&target, table).await.unwrap(),
            table_checksum(&source, table).await.unwrap(),
            "{}",
            table.name()
        );
    }
}

on_both_backends!(a_copy_keeps_every_rows_account);
