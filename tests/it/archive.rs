//! The archive pass end to end: what lands in the store, what the ledger says about it.

use callvault::domain::RecordState;
use callvault::store::{Store, StoreConfig};
use object_store::{Attribute, GetOptions};

use crate::world::{BUCKET, TEST_PART, World, call};

#[tokio::test]
async fn stored_objects_match_the_ledger_and_the_source_and_carry_metadata() {
    let world = World::new().await;
    let samples = world.import_samples(10).await;
    // One recording large enough to go up in several parts.
    world
        .import_call("big-call", "big-call.wav", 3 * TEST_PART as u64 + 1234)
        .await;

    let result = world.run(&world.options()).await;

    let with_recording = samples.iter().filter(|r| r.has_recording()).count() as u64 + 1;
    assert_eq!(
        result.report.archived, with_recording,
        "{:?}",
        result.report
    );
    assert_eq!(result.exit_code(), 0);
    for uuid in world
        .ledger
        .uuids_in_state(RecordState::Archived)
        .await
        .unwrap()
    {
        let row = world
            .ledger
            .get(&crate::world::cu(&uuid))
            .await
            .unwrap()
            .unwrap();
        let key = row.object_key.clone().unwrap();
        let ledger_sha = row.sha256.clone().unwrap();
        let source_sha = world.sim.expected_sha256(&row.record.record_file).unwrap();
        assert_eq!(
            world.object_sha256(&key).await.as_deref(),
            Some(ledger_sha.as_str()),
            "{uuid}"
        );
        assert_eq!(ledger_sha, source_sha, "{uuid}");
        assert_eq!(
            row.size_bytes,
            Some(world.store.size_of(&key).await.unwrap().unwrap() as i64)
        );
        assert!(row.etag.is_some(), "the store's ETag is recorded");
        assert!(row.archived_at.is_some());

        let head = world
            .store
            .object_store()
            .get_opts(
                &world.bucket_path(&key),
                GetOptions {
                    head: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let meta = |name: &'static str| {
            head.attributes
                .get(&Attribute::Metadata(name.into()))
                .map(|v| v.to_string())
        };
        assert_eq!(meta("call-uuid").as_deref(), Some(uuid.as_str()));
        assert_eq!(meta("company-code").as_deref(), Some("20000013"));
        assert!(meta("call-start").is_some_and(|s| s.ends_with('Z')));
        // A single PUT carries its SHA-256 in its metadata; a multipart upload (larger than
        // a part) learns it at the end, and its sidecar carries it.
        let size = row.size_bytes.unwrap_or_default() as usize;
        let expected = (size < TEST_PART).then_some(ledger_sha.as_str());
        assert_eq!(
            meta("sha256").as_deref(),
            expected,
            "sha256 metadata on {key}"
        );
        let sidecar = world
            .store
            .read_sidecar(&world.store.sidecar_key(&key))
            .await
            .unwrap()
            .expect("a sidecar beside every recording")
            .unwrap();
        assert_eq!(sidecar.sha256, ledger_sha, "the sidecar of {key}");
    }
    let unanswered = samples.iter().filter(|r| !r.has_recording()).count();
    assert_eq!(world.count(RecordState::NoRecording).await, unanswered);
}

#[tokio::test]
async fn a_second_run_archives_nothing_and_writes_no_object() {
    let world = World::new().await;
    world.import_samples(6).await;
    let first = world.run(&world.options()).await;
    assert!(first.report.archived > 0);
    let keys_before = world.object_keys().await;
    let stats_before = world.sim.stats();
    let mtimes_before = mtimes(&world).await;

    let second = world.run(&world.options()).await;

    assert_eq!((second.report.archived, second.report.attempted()), (0, 0));
    assert_eq!(second.exit_code(), 0);
    assert_eq!(world.object_keys().await, keys_before);
    assert_eq!(mtimes(&world).await, mtimes_before);
    let stats = world.sim.stats();
    assert_eq!(
        (stats.url_requests, stats.downloads),
        (stats_before.url_requests, stats_before.downloads)
    );
}

async fn mtimes(world: &World) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
    use futures::TryStreamExt;
    world
        .store
        .object_store()
        .list(None)
        .map_ok(|m| (m.location.to_string(), m.last_modified))
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test]
async fn hostile_records_cannot_put_a_key_outside_the_prefix() {
    let world = World::new().await;
    world.sim.add_recording("evil.wav", 5000);
    let mut evil = call("../../../escape", "evil.wav", "2026-11-01 10:00:00");
    evil.company_code = "../..".into();
    world
        .ledger
        .import(&[evil], chrono::Utc::now())
        .await
        .unwrap();
    let store = Store::open(&StoreConfig {
        s3: world.s3.options(),
        part_size: TEST_PART,
        ..StoreConfig::new(format!("s3://{BUCKET}/tenant-a"))
    })
    .unwrap();

    let result = callvault::archive::run_pass(
        &world.deps_with(world.ledger.clone(), store),
        &world.options(),
    )
    .await
    .unwrap();

    assert_eq!(result.report.archived, 1);
    let keys = world.object_keys().await;
    assert_eq!(
        keys,
        [
            "tenant-a/.._../2026/11/01/.._.._.._escape.wav",
            "tenant-a/.._../2026/11/01/.._.._.._escape.wav.json",
            "tenant-a/manifests/0000000001.checkpoint",
            "tenant-a/manifests/0000000001.jsonl"
        ]
    );
    assert!(world.s3.root.path().join(BUCKET).join("tenant-a").is_dir());
    // (s3s-fs keeps its own bookkeeping in `.bucket-*` files at its root.)
    let outside: Vec<_> = std::fs::read_dir(world.s3.root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with(".bucket-"))
        .collect();
    assert_eq!(outside, [BUCKET], "nothing was written beside the bucket");
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_max_records_limits_the_claims() {
    let world = World::new().await;
    world.import_samples(10).await;
    let mut dry = world.options();
    dry.dry_run = true;
    let planned = world.run(&dry).await;
    assert!(!planned.report.planned.is_empty());
    assert!(
        planned
            .report
            .planned
            .windows(2)
            .all(|w| w[0].call_start <= w[1].call_start),
        "oldest call first"
    );
    assert_eq!(world.object_keys().await.len(), 0);
    assert_eq!(world.sim.stats().url_requests, 0);
    assert_eq!(world.count(RecordState::Archived).await, 0);

    let mut limited = world.options();
    limited.max_records = Some(3);
    let result = world.run(&limited).await;
    assert_eq!(result.report.archived, 3);
    let archived = world
        .ledger
        .uuids_in_state(RecordState::Archived)
        .await
        .unwrap();
    let oldest: Vec<String> = planned
        .report
        .planned
        .iter()
        .take(3)
        .map(|p| p.uuid.clone())
        .collect();
    let mut archived_sorted = archived.clone();
    archived_sorted.sort();
    let mut oldest_sorted = oldest.clone();
    oldest_sorted.sort();
    assert_eq!(archived_sorted, oldest_sorted, "the oldest calls go first");
}
