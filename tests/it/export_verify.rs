//! `export verify` and the independent checker (`tests/proof/check_bundle.py`) on a real
//! bundle: calls archived by real passes, logged with a signing key, each checkpoint stamped
//! by a test TSA, assembled as docs/proof-format.md says. The good bundle passes both; each
//! tamper of the table is caught and named by both.

use std::path::{Path, PathBuf};
use std::process::Command;

use callvault::export::format::{
    self, BundleInfo, CallLine, ConsistencyLine, Leaf, ManifestRef, ObjectFacts,
};
use callvault::export::verify::{BundleProblem, Trust, TrustSource, VerifyReport, verify_bundle};
use callvault::ledger::CheckpointRow;
use callvault::proof::checkpoint::SignedCheckpoint;
use callvault::proof::keys::SigningKey;
use callvault::proof::merkle::{self, CompactRange, Wanted, leaf_hash};
use callvault::proof::tsa::{Authority, request, token_certificates_pem};
use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::audit::bytes_of;
use crate::world::World;

/// What the tamper cases need besides the bundle.
struct Parts {
    key: SigningKey,
    tsa: Authority,
    key_pub: PathBuf,
    roots: PathBuf,
    account: String,
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn stamp(tsa: &Authority, bytes: &[u8]) -> Vec<u8> {
    tsa.respond(&request(&Sha256::digest(bytes).into()).der, Utc::now())
}

fn hexes(hashes: Vec<merkle::Hash>) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

async fn proof(world: &World, wanted: Wanted) -> Vec<String> {
    let nodes = world
        .ledger
        .log_nodes(&merkle::needed(wanted).unwrap())
        .await
        .unwrap();
    hexes(merkle::prove(wanted, &nodes).unwrap())
}

/// Archives five calls over three passes and logs them: three checkpoints (2, 4, 5 leaves).
async fn archive_and_log(world: &World, key: &SigningKey) -> Vec<CheckpointRow> {
    for (pass, uuids) in [&["ev-1", "ev-2"][..], &["ev-3", "ev-4"], &["ev-5"]]
        .iter()
        .enumerate()
    {
        for (i, uuid) in uuids.iter().enumerate() {
            world
                .import_call(
                    uuid,
                    &format!("{uuid}.wav"),
                    1500 + 100 * (pass * 2 + i) as u64,
                )
                .await;
        }
        // The pass logs its manifests, each checkpoint signed with the key.
        let mut deps = world.deps();
        deps.prover = callvault::proof::Prover::new(Some(key.clone()));
        let ran = callvault::archive::run_pass(&deps, &world.options())
            .await
            .unwrap();
        assert_eq!(ran.exit_code(), 0);
    }
    let rows = world.ledger.checkpoints().await.unwrap();
    assert_eq!(rows.iter().map(|r| r.size).collect::<Vec<_>>(), [2, 4, 5]);
    rows
}

/// The calls of one checkpoint's manifest as `calls.jsonl` lines; their recordings copied.
async fn calls_of(world: &World, row: &CheckpointRow, account: &str, out: &Path) -> Vec<CallLine> {
    let lines = crate::audit::manifest_leaves(&world.store, &row.manifest_key).await;
    let mut calls = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let index = row.start + i as u64;
        let text = String::from_utf8(line.to_vec()).unwrap();
        let said: serde_json::Value = serde_json::from_str(&text).unwrap();
        let key = said["key"].as_str().unwrap().to_owned();
        let recording = format::recording_path(account, &key);
        write(
            &out.join(&recording),
            bytes_of(&world.store, &key).await.unwrap(),
        );
        calls.push(CallLine {
            account: account.into(),
            uuid: said["uuid"].as_str().unwrap().into(),
            state: "archived".into(),
            record: serde_json::json!({"uuid": said["uuid"]}),
            object: Some(ObjectFacts {
                key,
                version: None,
                size: said["size"].as_u64().unwrap(),
                sha256: said["sha256"].as_str().unwrap().into(),
                retention: None,
                legal_hold: None,
            }),
            holds: vec![],
            leaves: vec![Leaf {
                kind: "archived".into(),
                line: text,
                index,
                manifest: ManifestRef {
                    seq: row.seq,
                    key: row.manifest_key.clone(),
                },
                checkpoint: format::checkpoint_path(account, row.seq),
                tree_size: row.size,
                inclusion: proof(
                    world,
                    Wanted::Inclusion {
                        index,
                        size: row.size,
                    },
                )
                .await,
            }],
            recording: Some(recording),
        });
    }
    calls
}

fn jsonl<T: serde::Serialize>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| serde_json::to_string(i).unwrap() + "\n")
        .collect()
}

/// Writes the bundle's checkpoints, tokens, calls and consistency proofs.
async fn write_log_files(world: &World, parts: &Parts, rows: &[CheckpointRow], out: &Path) {
    let newest = rows.last().unwrap();
    let (mut calls, mut consistency) = (Vec::new(), Vec::new());
    for row in rows {
        let path = format::checkpoint_path(&parts.account, row.seq);
        write(&out.join(&path), &row.text);
        write(
            &out.join(format!("{path}.tsr")),
            stamp(&parts.tsa, row.text.as_bytes()),
        );
        calls.extend(calls_of(world, row, &parts.account, out).await);
        if row.seq != newest.seq {
            consistency.push(ConsistencyLine {
                account: parts.account.clone(),
                from: path,
                from_size: row.size,
                to: format::checkpoint_path(&parts.account, newest.seq),
                to_size: newest.size,
                proof: proof(
                    world,
                    Wanted::Consistency {
                        old: row.size,
                        new: newest.size,
                    },
                )
                .await,
            });
        }
    }
    write(&out.join(format::CALLS), jsonl(&calls));
    write(&out.join(format::CONSISTENCY), jsonl(&consistency));
    let info = BundleInfo {
        format: format::BUNDLE_FORMAT.into(),
        created_at: Utc::now().to_rfc3339(),
        actor: "test".into(),
        reason: "the tamper table".into(),
        selection: serde_json::json!({}),
        calls: calls.len() as u64,
        accounts: vec![parts.account.clone()],
        with_recordings: true,
        callvault_version: env!("CARGO_PKG_VERSION").into(),
        notes: vec![],
    };
    write(
        &out.join(format::BUNDLE_JSON),
        serde_json::to_string_pretty(&info).unwrap(),
    );
}

/// Recomputes SHA256SUMS over every file; signs and stamps it when `sign` (a forger, who
/// has neither the key nor a reason to date the forgery, drops `.sig` and `.tsr`).
fn seal(out: &Path, sign: Option<&Parts>) {
    for f in [format::SUMS, format::SUMS_SIG, format::SUMS_TSR] {
        let _ = std::fs::remove_file(out.join(f));
    }
    let sums: String = crate::world::files_under(out)
        .iter()
        .map(|p| {
            p.strip_prefix(out)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect::<std::collections::BTreeSet<_>>()
        .iter()
        .map(|rel| {
            format!(
                "{}  {rel}\n",
                hex::encode(Sha256::digest(std::fs::read(out.join(rel)).unwrap()))
            )
        })
        .collect();
    write(&out.join(format::SUMS), &sums);
    if let Some(parts) = sign {
        write(&out.join(format::SUMS_SIG), parts.key.sign(sums.as_bytes()));
        write(
            &out.join(format::SUMS_TSR),
            stamp(&parts.tsa, sums.as_bytes()),
        );
    }
}

/// A good bundle in `world.dir/good`, and the trust given to its recipient.
async fn good_bundle(world: &World) -> (PathBuf, Parts) {
    let account = world.ledger.account().as_str().to_owned();
    let key = SigningKey::generate(&format!("{account}-log")).unwrap();
    let tsa = Authority::generate("callvault test TSA");
    let key_pub = key.write_new(&world.dir.path().join("log.key")).unwrap();
    let roots = world.dir.path().join("roots.pem");
    write(&roots, tsa.root_pem());
    let parts = Parts {
        key,
        tsa,
        key_pub,
        roots,
        account,
    };
    let rows = archive_and_log(world, &parts.key).await;
    let out = world.dir.path().join("good");
    write_log_files(world, &parts, &rows, &out).await;
    let verifier = parts.key.verifier();
    write(
        &out.join(format::KEYS_DIR).join(verifier.file_name()),
        verifier.to_text() + "\n",
    );
    let pem_name = verifier.file_name().replace(".pub", ".pem");
    write(
        &out.join(format::KEYS_DIR).join(pem_name),
        verifier.to_pem(),
    );
    let token =
        std::fs::read(out.join(format::checkpoint_path(&parts.account, 1) + ".tsr")).unwrap();
    write(
        &out.join(format::TSA_CERTIFICATES),
        token_certificates_pem(&token).unwrap(),
    );
    write(&out.join(format::README), "A test bundle.\n");
    seal(&out, Some(&parts));
    (out, parts)
}

fn given(parts: &Parts) -> Trust {
    Trust {
        log_keys: Some(vec![parts.key.verifier()]),
        tsa_roots: Some(parts.tsa.trust_roots()),
    }
}

/// `check_bundle.py`'s exit code and output; fails (does not skip) without python3/openssl.
fn python_check(bundle: &Path, parts: &Parts) -> (i32, String) {
    for tool in [["python3", "--version"], ["openssl", "version"]] {
        let found = Command::new(tool[0])
            .arg(tool[1])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "install python3/openssl: the independent checker needs `{}`",
            tool[0]
        );
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proof/check_bundle.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(bundle)
        .arg("--log-key")
        .arg(&parts.key_pub)
        .arg("--tsa-roots")
        .arg(&parts.roots)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn copy_dir(from: &Path, to: &Path) {
    for file in crate::world::files_under(from) {
        let rel = file.strip_prefix(from).unwrap();
        write(&to.join(rel), std::fs::read(&file).unwrap());
    }
}

fn edit_calls(bundle: &Path, edit: impl FnOnce(&mut Vec<String>)) {
    let path = bundle.join(format::CALLS);
    let mut lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    edit(&mut lines);
    write(
        &path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    );
}

fn call_line(bundle: &Path, n: usize) -> CallLine {
    let text = std::fs::read_to_string(bundle.join(format::CALLS)).unwrap();
    serde_json::from_str(text.lines().nth(n - 1).unwrap()).unwrap()
}

/// Checkpoint `seq` rewritten: its tree's root replaced by `root` (when given), signed by `key`
/// and stamped again by `tsa`.
fn rewrite_checkpoint(
    bundle: &Path,
    parts: &Parts,
    seq: i64,
    root: Option<merkle::Hash>,
    key: &SigningKey,
) {
    let path = bundle.join(format::checkpoint_path(&parts.account, seq));
    let mut checkpoint = SignedCheckpoint::parse(&std::fs::read_to_string(&path).unwrap())
        .unwrap()
        .checkpoint;
    if let Some(root) = root {
        checkpoint.root = root;
    }
    let text = checkpoint.to_note(Some(key));
    write(&path, &text);
    write(
        &PathBuf::from(format!("{}.tsr", path.display())),
        stamp(&parts.tsa, text.as_bytes()),
    );
}

/// The root of a rewritten log: checkpoint `seq`'s leaves with the first line altered.
fn rewritten_root(bundle: &Path, size: u64) -> merkle::Hash {
    let mut range = CompactRange::empty();
    for n in 1..=size as usize {
        let line = call_line(bundle, n).leaves[0].line.clone();
        let line = if n == 1 {
            line.replace("\"size\":", "\"size\":1")
        } else {
            line
        };
        range.append(leaf_hash(line.as_bytes()));
    }
    range.root()
}

/// One tamper: what it does (returning the strings a report must name), whether the forger
/// then recomputes SHA256SUMS, and the problem `export verify` must report.
struct Case {
    name: &'static str,
    tamper: fn(&Path, &Parts) -> Vec<String>,
    reseal: bool,
    kind: &'static str,
    /// Said by `export verify` alone (the python checker reports openssl's words).
    rust_says: &'static str,
}

fn edit_leaf_line(bundle: &Path, n: usize) {
    edit_calls(bundle, |lines| {
        let mut call: CallLine = serde_json::from_str(&lines[n - 1]).unwrap();
        call.leaves[0].line = call.leaves[0]
            .line
            .replace("\"archived_at\":\"", "\"archived_at\":\"1");
        lines[n - 1] = serde_json::to_string(&call).unwrap();
    });
}

fn tsr(parts: &Parts, seq: i64) -> String {
    format::checkpoint_path(&parts.account, seq) + ".tsr"
}

/// Tampers with the calls and recordings.
fn call_cases() -> Vec<Case> {
    vec![
        Case {
            name: "one byte of a recording",
            reseal: true,
            kind: "recording_hash",
            rust_says: "SHA-256",
            tamper: |b, _| {
                let call = call_line(b, 1);
                let rec = call.recording.unwrap();
                let mut bytes = std::fs::read(b.join(&rec)).unwrap();
                bytes[700] ^= 1;
                write(&b.join(&rec), bytes);
                vec![rec, format!("{}/{}", call.account, call.uuid)]
            },
        },
        Case {
            name: "a line edited",
            reseal: true,
            kind: "not_included",
            rust_says: "leads to root",
            tamper: |b, _| {
                edit_leaf_line(b, 2);
                let call = call_line(b, 2);
                vec![
                    "calls.jsonl line 2".into(),
                    format!("{}/{}", call.account, call.uuid),
                    call.leaves[0].checkpoint.clone(),
                ]
            },
        },
        Case {
            name: "a line removed",
            reseal: true,
            kind: "recording_unlisted",
            rust_says: "no call",
            tamper: |b, _| {
                let rec = call_line(b, 3).recording.unwrap();
                edit_calls(b, |lines| {
                    lines.remove(2);
                });
                vec![rec]
            },
        },
        Case {
            name: "two lines swapped",
            reseal: true,
            kind: "out_of_order",
            rust_says: "",
            tamper: |b, _| {
                let first = call_line(b, 1);
                edit_calls(b, |lines| lines.swap(0, 1));
                vec![
                    "calls.jsonl line 2".into(),
                    format!("{}/{}", first.account, first.uuid),
                    "out of order".into(),
                ]
            },
        },
    ]
}

/// Checkpoint 1 signed by another key (kept in keys/) and stamped again.
fn resign_with_another_key(b: &Path, parts: &Parts) -> Vec<String> {
    let evil = SigningKey::generate("evil").unwrap();
    rewrite_checkpoint(b, parts, 1, None, &evil);
    let v = evil.verifier();
    write(
        &b.join(format::KEYS_DIR).join(v.file_name()),
        v.to_text() + "\n",
    );
    vec![
        format::checkpoint_path(&parts.account, 1),
        format!("signed by evil+{}", hex::encode(v.id())),
    ]
}

/// Tampers with the checkpoints, their tokens and the log.
fn log_cases() -> Vec<Case> {
    vec![
        Case {
            name: "a checkpoint re-signed with another key",
            reseal: true,
            kind: "unknown_key",
            rust_says: "--log-key",
            tamper: resign_with_another_key,
        },
        Case {
            name: "a token for another imprint",
            reseal: true,
            kind: "token",
            rust_says: "another imprint",
            tamper: |b, parts| {
                write(
                    &b.join(tsr(parts, 2)),
                    parts.tsa.respond(&request(&[7u8; 32]).der, Utc::now()),
                );
                vec![tsr(parts, 2)]
            },
        },
        Case {
            name: "a token from an untrusted TSA",
            reseal: true,
            kind: "token",
            rust_says: "does not end in any of the trusted roots",
            tamper: |b, parts| {
                let evil = Authority::generate("evil TSA");
                let checkpoint =
                    std::fs::read(b.join(format::checkpoint_path(&parts.account, 3))).unwrap();
                write(&b.join(tsr(parts, 3)), stamp(&evil, &checkpoint));
                vec![tsr(parts, 3)]
            },
        },
        Case {
            name: "a recording erased after export",
            reseal: true,
            kind: "recording_missing",
            rust_says: "",
            tamper: |b, _| {
                let call = call_line(b, 4);
                let rec = call.recording.unwrap();
                std::fs::remove_file(b.join(&rec)).unwrap();
                vec![format!(
                    "{rec} is listed for {}/{} but missing from the bundle",
                    call.account, call.uuid
                )]
            },
        },
        Case {
            name: "a consistency break",
            reseal: true,
            kind: "not_consistent",
            rust_says: "",
            tamper: |b, parts| {
                let root = rewritten_root(b, 2);
                rewrite_checkpoint(b, parts, 1, Some(root), &parts.key);
                let (from, to) = (
                    format::checkpoint_path(&parts.account, 1),
                    format::checkpoint_path(&parts.account, 3),
                );
                vec![format!("{from} is not consistent with {to}")]
            },
        },
        Case {
            name: "a line edited, SHA256SUMS left as it was",
            reseal: false,
            kind: "sum_mismatch",
            rust_says: "",
            tamper: |b, _| {
                edit_leaf_line(b, 2);
                vec!["calls.jsonl does not match SHA256SUMS".into()]
            },
        },
    ]
}

fn line_naming<'a>(lines: impl IntoIterator<Item = &'a str>, names: &[String]) -> bool {
    lines
        .into_iter()
        .any(|l| names.iter().all(|n| l.contains(n.as_str())))
}

async fn check_case(good: &Path, parts: &Parts, case: &Case, n: usize) {
    let bundle = good.with_file_name(format!("tampered-{n}"));
    copy_dir(good, &bundle);
    let names = (case.tamper)(&bundle, parts);
    if case.reseal {
        seal(&bundle, None);
    }
    let report = verify_bundle(&bundle, &given(parts)).await.unwrap();
    let caught = report.problems.iter().any(|p| {
        let said = p.to_string();
        p.kind() == case.kind
            && said.contains(case.rust_says)
            && line_naming([said.as_str()], &names)
    });
    assert!(
        caught,
        "{}: export verify should report a {} naming {names:?}; it said:\n{:#?}",
        case.name, case.kind, report.problems
    );
    let (code, out) = python_check(&bundle, parts);
    assert_eq!(
        code, 1,
        "{}: the python checker should fail:\n{out}",
        case.name
    );
    assert!(
        line_naming(out.lines(), &names),
        "{}: the python checker should name {names:?}:\n{out}",
        case.name
    );
}

fn assert_clean(report: &VerifyReport) {
    assert!(report.is_clean(), "{:#?}", report.problems);
    assert_eq!(
        (
            report.checked.calls,
            report.checked.recordings,
            report.checked.checkpoints
        ),
        (5, 5, 3)
    );
    assert_eq!(
        (report.checked.tokens, report.checked.consistency_proofs),
        (4, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tamper_is_caught_and_named_by_export_verify_and_by_the_independent_checker() {
    let world = World::new().await;
    let (good, parts) = good_bundle(&world).await;
    let report = verify_bundle(&good, &given(&parts)).await.unwrap();
    assert_clean(&report);
    assert_eq!(
        (report.trust.log_key, report.trust.tsa_roots),
        (TrustSource::Given, TrustSource::Given)
    );
    let (code, out) = python_check(&good, &parts);
    assert_eq!(code, 0, "the good bundle passes the python checker:\n{out}");
    for (n, case) in call_cases().iter().chain(&log_cases()).enumerate() {
        check_case(&good, &parts, case, n).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_checks_as_zip_or_tar_and_without_given_trust_says_it_took_the_bundles() {
    let world = World::new().await;
    let (good, parts) = good_bundle(&world).await;
    let files: Vec<(String, PathBuf)> = crate::world::files_under(&good)
        .into_iter()
        .map(|p| {
            (
                p.strip_prefix(&good)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                p,
            )
        })
        .collect();
    let tar_path = world.dir.path().join("bundle.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
    for (name, path) in &files {
        tar.append_path_with_name(path, name).unwrap();
    }
    tar.finish().unwrap();
    let zip_path = world.dir.path().join("bundle.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    for (name, path) in &files {
        zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut zip, &std::fs::read(path).unwrap()).unwrap();
    }
    zip.finish().unwrap();
    for bundle in [&tar_path, &zip_path] {
        assert_clean(&verify_bundle(bundle, &given(&parts)).await.unwrap());
        let (code, out) = python_check(bundle, &parts);
        assert_eq!(code, 0, "{}:\n{out}", bundle.display());
    }
    let own = verify_bundle(&good, &Trust::default()).await.unwrap();
    assert_clean(&own);
    assert_eq!(
        (own.trust.log_key, own.trust.tsa_roots),
        (TrustSource::BundleKeys, TrustSource::BundleCertificates)
    );
    let json = serde_json::to_value(&own).unwrap();
    assert_eq!(json["trust"]["log_key"], "taken from the bundle (keys/)");
    let app = callvault::app::export_verify::run;
    assert_eq!(
        app(&good, Some(&parts.roots), Some(&parts.key_pub), false)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        app(&world.dir.path().join("none"), None, None, false)
            .await
            .unwrap(),
        2
    );
    let bad = good.with_file_name("tampered");
    copy_dir(&good, &bad);
    std::fs::remove_file(bad.join(call_line(&bad, 1).recording.unwrap())).unwrap();
    assert_eq!(
        app(&bad, Some(&parts.roots), Some(&parts.key_pub), true)
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        verify_bundle(&bad, &given(&parts))
            .await
            .unwrap()
            .problems
            .as_slice(),
        [
            BundleProblem::ListedMissing { .. },
            BundleProblem::RecordingMissing { .. }
        ]
    ));
}
