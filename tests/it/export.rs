//! `callvault export` from the binary: calls archived by `run`, then exported into a
//! directory, a `.zip` and a `.tar`. Each bundle is checked here from its files alone:
//! every file of `docs/proof-format.md` section 4 is there, each leaf's inclusion proof and
//! each consistency proof verifies against the checkpoints in the bundle, the checkpoints'
//! signatures against the operator's key, the recordings against their lines, every file
//! against `SHA256SUMS` and `SHA256SUMS.sig`; and the export is in the access log with its
//! reason.

use std::collections::BTreeMap;
use std::path::Path;

use callvault::export::format::{self, CallLine, ConsistencyLine};
use callvault::ledger::BackendKind;
use callvault::proof::checkpoint::SignedCheckpoint;
use callvault::proof::keys::SigningKey;
use callvault::proof::merkle::{self, Hash};
use sha2::{Digest, Sha256};

use crate::cli::{assert_exit, callvault, import_samples, output};
use crate::world::{World, files_under};

const CALLS: usize = 4;

on_both_backends!(export_bundles_check_from_their_files_alone);

fn hash(hex_text: &str) -> Hash {
    hex::decode(hex_text).unwrap().try_into().unwrap()
}

fn lines<T: serde::de::DeserializeOwned>(root: &Path, path: &str) -> Vec<T> {
    std::fs::read_to_string(root.join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}: {e}: {l}")))
        .collect()
}

fn checkpoint(root: &Path, path: &str) -> SignedCheckpoint {
    SignedCheckpoint::parse(&std::fs::read_to_string(root.join(path)).unwrap()).unwrap()
}

/// Archives `CALLS` calls, with the log's checkpoints signed by a new key; the key's file.
async fn archived_world(kind: BackendKind) -> (World, SigningKey, std::path::PathBuf) {
    let world = World::with_backend(kind).await;
    import_samples(&world, CALLS).await;
    let key = SigningKey::generate("acme-log").unwrap();
    let key_file = world.dir.path().join("log.key");
    key.write_new(&key_file).unwrap();
    let mut run = callvault(&world, &["run"]);
    run.env("CALLVAULT_SIGNING_KEY_FILE", &key_file);
    assert_exit(&output(run).await, 0);
    // Until the pass logs its manifests itself.
    if world.ledger.checkpoints().await.unwrap().is_empty() {
        callvault::proof::log::extend(&world.ledger, &world.store, Some(&key), chrono::Utc::now())
            .await
            .unwrap();
    }
    assert!(!world.ledger.checkpoints().await.unwrap().is_empty());
    (world, key, key_file)
}

/// Every check a recipient makes, on the bundle unpacked at `root`.
fn check_bundle(root: &Path, key: &SigningKey, reason: &str) {
    let files: Vec<String> = files_under(root)
        .iter()
        .map(|p| {
            p.strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect();
    for required in [
        format::README,
        format::BUNDLE_JSON,
        format::CALLS,
        format::CONSISTENCY,
        format::AUDIT_ACCESS,
        format::AUDIT_HOLDS,
        format::AUDIT_ERASURES,
        format::AUDIT_VERIFICATIONS,
        format::COMPLETENESS,
        format::OBJECT_LOCK,
        format::LOAD_FILE_DAT,
        format::SUMS,
        format::SUMS_SIG,
    ] {
        assert!(
            files.iter().any(|f| f == required),
            "{required} in {files:?}"
        );
    }
    let verifier = key.verifier();
    let pem = format!("keys/{}", verifier.file_name().replace(".pub", ".pem"));
    assert!(
        files.contains(&format!("keys/{}", verifier.file_name())),
        "{files:?}"
    );
    assert!(files.contains(&pem), "{files:?}");

    let calls: Vec<CallLine> = lines(root, format::CALLS);
    assert_eq!(calls.len(), CALLS);
    let order: Vec<(String, u64)> = calls
        .iter()
        .map(|c| (c.account.clone(), c.leaves[0].index))
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(
        order, sorted,
        "calls.jsonl is ordered by account, then first leaf"
    );
    for call in &calls {
        assert_eq!(call.state, "archived");
        let object = call
            .object
            .as_ref()
            .expect("an archived call has its object");
        assert_eq!(call.leaves.len(), 1);
        for leaf in &call.leaves {
            let cp = checkpoint(root, &leaf.checkpoint);
            cp.verify(std::slice::from_ref(&verifier))
                .expect("signed by the operator");
            assert_eq!(cp.checkpoint.size, leaf.tree_size);
            let proof: Vec<Hash> = leaf.inclusion.iter().map(|h| hash(h)).collect();
            merkle::verify_inclusion(
                &merkle::leaf_hash(leaf.line.as_bytes()),
                leaf.index,
                leaf.tree_size,
                &proof,
                &cp.checkpoint.root,
            )
            .expect("the leaf is in its checkpoint");
            let line: serde_json::Value = serde_json::from_str(&leaf.line).unwrap();
            assert_eq!(line["uuid"], call.uuid.as_str());
            assert_eq!(line["sha256"], object.sha256.as_str());
            assert_eq!(line["key"], object.key.as_str());
        }
        let recording = call.recording.as_ref().expect("exported with recordings");
        let bytes = std::fs::read(root.join(recording)).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), object.sha256);
        assert_eq!(bytes.len() as u64, object.size);
    }
    for line in lines::<ConsistencyLine>(root, format::CONSISTENCY) {
        let (from, to) = (checkpoint(root, &line.from), checkpoint(root, &line.to));
        let proof: Vec<Hash> = line.proof.iter().map(|h| hash(h)).collect();
        merkle::verify_consistency(
            line.from_size,
            line.to_size,
            &from.checkpoint.root,
            &to.checkpoint.root,
            &proof,
        )
        .expect("consistent with the newest");
    }

    let sums = std::fs::read(root.join(format::SUMS)).unwrap();
    let listed: BTreeMap<String, String> = String::from_utf8(sums.clone())
        .unwrap()
        .lines()
        .map(|l| {
            let (sha, path) = l.split_once("  ").unwrap();
            (path.to_owned(), sha.to_owned())
        })
        .collect();
    for file in &files {
        if file == format::SUMS || file == format::SUMS_SIG {
            continue;
        }
        let sha = hex::encode(Sha256::digest(std::fs::read(root.join(file)).unwrap()));
        assert_eq!(listed.get(file), Some(&sha), "{file} in SHA256SUMS");
    }
    assert_eq!(listed.len(), files.len() - 2);
    let sig: [u8; 64] = std::fs::read(root.join(format::SUMS_SIG))
        .unwrap()
        .try_into()
        .unwrap();
    assert!(verifier.verify(&sums, &sig), "SHA256SUMS.sig");

    let access: Vec<serde_json::Value> = lines(root, format::AUDIT_ACCESS);
    assert!(
        access
            .iter()
            .any(|e| e["action"] == "export" && e["reason"] == reason),
        "{access:?}"
    );
    let info: format::BundleInfo =
        serde_json::from_slice(&std::fs::read(root.join(format::BUNDLE_JSON)).unwrap()).unwrap();
    assert_eq!((info.calls, info.reason.as_str()), (CALLS as u64, reason));
    let dat = std::fs::read_to_string(root.join(format::LOAD_FILE_DAT)).unwrap();
    assert_eq!(
        dat.lines().count(),
        CALLS + 1,
        "a header and a row per call"
    );
}

fn export_args<'a>(out: &'a str, reason: &'a str, key_file: &'a str) -> Vec<&'a str> {
    vec![
        "export",
        "--out",
        out,
        "--reason",
        reason,
        "--with-recordings",
        "--load-file",
        "dat",
        "--signing-key-file",
        key_file,
        "--since",
        "2000-01-01",
        "--json",
    ]
}

async fn export_bundles_check_from_their_files_alone(kind: BackendKind) {
    let (world, key, key_file) = archived_world(kind).await;
    let key_file = key_file.to_str().unwrap().to_owned();
    let dir = world.dir.path();

    for (n, name) in ["bundle", "bundle.zip", "bundle.tar"]
        .into_iter()
        .enumerate()
    {
        let reason = format!("regulator request {n}");
        let out = dir.join(name);
        let run = output(callvault(
            &world,
            &export_args(out.to_str().unwrap(), &reason, &key_file),
        ))
        .await;
        assert_exit(&run, 0);
        let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(report["calls"], CALLS as u64, "{report}");
        assert_eq!(report["recordings"], CALLS as u64, "{report}");
        let root = match name {
            "bundle" => out.clone(),
            _ => {
                let unpacked = dir.join(format!("unpacked-{n}"));
                let file = std::fs::File::open(&out).unwrap();
                if name.ends_with(".zip") {
                    zip::ZipArchive::new(file)
                        .unwrap()
                        .extract(&unpacked)
                        .unwrap();
                } else {
                    tar::Archive::new(file).unpack(&unpacked).unwrap();
                }
                unpacked
            }
        };
        check_bundle(&root, &key, &reason);
    }

    // The place must be new or empty; --reason is required.
    let out = dir.join("bundle");
    let again = output(callvault(
        &world,
        &export_args(out.to_str().unwrap(), "again", &key_file),
    ))
    .await;
    assert_exit(&again, 2);
    let no_reason = output(callvault(&world, &["export", "--out", "elsewhere"])).await;
    assert_exit(&no_reason, 2);
    assert!(!dir.join("elsewhere").exists());

    // A recording altered in the store: the export fails naming the call, and leaves
    // nothing behind.
    let calls: Vec<CallLine> = lines(&dir.join("bundle"), format::CALLS);
    let victim = &calls[1];
    let key = &victim.object.as_ref().unwrap().key;
    let mut bytes = crate::audit::bytes_of(&world.store, key).await.unwrap();
    bytes[0] ^= 1;
    crate::audit::put(&world.store, key, bytes).await;
    let out = dir.join("tampered.zip");
    let failed = output(callvault(
        &world,
        &export_args(out.to_str().unwrap(), "tampered", &key_file),
    ))
    .await;
    assert_exit(&failed, 1);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains(&victim.uuid) && stderr.contains("not the one archived"),
        "{stderr}"
    );
    assert!(!out.exists(), "a failed export leaves no bundle");
}
