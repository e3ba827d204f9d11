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

use crate::audit::{archive_without_manifest, bytes_of, manifest_leaves, put};
use crate::world::World;

/// Writes the manifests as the release before the log did: no log step after them.
async fn manifests_without_log(world: &World) -> Vec<callvault::audit::ManifestWritten> {
    callvault::audit::write_manifests(
        &world.ledger,
        &world.store,
        &callvault::domain::RunId::generate(),
        std::time::Duration::from_secs(30),
        &world.clock.clock(),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap()
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
    let before = manifests_without_log(&world).await;
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
        let manifest = manifest_leaves(store, &store.manifest_key(seq)).await;
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
    manifests_without_log(&world).await;
    // Altered in the bucket after it was written: the log refuses it and says why.
    let key = store.manifest_key(1);
    let original = bytes_of(store, &key).await.unwrap();
    let mut bytes = original.clone();
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
    // Put back, it is logged, and the nodes the altered reading left are replaced.
    put(store, &key, original).await;
    let logged = log::extend(&world.ledger, store, None, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(logged.len(), 1);
    let checked = callvault::proof::check::check_log(&world.ledger, store)
        .await
        .unwrap();
    assert!(checked.problems.is_empty(), "{:?}", checked.problems);

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

/// A test authority served on loopback; its URL.
async fn serve_tsa(authority: std::sync::Arc<callvault::proof::tsa::Authority>) -> url::Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, authority.router()).await });
    url.parse().unwrap()
}

#[tokio::test]
async fn a_tsa_that_is_down_or_wrong_never_holds_up_archiving_and_stamps_later() {
    use callvault::proof::stamp::{Stamper, imprint};
    use callvault::proof::tsa::{Authority, Fault, verify_token};
    let world = World::new().await;
    let store = &world.store;
    let authority = std::sync::Arc::new(Authority::generate("test TSA"));
    let url = serve_tsa(authority.clone()).await;
    let stamper = Stamper::new(vec![url.clone()], Some(authority.trust_roots())).unwrap();
    let mut deps = world.deps();
    deps.prover = Prover::new(None).with_stamper(Some(stamper));

    // Down: the pass archives and logs all the same; the checkpoint waits, counted.
    authority.set_fault(Some(Fault::Down));
    world.import_call("t-1", "t-1.wav", 1000).await;
    let down = run_pass(&deps, &world.options()).await.unwrap();
    assert_eq!((down.report.archived, down.exit_code()), (1, 0));
    assert_eq!(down.report.proof.logged.len(), 1);
    assert_eq!(down.report.proof.stamped, 0);
    assert!(!down.report.proof.problems.is_empty());
    let figures = world.ledger.proof_figures().await.unwrap();
    assert_eq!(figures.unstamped, 1);
    assert!(figures.oldest_unstamped_at.is_some());

    // A token for another imprint is refused (and logged), not kept.
    authority.set_fault(Some(Fault::OtherImprint));
    world.import_call("t-2", "t-2.wav", 1100).await;
    let wrong = run_pass(&deps, &world.options()).await.unwrap();
    assert_eq!((wrong.report.archived, wrong.report.proof.stamped), (1, 0));
    assert!(
        wrong
            .report
            .proof
            .problems
            .iter()
            .any(|p| p.contains("another imprint")),
        "{:?}",
        wrong.report.proof.problems
    );
    assert!(
        bytes_of(store, &format!("{}.tsr", store.checkpoint_key(1)))
            .await
            .is_none()
    );

    // Up again: the next pass stamps both checkpoints, tokens beside them and in the ledger.
    authority.set_fault(None);
    let up = run_pass(&deps, &world.options()).await.unwrap();
    assert_eq!(up.report.proof.stamped, 2, "{:?}", up.report.proof);
    for seq in 1..=2 {
        let key = store.checkpoint_key(seq);
        let text = String::from_utf8(bytes_of(store, &key).await.unwrap()).unwrap();
        let token = bytes_of(store, &format!("{key}.tsr"))
            .await
            .expect("token beside it");
        let roots = authority.trust_roots();
        verify_token(&token, &imprint(&text), None, Some(&roots)).unwrap();
    }
    let figures = world.ledger.proof_figures().await.unwrap();
    assert_eq!(figures.unstamped, 0);
    assert_eq!(world.ledger.stamps().await.unwrap().len(), 2);

    // A ledger rebuilt from the bucket takes the checkpoints and tokens back as they are.
    let dir = tempfile::tempdir().unwrap();
    let fresh = Ledger::open(&format!("sqlite://{}", dir.path().join("l.db").display()))
        .await
        .unwrap();
    let options = callvault::rebuild::RebuildOptions {
        merge: false,
        concurrency: 4,
        foreign_prefixes: Vec::new(),
    };
    callvault::rebuild::rebuild_from_store(store, &fresh, &options)
        .await
        .unwrap();
    Prover::default()
        .after_manifests(&fresh, store, chrono::Utc::now())
        .await;
    let adopted = callvault::proof::stamp::adopt_tokens(&fresh, store, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(adopted, 2);
    let texts = |rows: Vec<callvault::ledger::CheckpointRow>| {
        rows.into_iter()
            .map(|r| (r.seq, r.size, r.root, r.text))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        texts(fresh.checkpoints().await.unwrap()),
        texts(world.ledger.checkpoints().await.unwrap())
    );
    let wanted = Wanted::Inclusion { index: 0, size: 2 };
    assert_eq!(
        proof(&fresh, wanted).await,
        proof(&world.ledger, wanted).await
    );
    assert_eq!(fresh.proof_figures().await.unwrap().unstamped, 0);
    let checked = callvault::proof::check::check_log(&fresh, store)
        .await
        .unwrap();
    assert!(checked.problems.is_empty(), "{:?}", checked.problems);
    assert_eq!(checked.tokens, 2);
    // A token swapped for one over the other checkpoint is named.
    let one = bytes_of(store, &format!("{}.tsr", store.checkpoint_key(1)))
        .await
        .unwrap();
    put(store, &format!("{}.tsr", store.checkpoint_key(2)), one).await;
    let checked = callvault::proof::check::check_log(&fresh, store)
        .await
        .unwrap();
    assert_eq!(checked.problems.len(), 1, "{:?}", checked.problems);
    assert!(
        checked.problems[0].contains("0000000002.checkpoint.tsr"),
        "{:?}",
        checked.problems
    );
}

#[tokio::test]
async fn the_command_line_signs_and_stamps_with_a_key_of_its_own() {
    use crate::cli::{assert_exit, callvault, import_samples, output};
    use std::os::unix::fs::PermissionsExt;
    let world = World::new().await;
    let key = world.dir.path().join("log.key");
    let key_arg = key.to_str().unwrap();
    let generated = output(callvault(
        &world,
        &["keys", "generate", "--out", key_arg, "--name", "ops-log"],
    ))
    .await;
    assert_exit(&generated, 0);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Never over an existing key.
    assert_exit(
        &output(callvault(&world, &["keys", "generate", "--out", key_arg])).await,
        2,
    );
    let public =
        callvault::proof::keys::VerifierKey::read_file(&key.with_extension("key.pub")).unwrap();
    let roots = world.dir.path().join("tsa.pem");
    std::fs::write(&roots, world.sim.tsa().root_pem()).unwrap();

    import_samples(&world, 3).await;
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--json", "--signing-key-file", key_arg, "--tsa-url"];
        let tsa = world.sim.tsa_url();
        let roots = roots.to_str().unwrap().to_owned();
        args.push(Box::leak(tsa.into_boxed_str()));
        args.extend(["--tsa-trust", Box::leak(roots.into_boxed_str())]);
        args.extend_from_slice(extra);
        callvault(&world, &args)
    };
    let ran = output(run(&[])).await;
    assert_exit(&ran, 0);
    let report: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    assert_eq!(report["proof"]["logged"][0]["signed"], true, "{report}");
    assert_eq!(report["proof"]["stamped"], 1, "{report}");
    let store = &world.store;
    let cp = checkpoint_at(store, 1).await;
    cp.verify(&public).unwrap();
    // `status` and `verify --manifests` see the log.
    let status = output(callvault(&world, &["status"])).await;
    assert!(
        String::from_utf8_lossy(&status.stdout)
            .contains("1 checkpoint(s); 0 unsigned; 0 without a time-stamp"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    let verified = output(callvault(&world, &["verify", "--manifests"])).await;
    assert_exit(&verified, 0);
    let said = String::from_utf8_lossy(&verified.stdout);
    assert!(
        said.contains("(1 signed, 0 unsigned), 1 time-stamp token(s) checked, 0 problem(s)"),
        "{said}"
    );
    // A key file others can read is refused before anything is done.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let refused = output(run(&[])).await;
    assert_exit(&refused, 2);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("chmod 600"));
}

/// The release before `stamped_at`: its last migration.
const BEFORE_STAMPED_AT: i64 = 20261208010000;

/// Two logged checkpoints of that release, the first with a token.
const LOGGED_ROWS: &[&str] = &[
    "INSERT INTO runs (id, started_at, status, host, pid, options, account)
     VALUES ('run-old', '2026-11-01T10:00:00.000Z', 'completed', 'h', 1, '{}', 'default')",
    "INSERT INTO manifests (account, seq, object_key, state, run_id, entries, sha256,
                            size_bytes, created_at, written_at, log_start, log_size, log_root,
                            checkpoint_key, checkpoint, logged_at)
     VALUES ('default', 1, 'manifests/1.jsonl', 'written', 'run-old', 2, 'aa', 10,
             '2026-11-01T10:00:00.000Z', '2026-11-01T10:00:00.000Z', 0, 2, 'r1',
             'checkpoints/1', 'c1', '2026-11-01T10:00:00.000Z'),
            ('default', 2, 'manifests/2.jsonl', 'written', 'run-old', 1, 'bb', 10,
             '2026-11-02T10:00:00.000Z', '2026-11-02T10:00:00.000Z', 2, 3, 'r2',
             'checkpoints/2', 'c2', '2026-11-02T10:00:00.000Z')",
    "INSERT INTO checkpoint_stamps (account, seq, tsa, object_key, token, gen_time, stamped_at)
     VALUES ('default', 1, 'https://tsa.example', 'checkpoints/1.tsr', 'dG9rZW4=',
             '2026-11-01T10:00:05.000Z', '2026-11-01T10:00:06.000Z')",
];

/// `status` counts the unstamped checkpoints from the mark a token sets on its checkpoint;
/// the upgrade sets it on the checkpoints the earlier release had stamped.
async fn an_upgraded_ledger_counts_the_checkpoints_stamped_before(kind: BackendKind) {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::world::fresh_ledger_url(kind, dir.path()).await;
    crate::world::ledger_migrated_to(kind, &url, BEFORE_STAMPED_AT, LOGGED_ROWS).await;

    let ledger = Ledger::open(&url).await.expect("the upgrade applies");
    let figures = ledger.proof_figures().await.unwrap();

    assert_eq!((figures.checkpoints, figures.unstamped), (2, 1));
    assert_eq!(
        figures.oldest_unstamped_at,
        Some("2026-11-02T10:00:00Z".parse().unwrap())
    );
    ledger.close().await;
}

on_both_backends!(an_upgraded_ledger_counts_the_checkpoints_stamped_before);
