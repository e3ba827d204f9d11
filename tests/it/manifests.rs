//! The manifest chain: one manifest per pass with news, each naming its predecessor's
//! SHA-256; killed runs' records picked up by the next; removed or edited manifests found.

use callvault::audit::{ChainProblem, verify_chain};
use callvault::ledger::{ChainClaim, Ledger};
use callvault::store::Store;

use crate::audit::{
    archive_without_manifest, bytes_of, claim_dead_head, delete, file_store, header_of, put, sha256,
};
use crate::world::World;

async fn manifest_uuids(store: &Store, key: &str) -> Vec<String> {
    let bytes = bytes_of(store, key).await.unwrap();
    let mut uuids: Vec<String> = bytes
        .split(|&b| b == b'\n')
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice::<serde_json::Value>(l).unwrap()["uuid"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    uuids.sort();
    uuids
}

#[tokio::test]
async fn the_chain_spans_runs_and_killed_runs_and_shows_removed_or_edited_manifests() {
    let world = World::new().await;
    let store = &world.store;
    world.import_call("m-1", "m-1.wav", 2000).await;
    world.import_call("m-2", "m-2.wav", 2100).await;
    let first = world.run(&world.options()).await;
    let written: Vec<_> = first
        .report
        .manifests
        .iter()
        .map(|m| (m.seq, m.entries, m.taken_over))
        .collect();
    assert_eq!(written, [(1, 2, false)]);

    // A run killed after archiving k-1, before writing its manifest.
    archive_without_manifest(&world, store, "k-1", &[7u8; 1500]).await;
    world.import_call("m-3", "m-3.wav", 2200).await;
    let second = world.run(&world.options()).await;
    let written: Vec<_> = second
        .report
        .manifests
        .iter()
        .map(|m| (m.seq, m.entries))
        .collect();
    assert_eq!(written, [(2, 2)]);

    // A run killed while writing its manifest: k-2 archived, the chain head claimed, never written.
    archive_without_manifest(&world, store, "k-2", &[9u8; 1700]).await;
    assert!(
        matches!(claim_dead_head(&world.ledger, store).await, ChainClaim::Claimed(c) if c.seq == 3 && c.entries == 1)
    );
    world.import_call("m-4", "m-4.wav", 2300).await;
    let third = world.run(&world.options()).await;
    let written: Vec<_> = third
        .report
        .manifests
        .iter()
        .map(|m| (m.seq, m.entries, m.taken_over))
        .collect();
    assert_eq!(
        written,
        [(3, 1, true), (4, 1, false)],
        "the dead run's head first"
    );
    assert_eq!(third.exit_code(), 0);
    // A pass with nothing new writes no manifest.
    assert!(
        world
            .run(&world.options())
            .await
            .report
            .manifests
            .is_empty()
    );

    let keys: Vec<String> = (1..=4).map(|seq| store.manifest_key(seq)).collect();
    let mut bodies = Vec::new();
    for key in &keys {
        bodies.push(
            bytes_of(store, key)
                .await
                .expect("every manifest is in the store"),
        );
    }
    assert_eq!(header_of(&bodies[0]).previous, None);
    for n in 1..4 {
        let header = header_of(&bodies[n]);
        let previous = header.previous.expect("names its predecessor");
        assert_eq!((header.seq, previous.seq), (n as i64 + 1, n as i64));
        assert_eq!(previous.key, keys[n - 1]);
        assert_eq!(
            previous.sha256,
            sha256(&bodies[n - 1]),
            "manifest {}",
            n + 1
        );
    }
    assert_eq!(
        manifest_uuids(store, &keys[1]).await,
        ["k-1", "m-3"],
        "the killed run's record"
    );
    assert_eq!(manifest_uuids(store, &keys[2]).await, ["k-2"]);
    assert_eq!(manifest_uuids(store, &keys[3]).await, ["m-4"]);
    let k1 = world
        .ledger
        .get(&crate::world::cu("k-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(k1.manifest_seq, Some(2));
    let line = String::from_utf8(bodies[1].clone()).unwrap();
    assert!(line.contains(&format!(
        "{{\"account\":\"default\",\"uuid\":\"k-1\",\"key\":\"{}\",\"size\":1500,\"sha256\":\"{}\",\"archived_at\":\"{}\"}}",
        k1.object_key.unwrap(),
        k1.sha256.unwrap(),
        callvault::timefmt::to_ledger(k1.archived_at.unwrap())
    )));

    let clean = verify_chain(store, &world.ledger, 4).await.unwrap();
    assert!(clean.problems.is_empty(), "{:?}", clean.problems);
    assert_eq!(
        (
            clean.manifests_in_store,
            clean.manifests_in_ledger,
            clean.entries_checked,
            clean.compared_with_ledger
        ),
        (4, 4, 6, true)
    );

    // Manifest 2 edited: its successor and the ledger both disagree.
    let edited = String::from_utf8(bodies[1].clone())
        .unwrap()
        .replace("\"uuid\":\"k-1\"", "\"uuid\":\"k-9\"");
    put(store, &keys[1], edited.clone().into_bytes()).await;
    let report = verify_chain(store, &world.ledger, 4).await.unwrap();
    assert_eq!(
        report.problems,
        [
            ChainProblem::PreviousChanged {
                key: keys[2].clone(),
                previous_key: keys[1].clone(),
                expected_sha256: sha256(&bodies[1]),
                found_sha256: sha256(edited.as_bytes()),
            },
            ChainProblem::LedgerManifestChanged {
                seq: 2,
                key: keys[1].clone(),
                expected_sha256: sha256(&bodies[1]),
                found_sha256: sha256(edited.as_bytes()),
            },
        ]
    );
    put(store, &keys[1], bodies[1].clone()).await;

    // Manifest 3 removed: manifest 4 names it, the ledger knows it.
    delete(store, &keys[2]).await;
    let report = verify_chain(store, &world.ledger, 4).await.unwrap();
    assert_eq!(
        report.problems,
        [
            ChainProblem::PreviousMissing {
                key: keys[3].clone(),
                previous_key: keys[2].clone()
            },
            ChainProblem::LedgerManifestMissing {
                seq: 3,
                key: keys[2].clone()
            },
        ]
    );
    put(store, &keys[2], bodies[2].clone()).await;

    // The newest removed: the bucket alone cannot tell, the ledger can.
    delete(store, &keys[3]).await;
    let report = verify_chain(store, &world.ledger, 4).await.unwrap();
    assert_eq!(
        report.problems,
        [
            ChainProblem::LedgerManifestMissing {
                seq: 4,
                key: keys[3].clone()
            },
            ChainProblem::NewestDiffers {
                ledger: Some(keys[3].clone()),
                store: Some(keys[2].clone())
            },
        ]
    );
    put(store, &keys[3], bodies[3].clone()).await;

    // A listed recording gone from the store.
    let m1 = world
        .ledger
        .get(&crate::world::cu("m-1"))
        .await
        .unwrap()
        .unwrap()
        .object_key
        .unwrap();
    delete(store, &m1).await;
    let report = verify_chain(store, &world.ledger, 4).await.unwrap();
    assert_eq!(
        report.problems,
        [ChainProblem::EntryMissing {
            manifest: keys[0].clone(),
            uuid: "m-1".into(),
            key: m1
        }]
    );
}

#[tokio::test]
async fn a_file_store_chain_is_checked_from_the_bucket_alone_too() {
    let world = World::new().await;
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(dir.path());
    let deps = world.deps_with(world.ledger.clone(), store.clone());
    for i in 0..2 {
        world
            .import_call(&format!("fs-{i}"), &format!("fs-{i}.wav"), 1800)
            .await;
        let result = callvault::archive::run_pass(&deps, &world.options())
            .await
            .unwrap();
        assert_eq!(result.report.manifests.len(), 1);
    }
    let keys = [store.manifest_key(1), store.manifest_key(2)];
    // Someone holding only the bucket: a fresh, empty ledger.
    let empty = Ledger::open(&format!(
        "sqlite://{}",
        world.dir.path().join("empty.db").display()
    ))
    .await
    .unwrap();
    let alone = verify_chain(&store, &empty, 2).await.unwrap();
    assert!(alone.problems.is_empty(), "{:?}", alone.problems);
    assert_eq!(
        (
            alone.manifests_in_store,
            alone.entries_checked,
            alone.compared_with_ledger
        ),
        (2, 2, false)
    );

    std::fs::remove_file(dir.path().join(&keys[0])).unwrap();
    let edited = std::fs::read_to_string(dir.path().join(&keys[1]))
        .unwrap()
        .replace("\"size\":1800", "\"size\":1801");
    std::fs::write(dir.path().join(&keys[1]), &edited).unwrap();
    let report = verify_chain(&store, &world.ledger, 2).await.unwrap();
    let fs1 = world
        .ledger
        .get(&crate::world::cu("fs-1"))
        .await
        .unwrap()
        .unwrap()
        .object_key
        .unwrap();
    assert_eq!(
        report.problems,
        [
            ChainProblem::EntrySizeDiffers {
                manifest: keys[1].clone(),
                uuid: "fs-1".into(),
                key: fs1,
                expected_size: 1801,
                found_size: 1800
            },
            ChainProblem::PreviousMissing {
                key: keys[1].clone(),
                previous_key: keys[0].clone()
            },
            ChainProblem::LedgerManifestMissing {
                seq: 1,
                key: keys[0].clone()
            },
            ChainProblem::LedgerManifestChanged {
                seq: 2,
                key: keys[1].clone(),
                expected_sha256: world.ledger.manifests().await.unwrap()[1]
                    .sha256
                    .clone()
                    .unwrap(),
                found_sha256: sha256(edited.as_bytes()),
            },
        ]
    );
}

#[tokio::test]
async fn two_runs_never_write_the_chain_head_at_once() {
    let world = World::new().await;
    archive_without_manifest(&world, &world.store, "c-1", &[1u8; 1200]).await;
    let other = Ledger::open(&world.ledger_url).await.unwrap();
    let now = chrono::Utc::now();
    let until = now + chrono::Duration::minutes(5);
    let key = |seq: i64| world.store.manifest_key(seq);
    let (run_a, run_b) = ("run-a".into(), "run-b".into());

    let (a, b) = tokio::join!(
        world.ledger.claim_manifest(&run_a, &key, now, until),
        other.claim_manifest(&run_b, &key, now, until)
    );

    let claims = [a.unwrap(), b.unwrap()];
    let winner = claims.iter().find_map(|c| match c {
        ChainClaim::Claimed(c) => Some(c.clone()),
        _ => None,
    });
    let winner = winner.expect("one run claims the head");
    assert_eq!((winner.seq, winner.entries), (1, 1));
    assert_eq!(
        claims
            .iter()
            .filter(|c| matches!(c, ChainClaim::Busy { seq: 1, .. }))
            .count(),
        1,
        "{claims:?}"
    );
    // Meanwhile a pass archives fine and leaves the chain to the holder.
    world.import_call("c-2", "c-2.wav", 1300).await;
    let pass = world.run(&world.options()).await;
    assert_eq!((pass.report.archived, pass.exit_code()), (1, 0));
    assert!(pass.report.manifests.is_empty() && pass.report.manifest_error.is_none());
    assert_eq!(world.ledger.unlisted_archived().await.unwrap(), 1);

    // The holder gives up: the next pass writes its manifest, then one for c-2.
    world
        .ledger
        .release_manifest(1, &winner.run_id)
        .await
        .unwrap();
    let next = world.run(&world.options()).await;
    let written: Vec<_> = next
        .report
        .manifests
        .iter()
        .map(|m| (m.seq, m.entries, m.taken_over))
        .collect();
    assert_eq!(written, [(1, 1, true), (2, 1, false)]);
    assert!(
        verify_chain(&world.store, &world.ledger, 2)
            .await
            .unwrap()
            .problems
            .is_empty()
    );
}
