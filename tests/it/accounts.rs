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

#[tokio::test]
async fn a_run_archives_the_named_account_into_its_own_keys() {
    let world = World::new().await;
    let config = two_accounts(&world);
    let file = write_callbacks(&world, 6);
    let import = output(callvault(&world, &["import", file.to_str().unwrap()])).await;
    assert_exit(&import, 0);

    // Two accounts, one ledger: a pass (or a sync) must be told which.
    for command in ["run", "sync"] {
        let out = output(with_config(&world, &config, &[command])).await;
        assert_exit(&out, 2);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("name the one to work on with --account"),
            "{command}: {err}"
        );
    }
    // A sync of acme's bill list logs in with acme's key (beta's would be refused).
    let out = output(with_config(
        &world,
        &config,
        &["sync", "--account", "acme", "--json"],
    ))
    .await;
    assert_exit(&out, 0);
    let out = output(with_config(
        &world,
        &config,
        &["sync", "--account", "beta", "--json"],
    ))
    .await;
    assert_exit(&out, 3);

    let out = output(with_config(
        &world,
        &config,
        &["run", "--account", "acme", "--json"],
    ))
    .await;
    assert_exit(&out, 0);
    let archived = json(&out)["archived"].as_u64().unwrap();
    assert!(archived > 0);
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
}
