//! Every command over calls works per account (issue 18, point 5), through the binary, on
//! both backends: two accounts archive the same uuids into one bucket (kept apart by
//! `{account}` in their keys); `find`, `failures`, `holds`, `access-log`, `verify` and
//! `completeness` name the account on every line; a bare uuid that is in both accounts
//! makes `get`, `hold`, `erase` and `retry` ask for `--account` (exit 2, naming both) and
//! do nothing; with `--account` they act on that account's call only. The sidecar and the
//! manifest lines name their account.

use std::process::Output;

use callvault::ledger::BackendKind;
use object_store::ObjectStoreExt;

use crate::cli::{assert_exit, callvault, output, write_callbacks};
use crate::world::World;

/// Two accounts of the same provider login, in one store, apart by their keys.
fn config(world: &World) -> std::path::PathBuf {
    let text = format!(
        r#"
key-template = "{{account}}/{{companycode}}/{{uuid}}{{ext}}"

[accounts.acme]
appid = "{appid}"

[accounts.beta]
appid = "{appid}"
"#,
        appid = world.sim.config().appid,
    );
    let path = world.dir.path().join("two.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn run(world: &World, config: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = callvault(world, args);
    cmd.env("CALLVAULT_CONFIG", config)
        .env("CALLVAULT_ACTOR", "auditor");
    output(cmd).await
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn accounts_of(lines: &[serde_json::Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["account"].as_str().unwrap_or("?").to_owned())
        .collect()
}

async fn object_text(world: &World, key: &str) -> String {
    let got = world
        .store
        .object_store()
        .get(&world.bucket_path(key.strip_prefix("calls/").unwrap_or(key)))
        .await
        .unwrap_or_else(|e| panic!("{key}: {e}"));
    String::from_utf8(got.bytes().await.unwrap().to_vec()).unwrap()
}

/// Asserts that `out` refused a uuid that is in both accounts, naming them.
fn asks_for_account(out: &Output, uuid: &str) {
    assert_exit(out, 2);
    let err = stderr(out);
    assert!(
        err.contains(&format!("call {uuid} is in 2 accounts (acme, beta)"))
            && err.contains("--account"),
        "{err}"
    );
}

async fn every_command_works_per_account(kind: BackendKind) {
    let world = World::with_backend(kind).await;
    let config = config(&world);
    let file = write_callbacks(&world, 4);
    let file = file.to_str().unwrap();
    for account in ["acme", "beta"] {
        assert_exit(
            &run(&world, &config, &["import", "--account", account, file]).await,
            0,
        );
    }
    assert_exit(&run(&world, &config, &["run"]).await, 0);

    // find: both accounts' copies, each line named; --account narrows to one.
    let found = json_lines(&run(&world, &config, &["find", "--json"]).await);
    let archived: Vec<&serde_json::Value> =
        found.iter().filter(|c| c["state"] == "archived").collect();
    assert!(archived.len() >= 2, "{found:?}");
    let per_account = |name: &str| found.iter().filter(|c| c["account"] == name).count();
    assert_eq!(per_account("acme"), per_account("beta"));
    assert_eq!(per_account("acme") * 2, found.len());
    let beta_only =
        json_lines(&run(&world, &config, &["find", "--account", "beta", "--json"]).await);
    assert!(accounts_of(&beta_only).iter().all(|a| a == "beta"));
    assert_eq!(beta_only.len(), per_account("beta"));
    let table = run(&world, &config, &["find"]).await;
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.starts_with("ACCOUNT") && text.contains("beta"),
        "{text}"
    );
    // A cursor continues one account's list: with both, it is refused.
    let cursor = run(&world, &config, &["find", "--after", "x"]).await;
    assert_exit(&cursor, 2);

    let uuid = archived[0]["uuid"].as_str().unwrap().to_owned();
    let other = archived
        .iter()
        .map(|c| c["uuid"].as_str().unwrap())
        .find(|u| *u != uuid)
        .unwrap()
        .to_owned();

    // get: a bare uuid in both accounts is refused; named, it comes from that account.
    let out_dir = world.dir.path().join("out");
    let out_dir = out_dir.to_str().unwrap();
    asks_for_account(
        &run(&world, &config, &["get", &uuid, "-o", out_dir]).await,
        &uuid,
    );
    assert!(
        !std::path::Path::new(out_dir).exists()
            || crate::world::files_under(std::path::Path::new(out_dir)).is_empty()
    );
    let got = run(
        &world,
        &config,
        &["get", "--account", "beta", &uuid, "-o", out_dir],
    )
    .await;
    assert_exit(&got, 0);
    assert!(String::from_utf8_lossy(&got.stdout).contains("account beta"));

    // hold: refused bare, placed on acme's call only when named.
    let bare = run(
        &world,
        &config,
        &["hold", "--uuid", &uuid, "--reason", "case-1"],
    )
    .await;
    asks_for_account(&bare, &uuid);
    let holds = json_lines(&run(&world, &config, &["holds", "--json"]).await);
    assert_eq!(
        holds[0],
        serde_json::json!([]),
        "nothing held after a refusal"
    );
    let held = run(
        &world,
        &config,
        &[
            "hold",
            "--account",
            "acme",
            "--uuid",
            &uuid,
            "--reason",
            "case-1",
            "--json",
        ],
    )
    .await;
    assert_exit(&held, 0);
    assert_eq!(accounts_of(&json_lines(&held)), ["acme"]);
    let holds = json_lines(&run(&world, &config, &["holds", "--json"]).await);
    let listed = holds[0].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["account"], "acme");

    // erase: refused bare; beta's copy of `other` goes, acme's stays.
    let bare = run(
        &world,
        &config,
        &["erase", "--uuid", &other, "--reason", "GDPR-9", "--yes"],
    )
    .await;
    asks_for_account(&bare, &other);
    let erased = run(
        &world,
        &config,
        &[
            "erase",
            "--account",
            "beta",
            "--uuid",
            &other,
            "--reason",
            "GDPR-9",
            "--yes",
            "--json",
        ],
    )
    .await;
    assert_exit(&erased, 0);
    let report = &json_lines(&erased)[0];
    assert_eq!(report["account"], "beta");
    assert_eq!(report["erased"].as_array().unwrap().len(), 1, "{report}");
    let keys = world.object_keys().await;
    let recording = |account: &str, uuid: &str| {
        keys.iter().any(|k| {
            k.starts_with(&format!("calls/{account}/")) && k.contains(uuid) && !k.ends_with(".json")
        })
    };
    assert!(recording("acme", &other), "{keys:?}");
    assert!(!recording("beta", &other), "{keys:?}");

    // retry names its uuid's account too.
    asks_for_account(
        &run(&world, &config, &["retry", "--uuid", &uuid]).await,
        &uuid,
    );

    // The sidecar and the manifest lines name their account.
    let sidecar = keys
        .iter()
        .find(|k| k.starts_with("calls/beta/") && k.contains(&uuid) && k.ends_with(".json"))
        .unwrap_or_else(|| panic!("{keys:?}"));
    let sidecar: serde_json::Value =
        serde_json::from_str(&object_text(&world, sidecar).await).unwrap();
    assert_eq!(sidecar["account"], "beta");
    for account in ["acme", "beta"] {
        let manifest = keys
            .iter()
            .find(|k| {
                k.starts_with(&format!("calls/manifests/{account}/")) && k.ends_with(".jsonl")
            })
            .unwrap_or_else(|| panic!("{keys:?}"));
        let text = object_text(&world, manifest).await;
        for line in text.lines() {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            let named = line.get("erased").unwrap_or(&line)["account"].clone();
            assert_eq!(named, account, "{manifest}: {line}");
        }
    }

    // verify: one report per account, each its own chain and objects, all good.
    let verified = run(&world, &config, &["verify", "--json"]).await;
    assert_exit(&verified, 0);
    assert_eq!(accounts_of(&json_lines(&verified)), ["acme", "beta"]);
    let chains = run(&world, &config, &["verify", "--manifests", "--json"]).await;
    assert_exit(&chains, 0);
    assert_eq!(accounts_of(&json_lines(&chains)), ["acme", "beta"]);

    // The access log: beta's `get` is in beta's log, not in acme's.
    let log = |account: &'static str| {
        let config = config.clone();
        let world = &world;
        let uuid = uuid.clone();
        async move {
            json_lines(
                &run(
                    world,
                    &config,
                    &[
                        "access-log",
                        "--account",
                        account,
                        "--uuid",
                        &uuid,
                        "--json",
                    ],
                )
                .await,
            )
        }
    };
    let beta_log = log("beta").await;
    assert!(accounts_of(&beta_log).iter().all(|a| a == "beta"));
    assert!(
        beta_log.iter().any(|e| e["action"] == "get"),
        "{beta_log:?}"
    );
    let acme_log = log("acme").await;
    assert!(
        !acme_log.iter().any(|e| e["action"] == "get"),
        "{acme_log:?}"
    );

    // failures and completeness name their accounts.
    let failures = run(&world, &config, &["failures", "--json"]).await;
    assert_exit(&failures, 0);
    assert!(
        accounts_of(&json_lines(&failures))
            .iter()
            .all(|a| a == "acme" || a == "beta")
    );
    let complete = run(&world, &config, &["completeness", "--json"]).await;
    let shown: serde_json::Value = serde_json::from_slice(&complete.stdout).unwrap();
    let names: Vec<&str> = shown["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme", "beta"]);
}

#[tokio::test]
async fn every_command_works_per_account_on_sqlite() {
    every_command_works_per_account(BackendKind::Sqlite).await;
}

#[tokio::test]
async fn every_command_works_per_account_on_postgres() {
    every_command_works_per_account(BackendKind::Postgres).await;
}

/// A deployment that ran as the one account `default` starts naming its accounts: its rows
/// show as an unconfigured account (never claimed) until `accounts rename` moves them, which
/// refuses to merge into an account that has rows and keeps the manifest chain going.
async fn a_deployment_names_its_accounts(kind: BackendKind) {
    let world = World::with_backend(kind).await;
    let file = write_callbacks(&world, 4);
    let file = file.to_str().unwrap();
    assert_exit(&output(callvault(&world, &["import", file])).await, 0);
    assert_exit(&output(callvault(&world, &["run"])).await, 0);
    let counts = |v: &serde_json::Value| v["counts"].clone();
    let before = serde_json::from_slice::<serde_json::Value>(
        &output(callvault(&world, &["status", "--json"]))
            .await
            .stdout,
    )
    .unwrap();

    let config = config(&world);
    let listed = run(&world, &config, &["accounts", "--json"]).await;
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let unconfigured: Vec<&serde_json::Value> = listed["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["unconfigured"] == true)
        .collect();
    assert_eq!(unconfigured.len(), 1, "{listed}");
    assert_eq!(unconfigured[0]["account"], "default");
    assert_eq!(unconfigured[0]["calls"], 4);
    // A run over the declared accounts leaves them alone.
    assert_exit(&run(&world, &config, &["run"]).await, 0);

    // Never merged into an account with rows.
    assert_exit(
        &run(&world, &config, &["import", "--account", "beta", file]).await,
        0,
    );
    let merge = run(&world, &config, &["accounts", "rename", "default", "beta"]).await;
    assert_exit(&merge, 2);
    assert!(
        stderr(&merge).contains("already has calls"),
        "{}",
        stderr(&merge)
    );

    let moved = run(
        &world,
        &config,
        &["accounts", "rename", "default", "acme", "--json"],
    )
    .await;
    assert_exit(&moved, 0);
    let moved: serde_json::Value = serde_json::from_slice(&moved.stdout).unwrap();
    assert_eq!(
        (moved["outcome"].as_str(), moved["calls"].as_u64()),
        (Some("moved"), Some(4)),
        "{moved}"
    );
    let again = run(&world, &config, &["accounts", "rename", "default", "acme"]).await;
    assert_exit(&again, 1);
    let listed = run(&world, &config, &["accounts", "--json"]).await;
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("unconfigured"));
    let after = run(&world, &config, &["status", "--account", "acme", "--json"]).await;
    let after: serde_json::Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(counts(&after), counts(&before));

    // The chain goes on under the new name: acme's next manifest follows default's.
    let more = world.dir.path().join("more.jsonl");
    let lines: Vec<String> = world
        .sim
        .sample_callbacks(3, chrono::Utc::now())
        .iter()
        .map(|c| c.to_string())
        .collect();
    std::fs::write(&more, lines.join("\n") + "\n").unwrap();
    let more = more.to_str().unwrap();
    assert_exit(
        &run(&world, &config, &["import", "--account", "acme", more]).await,
        0,
    );
    assert_exit(
        &run(&world, &config, &["run", "--account", "acme"]).await,
        0,
    );
    let chain = run(
        &world,
        &config,
        &["verify", "--manifests", "--account", "acme", "--json"],
    )
    .await;
    assert_exit(&chain, 0);
    let report = &json_lines(&chain)[0];
    assert!(
        report["manifests"]["manifests_in_store"].as_u64().unwrap() >= 2,
        "{report}"
    );
}

#[tokio::test]
async fn a_deployment_names_its_accounts_on_sqlite() {
    a_deployment_names_its_accounts(BackendKind::Sqlite).await;
}

#[tokio::test]
async fn a_deployment_names_its_accounts_on_postgres() {
    a_deployment_names_its_accounts(BackendKind::Postgres).await;
}

/// Each account has its own provider pace: acme's `api-rate = 1` spaces acme's requests a
/// second apart, while beta, without a rate, is archived in full before acme's third
/// recording (which cannot come before two seconds have passed).
#[tokio::test]
async fn one_accounts_rate_limit_does_not_slow_another() {
    let world = World::new().await;
    let text = format!(
        r#"
key-template = "{{account}}/{{companycode}}/{{uuid}}{{ext}}"

[accounts.acme]
appid = "{appid}"
api-rate = 1

[accounts.beta]
appid = "{appid}"
"#,
        appid = world.sim.config().appid,
    );
    let config = world.dir.path().join("paced.toml");
    std::fs::write(&config, text).unwrap();
    let file = write_callbacks(&world, 5);
    let file = file.to_str().unwrap();
    for account in ["acme", "beta"] {
        assert_exit(
            &run(&world, &config, &["import", "--account", account, file]).await,
            0,
        );
    }
    assert_exit(&run(&world, &config, &["run"]).await, 0);
    let archived_at = |account: &'static str| {
        let ledger = world
            .ledger
            .scoped(&callvault::accounts::AccountName::parse(account).unwrap());
        async move {
            let mut times = Vec::new();
            for uuid in ledger
                .uuids_in_state(callvault::domain::RecordState::Archived)
                .await
                .unwrap()
            {
                times.push(
                    ledger
                        .get(&uuid)
                        .await
                        .unwrap()
                        .unwrap()
                        .archived_at
                        .unwrap(),
                );
            }
            times.sort();
            times
        }
    };
    let (acme, beta) = (archived_at("acme").await, archived_at("beta").await);
    assert_eq!((acme.len(), beta.len()), (4, 4));
    assert!(
        beta.last() < acme.get(2),
        "beta waited for acme's pace: acme {acme:?}, beta {beta:?}"
    );
    // acme's pace held: its recordings a second apart (a link request each).
    assert!(
        acme[3] - acme[0] >= chrono::Duration::milliseconds(2_900),
        "{acme:?}"
    );
}

/// `ledger rebuild --from-store` rebuilds each account from its own part of a store the
/// accounts share: into a new ledger, each account gets back its own calls (the same uuids
/// in both), and neither takes the other's sidecars or manifests.
async fn a_rebuild_gives_each_account_its_own_calls(kind: BackendKind) {
    let world = World::with_backend(kind).await;
    let config = config(&world);
    let file = write_callbacks(&world, 5);
    let file = file.to_str().unwrap();
    for account in ["acme", "beta"] {
        assert_exit(
            &run(&world, &config, &["import", "--account", account, file]).await,
            0,
        );
    }
    // Two runs: two manifests in each account's chain.
    let first = run(&world, &config, &["run", "--max-records", "2"]).await;
    assert!(
        matches!(first.status.code(), Some(0 | 1)),
        "{}",
        stderr(&first)
    );
    assert_exit(&run(&world, &config, &["run"]).await, 0);
    let archived = |out: &Output| {
        let mut calls: Vec<(String, String)> = json_lines(out)
            .iter()
            .filter(|c| c["state"] == "archived")
            .map(|c| {
                (
                    c["account"].as_str().unwrap().to_owned(),
                    c["uuid"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        calls.sort();
        calls
    };
    let before = archived(&run(&world, &config, &["find", "--json"]).await);
    assert!(before.len() >= 4, "{before:?}");

    let elsewhere = world.dir.path().join("rebuilt");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let fresh = crate::world::fresh_ledger_url(kind, &elsewhere).await;
    let on_fresh = |args: &[&str]| {
        let mut cmd = callvault(&world, args);
        cmd.env("CALLVAULT_CONFIG", &config)
            .env("CALLVAULT_LEDGER", &fresh);
        output(cmd)
    };
    let rebuilt = on_fresh(&["ledger", "rebuild", "--from-store", "--json"]).await;
    assert_exit(&rebuilt, 0);
    let reports = json_lines(&rebuilt);
    assert_eq!(accounts_of(&reports), ["acme", "beta"]);
    for report in &reports {
        assert_eq!(report["problem_counts"], serde_json::json!({}), "{report}");
        assert!(report["other_accounts"].as_u64().unwrap() > 0, "{report}");
    }
    let after = archived(&on_fresh(&["find", "--json"]).await);
    assert_eq!(after, before);
    // The chains came back per account: each verifies from its own manifests.
    assert_exit(&on_fresh(&["verify", "--manifests"]).await, 0);
}

#[tokio::test]
async fn a_rebuild_gives_each_account_its_own_calls_on_sqlite() {
    a_rebuild_gives_each_account_its_own_calls(BackendKind::Sqlite).await;
}

#[tokio::test]
async fn a_rebuild_gives_each_account_its_own_calls_on_postgres() {
    a_rebuild_gives_each_account_its_own_calls(BackendKind::Postgres).await;
}
