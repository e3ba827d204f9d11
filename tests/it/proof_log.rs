//! The Merkle log kept by the archive pass: every manifest line a leaf, a checkpoint beside
//! every manifest (signed when there is a key), proofs from the ledger that verify against
//! the checkpoints, manifests from before the log logged in order, and a manifest altered
//! in the bucket refused.

use std::collections::HashMap;

use callvault::archive::run_pass;
use callvault::ledger::{BackendKind, Ledger};
use callvault::proof::checkpoint::{SignedCheckpoint, origin};
use callvault::proof::keys::SigningKey;
use callvault::proof::merkle::{self, Hash, Wanted};
use callvault::proof::{Prover, log};
use callvault::store::Store;

use crate::audit::{archive_without_manifest, bytes_of, put};
use crate::world::World;

/// The leaves of a manifest as stored: its lines after the header.
async fn leaves_of(store: &Store, key: &str) -> Vec<Vec<u8>> {
    let bytes = bytes_of(store, key).await.expect("manifest");
    bytes
        .split(|&b| b == b'\n')
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

async fn proof(ledger: &Ledger, wanted: Wanted) -> Vec<Hash> {
    let ids = merkle::needed(wanted).unwrap();
    let nodes: HashMap<_, _> = ledger.log_nodes(&ids).await.unwrap();
    merkle::prove(wanted, &nodes).unwrap()
}

async fn checkpoint_at(store: &Store, seq: i64) -> SignedCheckpoint {
    let text = bytes_of(store, &store.checkpoint_key(seq))
        .await
        .expect("checkpoint");
    SignedCheckpoint::parse(std::str::from_utf8(&text).unwrap()).unwrap()
}

async fn the_pass_logs_every_manifest_line(kind: BackendKind) {
    let world = World::with_backend(kind).await;
    let store = &world.store;
    let key = SigningKey::generate("test-log").unwrap();
    // A manifest written before the log existed (by the previous release: no log step).
    archive_without_manifest(&world, store, "p-1", &[1u8; 1200]).await;
    archive_without_manifest(&world, store, "p-2", &[2u8; 1300]).await;
    let before = callvault::audit::write_manifests(
        &world.ledger,
        store,
        &callvault::domain::RunId::generate(),
        std::time::Duration::from_secs(30),
        &world.clock.clock(),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(before.len(), 1);
    // Two more passes with a signing key: the first logs the old manifest too, in order.
    let mut deps = world.deps();
    deps.prover = Prover::new(Some(key));
    world.import_call("p-3", "p-3.wav", 1400).await;
    let second = run_pass(&deps, &world.options()).await.unwrap();
    let logged: Vec<_> = second
        .report
        .proof
        .logged
        .iter()
        .map(|l| (l.seq, l.size, l.signed))
        .collect();
    assert_eq!(
        logged,
        [(1, 2, true), (2, 3, true)],
        "{:?}",
        second.report.proof
    );
    archive_without_manifest(&world, store, "p-4", &[5u8; 900]).await;
    world.import_call("p-5", "p-5.wav", 1500).await;
    let third = run_pass(&deps, &world.options()).await.unwrap();
    let logged: Vec<_> = third
        .report
        .proof
        .logged
        .iter()
        .map(|l| (l.seq, l.size))
        .collect();
    assert_eq!(logged, [(3, 5)], "{:?}", third.report);

    // Every leaf is a stored line, provable against its checkpoint, signed by the key.
    let verifier = deps.prover.signer().unwrap().verifier();
    let mut leaves = Vec::new();
    let mut sizes = Vec::new();
    for seq in 1..=3 {
        let manifest = leaves_of(store, &store.manifest_key(seq)).await;
        leaves.extend(manifest);
        let cp = checkpoint_at(store, seq).await;
        assert_eq!(
            cp.verify(std::slice::from_ref(&verifier)).unwrap(),
            &verifier
        );
        assert_eq!(cp.checkpoint.origin, origin("default"));
        assert_eq!(cp.checkpoint.size, leaves.len() as u64);
        for (i, line) in leaves.iter().enumerate() {
            let wanted = Wanted::Inclusion {
                index: i as u64,
                size: cp.checkpoint.size,
            };
            let path = proof(&world.ledger, wanted).await;
            merkle::verify_inclusion(
                &merkle::leaf_hash(line),
                i as u64,
                cp.checkpoint.size,
                &path,
                &cp.checkpoint.root,
            )
            .unwrap_or_else(|e| panic!("leaf {i} in checkpoint {seq}: {e}"));
        }
        sizes.push((cp.checkpoint.size, cp.checkpoint.root));
    }
    let (new_size, new_root) = sizes[2];
    for (old_size, old_root) in &sizes[..2] {
        let wanted = Wanted::Consistency {
            old: *old_size,
            new: new_size,
        };
        let path = proof(&world.ledger, wanted).await;
        merkle::verify_consistency(*old_size, new_size, old_root, &new_root, &path).unwrap();
    }
    // The public key is kept in the bucket; the ledger agrees with the store.
    let public = bytes_of(store, &store.public_key_key(&verifier.file_name()))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(public).unwrap().trim(),
        verifier.to_text()
    );
    let rows = world.ledger.checkpoints().await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.seq, r.start, r.size))
            .collect::<Vec<_>>(),
        [(1, 0, 2), (2, 2, 3), (3, 3, 5)]
    );
    let figures = world.ledger.proof_figures().await.unwrap();
    let checked = callvault::proof::check::check_log(&world.ledger, store)
        .await
        .unwrap();
    assert!(checked.problems.is_empty(), "{:?}", checked.problems);
    assert_eq!(
        (checked.leaves, checked.checkpoints_checked, checked.signed),
        (5, 3, 3)
    );
    // A checkpoint replaced by one of a rewritten log, signed by the right key, is found.
    let rewritten = callvault::proof::checkpoint::Checkpoint {
        root: merkle::leaf_hash(b"rewritten"),
        ..checkpoint_at(store, 2).await.checkpoint
    };
    let key = deps.prover.signer().unwrap();
    put(
        store,
        &store.checkpoint_key(2),
        rewritten.to_note(Some(key)).into_bytes(),
    )
    .await;
    let checked = callvault::proof::check::check_log(&world.ledger, store)
        .await
        .unwrap();
    assert_eq!(checked.problems.len(), 2, "{:?}", checked.problems);
    assert!(
        checked.problems[0].contains("the log was rewritten"),
        "{:?}",
        checked.problems
    );
    assert!(
        checked.problems[1].contains("differs from the ledger's copy"),
        "{:?}",
        checked.problems
    );
    assert_eq!(
        (
            figures.leaves,
            figures.checkpoints,
            figures.unsigned,
            figures.unstamped
        ),
        (5, 3, 0, 3)
    );
}

#[tokio::test]
async fn the_pass_logs_every_manifest_line_on_sqlite() {
    the_pass_logs_every_manifest_line(BackendKind::Sqlite).await;
}

#[tokio::test]
async fn the_pass_logs_every_manifest_line_on_postgres() {
    the_pass_logs_every_manifest_line(BackendKind::Postgres).await;
}

#[tokio::test]
async fn an_altered_manifest_is_not_logged_and_an_unsigned_checkpoint_is_counted() {
    let world = World::new().await;
    let store = &world.store;
    archive_without_manifest(&world, store, "a-2", &[3u8; 700]).await;
    callvault::audit::write_manifests(
        &world.ledger,
        store,
        &callvault::domain::RunId::generate(),
        std::time::Duration::from_secs(30),
        &world.clock.clock(),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    // Altered in the bucket after it was written: the log refuses it and says why.
    let key = store.manifest_key(1);
    let mut bytes = bytes_of(store, &key).await.unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 1;
    put(store, &key, bytes).await;
    let err = log::extend(&world.ledger, store, None, chrono::Utc::now())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("is not the one the ledger recorded"),
        "{err}"
    );
    assert!(bytes_of(store, &store.checkpoint_key(1)).await.is_none());
    let figures = world.ledger.proof_figures().await.unwrap();
    assert_eq!(figures.unlogged_manifests, 1);

    // Without a key the checkpoint is written unsigned, and counted.
    let world = World::new().await;
    world.import_call("b-1", "b-1.wav", 1000).await;
    let run = world.run(&world.options()).await;
    let logged = &run.report.proof.logged;
    assert_eq!(logged.len(), 1, "the default prover logs, unsigned");
    assert!(!logged[0].signed);
    let cp = checkpoint_at(&world.store, 1).await;
    assert!(cp.signatures.is_empty());
    let figures = world.ledger.proof_figures().await.unwrap();
    assert_eq!((figures.checkpoints, figures.unsigned), (1, 1));
    // Logging again finds nothing new; a checkpoint already in the store is kept as it is.
    assert!(
        log::extend(&world.ledger, &world.store, None, chrono::Utc::now())
            .await
            .unwrap()
            .is_empty()
    );
}
