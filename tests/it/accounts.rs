//! Provider accounts declared in the settings file (`[accounts.<name>]`), through the binary:
//! `callvault accounts` shows each with its settings merged over the top level's (secrets
//! as set or unset, never their values), `--check` logs in to each and checks its store, a
//! bad declaration is a configuration error naming the account, and a pass archives the
//! account it is given into that account's own place.

use std::path::PathBuf;

use crate::cli::{assert_exit, callvault, output, write_callbacks};
use crate::world::{BUCKET, World};

const ACME_KEY_VAR: &str = "ACME_ACCESSKEY";
const CALLBACK_SECRET: &str = "acme-callback-secret-canary";

/// A settings file with two accounts in one bucket, kept apart by `{account}` in their keys:
/// `acme` with the simulator's access key from a variable, `beta` with a wrong one from a
/// file, its own retention and pace.
fn two_accounts(world: &World) -> PathBuf {
    let beta_key = world.dir.path().join("beta-accesskey");
    std::fs::write(&beta_key, "not-the-key\n").unwrap();
    let text = format!(
        r#"
key-template = "{{account}}/{{companycode}}/{{uuid}}{{ext}}"

[accounts.acme]
appid = "{appid}"
accesskey-env = "{ACME_KEY_VAR}"
callback-secret-env = "ACME_CALLBACK_SECRET"
share = 2

[accounts.beta]
appid = "beta-app"
accesskey-file = "{beta_key}"
api-rate = 3
retention-mode = "governance"
retain-for = "90d"

[accounts.beta.aws]
secret-access-key-env = "BETA_AWS_SECRET"
"#,
        appid = world.sim.config().appid,
        beta_key = beta_key.display(),
    );
    let path = world.dir.path().join("accounts.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn with_config(world: &World, config: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut cmd = callvault(world, args);
    cmd.env("CALLVAULT_CONFIG", config)
        .env(ACME_KEY_VAR, &world.sim.config().accesskey)
        .env("ACME_CALLBACK_SECRET", CALLBACK_SECRET)
        .env("BETA_AWS_SECRET", crate::world::S3_SECRET_KEY);
    cmd
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test]
async fn accounts_lists_each_account_over_the_top_level_and_never_shows_a_secret() {
    let world = World::new().await;
    let config = two_accounts(&world);
    let out = output(with_config(&world, &config, &["accounts", "--json"])).await;
    assert_exit(&out, 0);
    let shown = json(&out);
    let accounts = shown["accounts"].as_array().unwrap();
    let names: Vec<&str> = accounts
        .iter()
        .map(|a| a["account"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme", "beta"]);
    let (acme, beta) = (&accounts[0], &accounts[1]);
    // Taken from the top level: the API, the store, the key template.
    for a in [acme, beta] {
        assert_eq!(a["api_url"], world.sim.api_url());
        assert_eq!(a["store"], format!("s3://{BUCKET}/calls"));
        assert_eq!(a["key_template"], "{account}/{companycode}/{uuid}{ext}");
        assert_eq!(a["problems"], serde_json::json!([]));
    }
    // Their own: appid, pace, retention, share; one chain of manifests each.
    assert_eq!(acme["appid"], world.sim.config().appid);
    assert_eq!(beta["appid"], "beta-app");
    assert_eq!(beta["api_rate"], 3.0);
    assert_eq!(beta["retention_mode"], "governance");
    assert_eq!(acme["retain_for"], serde_json::Value::Null);
    assert_eq!(acme["share"], 2);
    assert_eq!(acme["manifests_prefix"], "manifests/acme");
    assert_eq!(beta["manifests_prefix"], "manifests/beta");
    // Secrets: where they come from, never what they are.
    assert_eq!(acme["accesskey"], format!("set (env {ACME_KEY_VAR})"));
    assert!(
        beta["accesskey"]
            .as_str()
            .unwrap()
            .starts_with("set (file ")
    );
    assert_eq!(acme["callback_secret"], "set (env ACME_CALLBACK_SECRET)");
    assert_eq!(beta["callback_secret"], "unset");
    assert_eq!(
        beta["aws"]["aws_secret_access_key"],
        "set (env BETA_AWS_SECRET)"
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for secret in [
        world.sim.config().accesskey.as_str(),
        CALLBACK_SECRET,
        "not-the-key",
        crate::world::S3_SECRET_KEY,
    ] {
        assert!(!text.contains(secret), "{secret} shown:\n{text}");
    }

    // The human listing says the same.
    let out = output(with_config(&world, &config, &["accounts"])).await;
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("acme (declared)"), "{text}");
    assert!(text.contains("manifests/beta"), "{text}");
    assert!(!text.contains(CALLBACK_SECRET), "{text}");
}

#[tokio::test]
async fn check_logs_in_to_each_account_and_a_refused_one_exits_3_naming_it() {
    let world = World::new().await;
    let config = two_accounts(&world);
    let out = output(with_config(
        &world,
        &config,
        &["accounts", "--check", "--json"],
    ))
    .await;
    assert_exit(&out, 3);
    let shown = json(&out);
    let checks: Vec<String> = shown["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["check"].to_string())
        .collect();
    assert!(checks[0].contains("provider: logged in"), "{}", checks[0]);
    assert!(checks[0].contains("store: ready"), "{}", checks[0]);
    assert!(
        checks[1].contains("refused the credentials"),
        "{}",
        checks[1]
    );

    // One account alone: all well.
    let out = output(with_config(
        &world,
        &config,
        &["accounts", "--check", "--account", "acme"],
    ))
    .await;
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("acme (declared)") && !text.contains("beta"),
        "{text}"
    );
}

#[tokio::test]
async fn bad_declarations_are_configuration_errors_naming_the_account() {
    let world = World::new().await;
    let write = |name: &str, text: &str| {
        let path = world.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let cases = [
        (
            "same-place.toml",
            "[accounts.a]\nappid = \"x\"\n[accounts.b]\nappid = \"y\"\n",
            "accounts `a` and `b` write to the same store and prefix",
        ),
        (
            "inline.toml",
            "[accounts.a]\naccesskey = \"k\"\n",
            "account `a`: `accesskey` may not be written",
        ),
        (
            "slug.toml",
            "[accounts.\"Acme Corp\"]\nappid = \"x\"\n",
            "is not a short slug",
        ),
        (
            "typo.toml",
            "[accounts.a]\nstroe = \"s3://x/y\"\n",
            "account `a`: `stroe` is not an account setting",
        ),
    ];
    for (file, text, says) in cases {
        let config = write(file, text);
        let out = output(with_config(&world, &config, &["accounts"])).await;
        assert_exit(&out, 2);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{file}: {err}");
    }

    // A secret named by a variable that is not set: listed as a problem, exit 2.
    let config = two_accounts(&world);
    let mut cmd = with_config(&world, &config, &["accounts", "--json"]);
    cmd.env_remove(ACME_KEY_VAR);
    let out = output(cmd).await;
    assert_exit(&out, 2);
    let shown = json(&out);
    let problems = shown["accounts"][0]["problems"].to_string();
    assert!(
        problems.contains("account `acme`: accesskey") && problems.contains(ACME_KEY_VAR),
        "{problems}"
    );
    // An unknown --account names the ones there are.
    let out = output(with_config(
        &world,
        &config,
        &["accounts", "--account", "gamma"],
    ))
    .await;
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the accounts are acme, beta"), "{err}");
}

/// One run over both accounts: acme's calls are archived under acme's keys while beta's
/// provider refuses beta's key; beta's refusal stops beta's pass only (its calls stay
/// pending, none failed), the run exits 3, the highest of the two, and its report names
/// which account stopped and why. The same uuids imported into both are two sets of calls.
#[tokio::test]
async fn a_run_serves_every_account_and_a_refused_one_stops_only_itself() {
    let world = World::new().await;
    let config = two_accounts(&world);
    let file = write_callbacks(&world, 6);
    let file = file.to_str().unwrap();

    // Calls belong to one account: with two declared, import must be told which.
    let out = output(with_config(&world, &config, &["import", file])).await;
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("name the one these calls belong to with --account"),
        "{err}"
    );
    for account in ["acme", "beta"] {
        let out = output(with_config(
            &world,
            &config,
            &["import", "--account", account, file],
        ))
        .await;
        assert_exit(&out, 0);
    }

    // The syncs: acme's logs in with acme's key, beta's is refused; exit 3, each line named.
    let out = output(with_config(&world, &config, &["sync", "--json"])).await;
    assert_exit(&out, 3);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        (lines[0]["account"].as_str(), lines[0]["exit_code"].as_i64()),
        (Some("acme"), Some(0))
    );
    assert_eq!(
        (lines[1]["account"].as_str(), lines[1]["exit_code"].as_i64()),
        (Some("beta"), Some(3))
    );

    let out = output(with_config(&world, &config, &["run", "--json"])).await;
    assert_exit(&out, 3);
    let report = json(&out);
    assert_eq!(report["exit_code"], 3);
    let accounts = report["accounts"].as_array().unwrap();
    let (acme, beta) = (&accounts[0], &accounts[1]);
    assert_eq!(
        (acme["account"].as_str(), acme["exit_code"].as_i64()),
        (Some("acme"), Some(0))
    );
    assert_eq!(
        (beta["account"].as_str(), beta["exit_code"].as_i64()),
        (Some("beta"), Some(3))
    );
    assert!(
        beta["stopped_by"]
            .as_str()
            .unwrap_or_default()
            .contains("refused"),
        "{beta}"
    );
    let archived = acme["archived"].as_u64().unwrap();
    assert!(archived > 0);
    assert_eq!(beta["archived"], 0);
    let keys = world.object_keys().await;
    let recordings: Vec<&String> = keys
        .iter()
        .filter(|k| !k.ends_with(".json") && !k.contains("manifests"))
        .collect();
    assert_eq!(recordings.len() as u64, archived, "{keys:?}");
    assert!(
        recordings.iter().all(|k| k.starts_with("calls/acme/")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.starts_with("calls/manifests/acme/")),
        "{keys:?}"
    );

    // `status` shows each account's own counts; `--account` picks one.
    let out = output(with_config(&world, &config, &["status", "--json"])).await;
    assert_exit(&out, 0);
    let shown = json(&out);
    let statuses = shown["accounts"].as_array().unwrap();
    assert_eq!(statuses[0]["account"], "acme");
    assert_eq!(statuses[0]["counts"]["archived"].as_u64(), Some(archived));
    assert_eq!(statuses[1]["account"], "beta");
    assert_eq!(statuses[1]["counts"]["archived"].as_u64(), Some(0));
    assert!(statuses[1]["counts"]["pending"].as_u64().unwrap() > 0);
    let out = output(with_config(
        &world,
        &config,
        &["status", "--account", "beta", "--json"],
    ))
    .await;
    assert_exit(&out, 0);
    assert_eq!(json(&out)["account"], "beta");

    // Beta's calls, the same uuids as acme's archived ones, wait with nothing failed.
    let beta_ledger = world
        .ledger
        .scoped(&callvault::accounts::AccountName::parse("beta").unwrap());
    let acme_ledger = world
        .ledger
        .scoped(&callvault::accounts::AccountName::parse("acme").unwrap());
    let archived_uuids = acme_ledger
        .uuids_in_state(callvault::domain::RecordState::Archived)
        .await
        .unwrap();
    assert_eq!(archived_uuids.len() as u64, archived);
    for uuid in &archived_uuids {
        let row = beta_ledger
            .get(uuid)
            .await
            .unwrap()
            .expect("beta's own call");
        assert_eq!(row.state, callvault::domain::RecordState::Pending, "{uuid}");
    }
    let failed = beta_ledger
        .uuids_in_state(callvault::domain::RecordState::Failed)
        .await
        .unwrap();
    assert!(failed.is_empty(), "{failed:?}");
}

/// Fair claims (issue 18, point 3): `big` has 5,000 calls pending and `small` 50, one run
/// over both at concurrency 8. Every one of small's calls is claimed before big's 100th: the
/// accounts' workers take turns at the run's transfer slots, so a long backlog does not make
/// a short one wait. (Big's pass is bounded to 300 records to keep the test short; attempt
/// ids number the claims in the order they were made, across accounts.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_backlog_does_not_delay_a_short_one() {
    use callvault::accounts::AccountName;
    use callvault::archive::{AccountPass, RunOptions, run_accounts, share_slots};
    use callvault::callback::parse_record;
    use callvault::store::{Store, StoreConfig};
    use callvault::timefmt::default_provider_tz;

    let world = World::new().await;
    let now = chrono::Utc::now();
    let (big, small) = (
        AccountName::parse("big").unwrap(),
        AccountName::parse("small").unwrap(),
    );
    let samples = |n| -> Vec<callvault::domain::CallRecord> {
        world
            .sim
            .sample_callbacks(n, now)
            .iter()
            .map(|c| parse_record(&c.to_string(), default_provider_tz()).unwrap())
            .collect()
    };
    for chunk in samples(5_000).chunks(1_000) {
        world.ledger.scoped(&big).import(chunk, now).await.unwrap();
    }
    let small_calls = samples(50);
    // Some sample calls went unanswered: no recording, nothing to claim.
    let recorded = small_calls.iter().filter(|c| c.has_recording()).count();
    world
        .ledger
        .scoped(&small)
        .import(&small_calls, now)
        .await
        .unwrap();
    let store_of = |prefix: &str| {
        Store::open(&StoreConfig {
            s3: world.s3.options(),
            part_size: crate::world::TEST_PART,
            ..StoreConfig::new(format!("s3://{BUCKET}/{prefix}"))
        })
        .unwrap()
    };
    let (slots, workers) = share_slots(8, &[1, 1]);
    assert_eq!(
        workers,
        [8, 8],
        "equal shares: each may use every slot alone"
    );
    let pass = |account: &AccountName, max_records| AccountPass {
        account: account.clone(),
        deps: world.deps_with(world.ledger.scoped(account), store_of(account.as_str())),
        opts: RunOptions {
            concurrency: 8,
            max_records,
            slots: Some(std::sync::Arc::clone(&slots)),
            ..world.options()
        },
    };
    let passes = [pass(&big, Some(300)), pass(&small, None)];

    let results = run_accounts(&passes).await;

    let small_result = results[1].as_ref().unwrap();
    assert_eq!(
        small_result.report.archived as usize, recorded,
        "{:?}",
        small_result.report
    );
    assert_eq!(results[0].as_ref().unwrap().report.archived, 300);
    let attempts = world
        .ledger
        .export_rows(callvault::ledger::Table::Attempts, None, i64::MAX)
        .await
        .unwrap();
    let ids_of = |account: &str| -> Vec<i64> {
        let mut ids: Vec<i64> = attempts
            .iter()
            .filter(|row| row["account"] == account)
            .map(|row| row["id"].as_i64().unwrap())
            .collect();
        ids.sort_unstable();
        ids
    };
    let (big_ids, small_ids) = (ids_of("big"), ids_of("small"));
    assert_eq!(small_ids.len(), recorded);
    let hundredth = big_ids[99];
    assert!(
        small_ids.iter().all(|id| *id < hundredth),
        "small's last claim {:?} came after big's 100th ({hundredth})",
        small_ids.last()
    );
}
