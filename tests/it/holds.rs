//! Legal holds, erasure and the end of retention (issue 9, points 2, 3 and 6): against moto,
//! which enforces Object Lock (refused deletes, legal holds, versions), and against the
//! in-process s3s-fs store, which has no Object Lock (the ledger hold alone); and the
//! ledger's side of holds and tombstones on both backends.

use bytes::Bytes;
use callvault::archive::run_pass;
use callvault::audit::{Sample, VerifyOptions, verify_chain, verify_objects, write_manifests};
use callvault::domain::{CallRecord, RecordState, RunId};
use callvault::ledger::{
    BackendKind, CallQuery, ChainClaim, EraseRecorded, HoldId, Ledger, MediaNote, NewHold,
    ObjectHold, Settlement, Slice, Tombstone,
};
use callvault::retention::{
    Actor, EraseMode, KeptReason, Selection, erase, place_hold, release, retention_cutoff,
};
use callvault::store::{LockMode, RetainFor, RetentionPolicy, Store, StoreConfig};
use callvault::timefmt::default_provider_tz;
use chrono::{DateTime, Duration, SubsecRound, Utc};
use object_store::{GetOptions, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::moto::Moto;
use crate::world::{TEST_PART, TempLedger, World, call, claim_one, cu};

const BUCKET: &str = "held";

fn moto_store(moto: &Moto, retention: Option<RetentionPolicy>) -> Store {
    Store::open(&StoreConfig {
        s3: moto.options(),
        part_size: TEST_PART,
        retention,
        ..StoreConfig::new(format!("s3://{BUCKET}/calls"))
    })
    .expect("store")
}

fn actor() -> Actor {
    Actor::new("dpo@example").unwrap()
}

/// A call whose start is `start` (UTC), in the provider's zone-less format.
fn call_at(uuid: &str, file: &str, start: DateTime<Utc>) -> CallRecord {
    let local = start.with_timezone(&default_provider_tz());
    call(uuid, file, &local.format("%Y-%m-%d %H:%M:%S").to_string())
}

async fn import(world: &World, record: &CallRecord, size: u64) {
    world.sim.add_recording(&record.record_file, size);
    world
        .ledger
        .import(std::slice::from_ref(record), Utc::now())
        .await
        .expect("import");
}

fn by_uuid(uuid: &str) -> Selection {
    Selection::new(CallQuery {
        uuids: vec![cu(uuid)],
        ..CallQuery::default()
    })
}

/// The archived object's key of `uuid`.
async fn key_of(ledger: &Ledger, uuid: &str) -> String {
    let facts = ledger.call_facts(&[cu(uuid)]).await.unwrap();
    facts[0].object.as_ref().expect("archived").key.clone()
}

async fn version_bytes(store: &Store, key: &str, version: &str) -> Bytes {
    let opts = GetOptions {
        version: Some(version.to_owned()),
        ..Default::default()
    };
    store
        .object_store()
        .get_opts(&store.path(key).unwrap(), opts)
        .await
        .expect("read the version")
        .bytes()
        .await
        .unwrap()
}

/// Compliance retention: the stored recording cannot be deleted (a signed DeleteObject of
/// its version is refused) nor overwritten (a new PUT makes a new version; the locked one
/// stays and reads back byte for byte); its retain-until is the call's start plus 7 years;
/// and `erase` says it is locked until that date, deleting nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_locked_recording_cannot_be_deleted_or_overwritten() {
    let world = World::new().await;
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET, true).await;
    let policy = RetentionPolicy {
        mode: LockMode::Compliance,
        retain_for: RetainFor::Years(7),
    };
    let store = moto_store(&moto, Some(policy));
    let record = world.import_call("c-1", "c-1.wav", 30_000).await;
    let result = run_pass(
        &world.deps_with(world.ledger.clone(), store.clone()),
        &world.options(),
    )
    .await
    .expect("ledger");
    assert_eq!(result.report.archived, 1, "{:?}", result.report.stopped);
    let key = key_of(&world.ledger, "c-1").await;
    let versions = store
        .versions(&key)
        .await
        .unwrap()
        .expect("moto lists versions");
    assert_eq!(versions.len(), 1);
    let locked = versions[0].version_id.clone();
    let original = version_bytes(&store, &key, &locked).await;
    let want_until = RetainFor::Years(7)
        .until(record.call_start.unwrap())
        .unwrap();
    let lock = store
        .version_lock(&key, Some(&locked))
        .await
        .unwrap()
        .expect("the version exists")
        .retention
        .expect("locked");
    assert_eq!(lock.mode, LockMode::Compliance);
    assert_eq!(lock.until, want_until, "the call's start plus 7 years");

    let delete = store.delete_version(&key, Some(&locked)).await;
    assert!(
        matches!(delete, Err(callvault::store::StoreError::Refused { .. })),
        "a signed DeleteObject?versionId of a locked version is refused: {delete:?}"
    );
    store
        .object_store()
        .put(
            &store.path(&key).unwrap(),
            PutPayload::from_static(b"overwritten"),
        )
        .await
        .expect("a PUT over a locked object makes a new version");

    let after = store.versions(&key).await.unwrap().unwrap();
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.iter().any(|v| v.version_id == locked));
    let kept = version_bytes(&store, &key, &locked).await;
    assert_eq!(
        kept, original,
        "the locked version reads back byte for byte"
    );
    assert_eq!(
        hex::encode(Sha256::digest(&kept)),
        world.sim.expected_sha256("c-1.wav").unwrap(),
        "and is the provider's recording"
    );

    let report = erase(
        &world.ledger,
        &store,
        &by_uuid("c-1"),
        &EraseMode::Chosen {
            reason: "GDPR-7".into(),
        },
        &actor(),
        true,
        Utc::now(),
    )
    .await
    .unwrap();
    assert!(report.erased.is_empty());
    assert!(
        matches!(&report.kept[0].why, KeptReason::Locked { detail, .. } if detail.contains("compliance")),
        "{:?}",
        report.kept
    );
    assert_eq!(store.versions(&key).await.unwrap().unwrap().len(), 2);
    assert_eq!(world.count(RecordState::Archived).await, 1);
}

/// Hold, then erase: nothing erased, the hold named. Release, then erase once the call's
/// governance retention has lapsed: erased (every version of the recording and its
/// sidecar), a tombstone written, the row's personal data gone, the next manifest lists the
/// erasure, and `verify` and `verify --manifests` are clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_is_kept_and_a_released_one_erased_once_its_lock_lapses() {
    let world = World::new().await;
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET, true).await;
    let policy = RetentionPolicy {
        mode: LockMode::Governance,
        retain_for: RetainFor::Days(1),
    };
    let store = moto_store(&moto, Some(policy));
    // Locked until a few seconds from now.
    let start = Utc::now() - Duration::days(1) + Duration::seconds(6);
    let record = call_at("g-1", "g-1.wav", start);
    import(&world, &record, 20_000).await;
    let other = call_at("g-2", "g-2.wav", start);
    import(&world, &other, 10_000).await;
    let result = run_pass(
        &world.deps_with(world.ledger.clone(), store.clone()),
        &world.options(),
    )
    .await
    .expect("ledger");
    assert_eq!(result.report.archived, 2, "{:?}", result.report.stopped);
    assert_eq!(
        result.report.manifests.len(),
        1,
        "the first manifest lists both"
    );
    let key = key_of(&world.ledger, "g-1").await;
    let sidecar = store.sidecar_key(&key);
    let until = store
        .object_retention(&key)
        .await
        .unwrap()
        .expect("locked by the pass")
        .until;

    let held = place_hold(
        &world.ledger,
        &store,
        &by_uuid("g-1"),
        "CASE-42",
        &actor(),
        Utc::now(),
    )
    .await
    .unwrap();
    let hold = held.hold.clone().expect("a hold placed");
    assert_eq!(held.calls, vec![(cu("g-1"), ObjectHold::Set)]);
    assert!(
        store
            .version_lock(&key, None)
            .await
            .unwrap()
            .unwrap()
            .legal_hold,
        "the S3 legal hold is on the recording"
    );
    assert!(
        store
            .version_lock(&sidecar, None)
            .await
            .unwrap()
            .unwrap()
            .legal_hold
    );

    // Even once its lock has lapsed, a held call is not erased. Moto keeps the lock in real
    // time: wait for it (tests/FAULTS.md).
    while Utc::now() <= until {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mode = EraseMode::Chosen {
        reason: "GDPR-1".into(),
    };
    let refused = erase(
        &world.ledger,
        &store,
        &by_uuid("g-1"),
        &mode,
        &actor(),
        true,
        Utc::now(),
    )
    .await
    .unwrap();
    assert!(refused.erased.is_empty());
    assert_eq!(
        refused.kept[0].why,
        KeptReason::OnHold {
            holds: vec![(hold.clone(), "CASE-42".into())]
        }
    );
    assert!(refused.kept[0].why.to_string().contains(hold.as_str()));
    assert!(store.size_of(&key).await.unwrap().is_some());

    let released = release(
        &world.ledger,
        &store,
        &by_uuid("g-1"),
        None,
        "CASE-42 closed",
        &actor(),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(released.released, vec![(cu("g-1"), hold.clone())]);
    assert_eq!(released.objects_cleared, 1);
    assert!(
        !store
            .version_lock(&key, None)
            .await
            .unwrap()
            .unwrap()
            .legal_hold
    );

    let report = erase(
        &world.ledger,
        &store,
        &by_uuid("g-1"),
        &mode,
        &actor(),
        true,
        Utc::now(),
    )
    .await
    .unwrap();
    assert!(report.kept.is_empty(), "{:?}", report.kept);
    assert_eq!(report.erased.len(), 1);
    assert_eq!(
        report.erased[0].versions_deleted, 2,
        "the recording's and the sidecar's"
    );
    assert_eq!(store.versions(&key).await.unwrap().unwrap(), vec![]);
    assert_eq!(store.versions(&sidecar).await.unwrap().unwrap(), vec![]);
    let tombstone = world
        .ledger
        .tombstone(&cu("g-1"))
        .await
        .unwrap()
        .expect("tombstone");
    assert_eq!(tombstone.key, key);
    assert_eq!(tombstone.reason, "GDPR-1");
    assert_eq!(tombstone.erased_by, "dpo@example");
    assert_eq!(
        tombstone.sha256,
        world.sim.expected_sha256("g-1.wav").unwrap()
    );
    let row = world
        .ledger
        .call_facts(&[cu("g-1")])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(row.state, RecordState::Erased);
    assert_eq!(row.raw_json, "{}", "the record as received is gone");

    let written = write_manifests(
        &world.ledger,
        &store,
        &RunId::generate(),
        std::time::Duration::from_secs(30),
        &world.clock.clock(),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(written.len(), 1);
    assert_eq!(
        written[0].entries, 1,
        "the next manifest lists the erasure only"
    );
    let text = String::from_utf8(
        store
            .object_store()
            .get(&store.path(&written[0].key).unwrap())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    assert_eq!(line["erased"]["uuid"], "g-1");
    assert_eq!(line["erased"]["key"], key.as_str());
    assert_eq!(line["erased"]["reason"], "GDPR-1");
    assert!(text.starts_with("{\"format\":\"callvault-manifest/2\""));

    let chain = verify_chain(&store, &world.ledger, 4).await.unwrap();
    assert!(chain.problems.is_empty(), "{:?}", chain.problems);
    assert_eq!((chain.entries_erased, chain.erasures_listed), (1, 1));
    let objects = verify_objects(
        &world.ledger,
        &store,
        &VerifyOptions {
            slice: Slice::default(),
            sample: Sample::All,
            concurrency: 4,
        },
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(objects.problem_count(), 0, "{:?}", objects.problems);
    assert_eq!((objects.checked, objects.erased), (1, 1));
}

/// `expire --older-than 1y` as a dry run lists exactly the calls that started more than a
/// year ago, deletes nothing; a held one among them is listed as kept, its hold named. On a
/// store without Object Lock (s3s-fs) the hold is the ledger's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_dry_run_lists_exactly_the_calls_past_retention() {
    let world = World::new().await;
    let now = Utc::now();
    for (uuid, ago) in [
        ("e-old", Duration::days(800)),
        ("e-year", Duration::days(370)),
        // Within the ledger's day to spare, but a year from its start is still to come.
        ("e-edge", Duration::days(365) - Duration::hours(12)),
        ("e-recent", Duration::days(5)),
    ] {
        import(
            &world,
            &call_at(uuid, &format!("{uuid}.wav"), now - ago),
            5_000,
        )
        .await;
    }
    let result = world.run(&world.options()).await;
    assert_eq!(result.report.archived, 4);
    let held = place_hold(
        &world.ledger,
        &world.store,
        &by_uuid("e-old"),
        "LIT-9",
        &actor(),
        now,
    )
    .await
    .unwrap();
    assert_eq!(held.calls, vec![(cu("e-old"), ObjectHold::Unsupported)]);

    let selection = Selection::new(CallQuery {
        until: Some(retention_cutoff(RetainFor::Years(1), now).unwrap() + Duration::days(1)),
        ..CallQuery::default()
    });
    let report = erase(
        &world.ledger,
        &world.store,
        &selection,
        &EraseMode::Expire {
            older_than: RetainFor::Years(1),
        },
        &actor(),
        false,
        now,
    )
    .await
    .unwrap();

    assert!(report.dry_run);
    let would: Vec<&str> = report.erased.iter().map(|e| e.uuid.as_str()).collect();
    assert_eq!(would, ["e-year"]);
    assert_eq!(report.kept.len(), 1);
    assert_eq!(report.kept[0].uuid, cu("e-old"));
    assert!(report.kept[0].why.to_string().contains("LIT-9"));
    assert_eq!(
        report.not_due, 1,
        "e-edge is chosen by the ledger, then found not due"
    );
    assert_eq!(
        world.count(RecordState::Archived).await,
        4,
        "a dry run erases nothing"
    );
    assert_eq!(world.verify_archived().await, 4);
}

on_both_backends!(holds_and_tombstones_in_the_ledger);

async fn holds_and_tombstones_in_the_ledger(kind: BackendKind) {
    let ledger = TempLedger::new(kind).await;
    let now = Utc::now().trunc_subsecs(3);
    let calls = [
        call("t-1", "t-1.wav", "2026-11-01 10:00:00"),
        call("t-2", "t-2.wav", "2026-11-02 10:00:00"),
    ];
    ledger.import(&calls, now).await.unwrap();
    for c in &calls {
        let claim = claim_one(
            &ledger,
            "run-t",
            &Slice::default(),
            now,
            now,
            now + Duration::minutes(5),
        )
        .await
        .unwrap()
        .expect("due");
        let object = callvault::domain::ArchivedObject {
            key: format!("k/{}", claim.record.uuid),
            size: 10,
            sha256: "ab".repeat(32),
            content_type: None,
            etag: None,
            version: None,
            archived_at: now,
        };
        assert!(
            ledger
                .settle(
                    &claim.record.uuid,
                    &"run-t".into(),
                    &Settlement::Archived(&object, &MediaNote::default()),
                    None,
                    now
                )
                .await
                .unwrap(),
            "{}",
            c.uuid
        );
    }
    let one = [cu("t-1")];
    let facts = ledger.call_facts(&one).await.unwrap();
    assert_eq!(facts.len(), 1);
    assert_eq!(facts[0].state, RecordState::Archived);
    assert!(facts[0].holds.is_empty());
    assert_eq!(
        ledger
            .call_facts(&[cu("t-2"), cu("t-1"), cu("unknown")])
            .await
            .unwrap()
            .iter()
            .map(|c| c.uuid.as_str())
            .collect::<Vec<_>>(),
        ["t-1", "t-2"],
        "by uuid, unknown ones left out"
    );

    let id = HoldId::generate();
    let selection = serde_json::json!({"uuids": ["t-1"]});
    ledger
        .create_hold(&NewHold {
            id: &id,
            reason: "CASE-1",
            placed_by: "legal",
            placed_at: now,
            selection: &selection,
        })
        .await
        .unwrap();
    for _ in 0..2 {
        ledger
            .add_held_calls(&id, &[(cu("t-1"), ObjectHold::Unsupported)])
            .await
            .unwrap();
    }
    let active = ledger.holds(false).await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(
        (
            active[0].calls_held,
            active[0].ledger_only,
            active[0].reason.as_str(),
            active[0].placed_by.as_str()
        ),
        (1, 1, "CASE-1", "legal")
    );
    assert_eq!(active[0].selection, selection);
    assert_eq!(
        ledger.call_facts(&one).await.unwrap()[0].holds,
        vec![id.clone()]
    );

    let tombstone = Tombstone {
        uuid: cu("t-1"),
        key: "k/t-1".into(),
        sidecar_key: "k/t-1.json".into(),
        sha256: "ab".repeat(32),
        size: 10,
        archived_at: Some(now),
        erased_at: now,
        reason: "GDPR-2".into(),
        erased_by: "dpo".into(),
        versions_deleted: 2,
        manifest_seq: None,
    };
    assert_eq!(
        ledger.record_erasure(&tombstone).await.unwrap(),
        EraseRecorded::OnHold {
            holds: vec![id.clone()]
        },
        "a held call is never recorded erased"
    );
    assert_eq!(ledger.tombstone(&cu("t-1")).await.unwrap(), None);

    let released = ledger
        .release_calls(&[cu("t-1"), cu("t-2")], None, "legal", "closed", now)
        .await
        .unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(
        (
            released[0].uuid.as_str(),
            &released[0].hold,
            released[0].still_held
        ),
        ("t-1", &id, false)
    );
    assert!(ledger.holds(false).await.unwrap().is_empty());
    assert_eq!(ledger.holds(true).await.unwrap()[0].calls_released, 1);

    assert_eq!(
        ledger.record_erasure(&tombstone).await.unwrap(),
        EraseRecorded::Erased
    );
    assert_eq!(
        ledger.record_erasure(&tombstone).await.unwrap(),
        EraseRecorded::NotArchived {
            state: Some(RecordState::Erased)
        }
    );
    let erased = ledger.call_facts(&one).await.unwrap().remove(0);
    assert_eq!(
        (
            erased.state,
            erased.raw_json.as_str(),
            erased.object.is_none()
        ),
        (RecordState::Erased, "{}", true)
    );
    let row = ledger.get(&cu("t-1")).await.unwrap().unwrap();
    assert_eq!(row.record.record_file, "", "personal fields blanked");
    assert_eq!(
        ledger.tombstone(&cu("t-1")).await.unwrap(),
        Some(tombstone.clone())
    );
    assert_eq!(ledger.erasure_counts().await.unwrap(), (1, 1));

    let owner = RunId::from("run-m");
    let claim = ledger
        .claim_manifest(
            &owner,
            &|seq| format!("manifests/{seq:010}.jsonl"),
            now,
            now + Duration::minutes(1),
        )
        .await
        .unwrap();
    let ChainClaim::Claimed(claim) = claim else {
        panic!("a manifest to write: {claim:?}")
    };
    assert_eq!(claim.entries, 2, "t-2 archived and t-1's erasure");
    let listed = ledger.manifest_erasures(claim.seq, None, 10).await.unwrap();
    assert_eq!(
        listed,
        vec![Tombstone {
            manifest_seq: Some(claim.seq),
            ..tombstone
        }]
    );
    let entries = ledger.manifest_entries(claim.seq, None, 10).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].uuid, cu("t-2"));
    assert_eq!(ledger.erasure_counts().await.unwrap(), (1, 0));
    assert_eq!(
        ledger.uuids_in_state(RecordState::Erased).await.unwrap(),
        vec![cu("t-1")]
    );
}

/// `verify` with a retention policy reads each recording's and sidecar's lock: clean when it
/// is the policy's; reported when it is of the other mode, shorter than the policy asks, or
/// missing (a recording archived without retention).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_locks_missing_of_another_mode_or_too_short() {
    let world = World::new().await;
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET, true).await;
    let seven_years = RetentionPolicy {
        mode: LockMode::Governance,
        retain_for: RetainFor::Years(7),
    };
    world.import_call("v-locked", "v-locked.wav", 8_000).await;
    let locked = run_pass(
        &world.deps_with(world.ledger.clone(), moto_store(&moto, Some(seven_years))),
        &world.options(),
    )
    .await
    .expect("ledger");
    assert_eq!(locked.report.archived, 1, "{:?}", locked.report.stopped);
    world.import_call("v-bare", "v-bare.wav", 8_000).await;
    let bare = run_pass(
        &world.deps_with(world.ledger.clone(), moto_store(&moto, None)),
        &world.options(),
    )
    .await
    .expect("ledger");
    assert_eq!(bare.report.archived, 1, "{:?}", bare.report.stopped);

    let verify = async |policy: RetentionPolicy| {
        verify_objects(
            &world.ledger,
            &moto_store(&moto, Some(policy)),
            &VerifyOptions {
                slice: Slice::default(),
                sample: Sample::All,
                concurrency: 4,
            },
            |_| {},
        )
        .await
        .unwrap()
    };
    let short = |report: &callvault::audit::ObjectsReport| -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = report
            .problems
            .iter()
            .filter_map(|p| match p {
                callvault::audit::ObjectProblem::LockShort { uuid, key, detail } => {
                    Some((format!("{uuid} {}", key.ends_with(".json")), detail.clone()))
                }
                _ => None,
            })
            .collect();
        found.sort();
        found
    };

    let same = verify(seven_years).await;
    assert_eq!(same.ok, 2, "both read back");
    let found = short(&same);
    assert_eq!(
        found.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>(),
        ["v-bare false", "v-bare true"],
        "only the recording archived without retention, and its sidecar: {found:?}"
    );
    assert!(
        found.iter().all(|(_, d)| d.starts_with("no retention")),
        "{found:?}"
    );
    assert_eq!(same.lock_short, 2);

    let other_mode = verify(RetentionPolicy {
        mode: LockMode::Compliance,
        ..seven_years
    })
    .await;
    let found = short(&other_mode);
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(
        found
            .iter()
            .filter(|(w, _)| w.starts_with("v-locked"))
            .all(|(_, d)| d.contains("mode governance")),
        "{found:?}"
    );

    let longer = verify(RetentionPolicy {
        retain_for: RetainFor::Years(8),
        ..seven_years
    })
    .await;
    let found = short(&longer);
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(
        found
            .iter()
            .filter(|(w, _)| w.starts_with("v-locked"))
            .all(|(_, d)| d.starts_with("retained until")),
        "{found:?}"
    );
    assert_eq!(longer.problem_count(), 4);
}
