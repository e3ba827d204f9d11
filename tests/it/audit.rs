//! The audit trail: objects read back against the ledger, sidecars beside recordings, the
//! manifest chain across runs (killed ones included), and failed records sent round again.

use bytes::Bytes;
use callvault::audit::{ManifestHeader, ObjectProblem, Sample, VerifyOptions, verify_objects};
use callvault::domain::{ArchivedObject, RecordState};
use callvault::ledger::{ChainClaim, Ledger, MediaNote, Settlement, Slice};
use callvault::store::{Store, StoreConfig, UploadMeta};
use object_store::{ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::world::{TEST_PART, World, call};

fn all(concurrency: usize) -> VerifyOptions {
    VerifyOptions {
        slice: Slice::default(),
        sample: Sample::All,
        concurrency,
    }
}

pub async fn bytes_of(store: &Store, key: &str) -> Option<Vec<u8>> {
    match store.object_store().get(&store.path(key).unwrap()).await {
        Ok(got) => Some(got.bytes().await.unwrap().to_vec()),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("reading {key}: {e}"),
    }
}

/// The lines of the manifest at `key` after its header, as stored (the log's leaves).
pub async fn manifest_leaves(store: &Store, key: &str) -> Vec<Vec<u8>> {
    let bytes = bytes_of(store, key).await.expect("manifest");
    let lines: Vec<&[u8]> = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let (_header, leaves) = lines.split_first().expect("a manifest has a header");
    leaves.iter().map(|l| l.to_vec()).collect()
}

pub async fn put(store: &Store, key: &str, bytes: Vec<u8>) {
    store
        .object_store()
        .put(&store.path(key).unwrap(), PutPayload::from(bytes))
        .await
        .unwrap();
}

pub async fn delete(store: &Store, key: &str) {
    store
        .object_store()
        .delete(&store.path(key).unwrap())
        .await
        .unwrap();
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn file_store(dir: &std::path::Path) -> Store {
    let url = url::Url::from_directory_path(dir).unwrap();
    Store::open(&StoreConfig {
        part_size: TEST_PART,
        ..StoreConfig::new(url.as_str())
    })
    .unwrap()
}

/// Archives one call the way a run does, then "dies" before any manifest: imports it,
/// claims it, stores `body` and marks it archived; the call and its object.
pub async fn archive_without_manifest(
    world: &World,
    store: &Store,
    uuid: &str,
    body: &[u8],
) -> (callvault::domain::CallRecord, ArchivedObject) {
    let record = call(uuid, &format!("{uuid}.wav"), "2026-11-02 09:00:00");
    world
        .ledger
        .import(std::slice::from_ref(&record), chrono::Utc::now())
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let claim = crate::world::claim_one(
        &world.ledger,
        "run-killed",
        &Slice::default(),
        now,
        now,
        now + chrono::Duration::seconds(30),
    )
    .await
    .unwrap()
    .expect("the call is due");
    assert_eq!(claim.record.uuid.as_str(), uuid, "nothing else was pending");
    let key = world.deps().keys.render(&record).unwrap();
    let meta = UploadMeta {
        uuid: uuid.into(),
        company_code: record.company_code.clone(),
        call_start: record.call_start,
        content_type: Some("audio/wav".into()),
        size_hint: None,
    };
    let chunks = futures::stream::iter(vec![Ok(Bytes::copy_from_slice(body))]);
    let uploaded = store
        .upload(&key, chunks, &meta, &CancellationToken::new())
        .await
        .unwrap();
    let object = ArchivedObject {
        key,
        size: uploaded.size,
        sha256: uploaded.sha256,
        content_type: meta.content_type,
        etag: uploaded.etag,
        version: uploaded.version,
        archived_at: chrono::Utc::now(),
    };
    let settled = world
        .ledger
        .settle(
            &crate::world::cu(uuid),
            &"run-killed".into(),
            &Settlement::Archived(&object, &MediaNote::default()),
            None,
            now,
        )
        .await
        .unwrap();
    assert!(settled);
    (record, object)
}

#[tokio::test]
async fn verify_finds_objects_changed_or_deleted_behind_the_ledgers_back_in_s3() {
    let world = World::new().await;
    for i in 0..5 {
        world
            .import_call(&format!("v-{i}"), &format!("v-{i}.mp3"), 3000 + i)
            .await;
    }
    assert_eq!(world.run(&world.options()).await.report.archived, 5);

    let clean = verify_objects(&world.ledger, &world.store, &all(3), |_| {})
        .await
        .unwrap();
    assert_eq!((clean.checked, clean.ok, clean.problem_count()), (5, 5, 0));

    let changed = world
        .ledger
        .get(&crate::world::cu("v-1"))
        .await
        .unwrap()
        .unwrap();
    let deleted = world
        .ledger
        .get(&crate::world::cu("v-3"))
        .await
        .unwrap()
        .unwrap();
    let changed_key = changed.object_key.clone().unwrap();
    let deleted_key = deleted.object_key.clone().unwrap();
    let mut tampered = bytes_of(&world.store, &changed_key).await.unwrap();
    tampered[100] ^= 0xff;
    put(&world.store, &changed_key, tampered.clone()).await;
    delete(&world.store, &deleted_key).await;

    let mut seen = Vec::new();
    let report = verify_objects(&world.ledger, &world.store, &all(3), |p| {
        seen.push(p.clone())
    })
    .await
    .unwrap();

    assert_eq!(
        (report.checked, report.ok, report.changed, report.missing),
        (5, 3, 1, 1)
    );
    assert_eq!(seen, report.problems, "each problem is reported as found");
    assert!(report.problems.contains(&ObjectProblem::Changed {
        uuid: "v-1".into(),
        key: changed_key,
        expected_sha256: changed.sha256.clone().unwrap(),
        expected_size: changed.size_bytes.unwrap() as u64,
        found_sha256: sha256(&tampered),
        found_size: tampered.len() as u64,
    }));
    assert!(report.problems.contains(&ObjectProblem::Missing {
        uuid: "v-3".into(),
        key: deleted_key,
        expected_sha256: deleted.sha256.clone().unwrap(),
        expected_size: deleted.size_bytes.unwrap() as u64,
    }));
    let ledger = &world.ledger;
    let result = async |uuid: &str| {
        ledger
            .get(&crate::world::cu(uuid))
            .await
            .unwrap()
            .unwrap()
            .last_verify_result
    };
    assert_eq!(result("v-1").await.as_deref(), Some("changed"));
    assert_eq!(result("v-3").await.as_deref(), Some("missing"));
    assert_eq!(result("v-0").await.as_deref(), Some("ok"));

    for (sample, expected) in [(Sample::Count(2), 2), (Sample::Percent(50.0), 3)] {
        let opts = VerifyOptions { sample, ..all(2) };
        let sampled = verify_objects(&world.ledger, &world.store, &opts, |_| {})
            .await
            .unwrap();
        assert_eq!(sampled.checked, expected, "{sample:?}");
    }
    let slice = VerifyOptions {
        slice: Slice {
            company: Some("another-company".into()),
            ..Slice::default()
        },
        ..all(2)
    };
    let none = verify_objects(&world.ledger, &world.store, &slice, |_| {})
        .await
        .unwrap();
    assert_eq!(none.checked, 0);
}

#[tokio::test]
async fn a_file_store_gets_sidecars_instead_of_metadata_files_and_verify_reads_it_back() {
    let world = World::new().await;
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    for i in 0..3 {
        world
            .import_call(&format!("f-{i}"), &format!("f-{i}.wav"), 2500)
            .await;
    }
    let deps = world.deps_with(world.ledger.clone(), store.clone());
    let result = callvault::archive::run_pass(&deps, &world.options())
        .await
        .unwrap();
    assert_eq!(result.report.archived, 3);
    let files = crate::world::files_under(dir.path());
    let named = |suffix: &str| {
        files
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .count()
    };
    assert_eq!((named(".wav"), named(".wav.json")), (3, 3));
    assert_eq!(named(".metadata.json"), 0, "the sidecar replaces it");
    assert!(dir.path().join("manifests/0000000001.jsonl").is_file());
    assert_eq!(
        verify_objects(&world.ledger, &store, &all(2), |_| {})
            .await
            .unwrap()
            .ok,
        3
    );

    let row = world
        .ledger
        .get(&crate::world::cu("f-2"))
        .await
        .unwrap()
        .unwrap();
    let path = dir.path().join(row.object_key.unwrap());
    std::fs::write(&path, b"not the recording").unwrap();
    std::fs::remove_file(
        dir.path().join(
            world
                .ledger
                .get(&crate::world::cu("f-0"))
                .await
                .unwrap()
                .unwrap()
                .object_key
                .unwrap(),
        ),
    )
    .unwrap();
    let report = verify_objects(&world.ledger, &store, &all(2), |_| {})
        .await
        .unwrap();
    assert_eq!((report.ok, report.changed, report.missing), (1, 1, 1));

    // Without sidecars a file store still keeps the metadata beside the recording.
    world.import_call("f-plain", "f-plain.wav", 2500).await;
    let plain = world.deps_with(world.ledger.clone(), store.clone().with_sidecars(false));
    callvault::archive::run_pass(&plain, &world.options())
        .await
        .unwrap();
    let key = world
        .ledger
        .get(&crate::world::cu("f-plain"))
        .await
        .unwrap()
        .unwrap()
        .object_key
        .unwrap();
    assert!(dir.path().join(format!("{key}.metadata.json")).is_file());
    assert!(!dir.path().join(format!("{key}.json")).exists());

    // The day's folder replaced by a file: its objects cannot be opened at all.
    let day = dir.path().join(&key).parent().unwrap().to_owned();
    std::fs::rename(&day, dir.path().join("moved-away")).unwrap();
    std::fs::write(&day, b"in the way").unwrap();
    let report = verify_objects(&world.ledger, &store, &all(2), |_| {})
        .await
        .unwrap();
    assert_eq!((report.checked, report.unreadable), (4, 4));
    let mut unreadable: Vec<&str> = report
        .problems
        .iter()
        .filter_map(|p| match p {
            ObjectProblem::Unreadable { uuid, .. } => Some(uuid.as_str()),
            _ => None,
        })
        .collect();
    unreadable.sort();
    assert_eq!(unreadable, ["f-0", "f-1", "f-2", "f-plain"]);
    let row = world
        .ledger
        .get(&crate::world::cu("f-plain"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.last_verify_result.as_deref(), Some("unreadable"));
}

#[tokio::test]
async fn sidecars_hold_the_call_record_and_the_archive_facts() {
    let world = World::new().await;
    let record = world.import_call("s-1", "s-1.mp3", 4000).await;
    world.sim.add_recording("s-2.wav", 3000);
    let mut lenient = call("s-2", "s-2.wav", "2026-11-01 11:00:00");
    lenient.raw_json = "{\"uuid\": \"s-2\" \"recordfilename\": \"s-2.wav\"}".into();
    world
        .ledger
        .import(&[lenient.clone()], chrono::Utc::now())
        .await
        .unwrap();

    let result = world.run(&world.options()).await;

    assert_eq!(result.report.archived, 2);
    let row = world
        .ledger
        .get(&crate::world::cu("s-1"))
        .await
        .unwrap()
        .unwrap();
    let key = row.object_key.clone().unwrap();
    let sidecar: serde_json::Value = serde_json::from_slice(
        &bytes_of(&world.store, &format!("{key}.json"))
            .await
            .unwrap(),
    )
    .unwrap();
    let facts = serde_json::json!({
        "format": "callvault-sidecar/1",
        "account": "default",
        "uuid": "s-1",
        "company_code": "20000013",
        "call_start": callvault::timefmt::to_ledger(record.call_start.unwrap()),
        "key": key,
        "size": row.size_bytes.unwrap(),
        "sha256": row.sha256.clone().unwrap(),
        "content_type": row.content_type.clone().unwrap(),
        "archived_at": callvault::timefmt::to_ledger(row.archived_at.unwrap()),
        "run_id": result.report.run_id,
        "callvault_version": env!("CARGO_PKG_VERSION"),
        "call": serde_json::from_str::<serde_json::Value>(&record.raw_json).unwrap(),
    });
    assert_eq!(sidecar, facts);

    let key = world
        .ledger
        .get(&crate::world::cu("s-2"))
        .await
        .unwrap()
        .unwrap()
        .object_key
        .unwrap();
    let sidecar: serde_json::Value = serde_json::from_slice(
        &bytes_of(&world.store, &format!("{key}.json"))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        sidecar["call_raw"],
        lenient.raw_json.as_str(),
        "kept verbatim"
    );
    assert!(sidecar.get("call").is_none());
}

#[tokio::test]
async fn a_sidecar_that_cannot_be_written_leaves_the_record_pending_until_it_can() {
    let world = World::new().await;
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let record = world.import_call("blocked", "blocked.wav", 2000).await;
    let key = world.deps().keys.render(&record).unwrap();
    // A directory where the sidecar must go: the store cannot write it.
    let obstacle = dir.path().join(format!("{key}.json"));
    std::fs::create_dir_all(&obstacle).unwrap();
    let deps = world.deps_with(world.ledger.clone(), store);

    let first = callvault::archive::run_pass(&deps, &world.options())
        .await
        .unwrap();

    assert_eq!((first.report.archived, first.report.retry_later), (0, 1));
    assert_eq!(first.exit_code(), 1);
    let row = world
        .ledger
        .get(&crate::world::cu("blocked"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, RecordState::Pending);
    assert_eq!(row.last_error_code.as_deref(), Some("sidecar_failed"));
    assert_eq!((row.sha256, row.manifest_seq), (None, None));
    assert!(
        first.report.manifests.is_empty(),
        "nothing archived, no manifest"
    );

    std::fs::remove_dir(&obstacle).unwrap();
    let second = callvault::archive::run_pass(&deps, &world.options())
        .await
        .unwrap();
    assert_eq!((second.report.archived, second.exit_code()), (1, 0));
    assert!(obstacle.is_file());
}

/// Reads a manifest's header line.
pub fn header_of(bytes: &[u8]) -> ManifestHeader {
    let line = bytes.split(|&b| b == b'\n').next().unwrap();
    serde_json::from_slice(line).unwrap()
}

pub async fn claim_dead_head(ledger: &Ledger, store: &Store) -> ChainClaim {
    let now = chrono::Utc::now();
    ledger
        .claim_manifest(
            &"run-dead".into(),
            &|seq| store.manifest_key(seq),
            now - chrono::Duration::minutes(1),
            now - chrono::Duration::seconds(30),
        )
        .await
        .unwrap()
}
