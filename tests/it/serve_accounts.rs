//! `callvault serve` over several accounts in one process (the real binary, a settings file
//! declaring them): each account's callbacks on its own address, opened by its own secret
//! and written into its own rows; the address from before accounts still the account
//! `default`'s; scheduled passes archiving every account's calls, each into its own place.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use callvault::accounts::AccountName;
use callvault::domain::RecordState;
use callvault::ledger::{BackendKind, Ledger};
use serde_json::{Value, json};

use crate::cli::{assert_exit, callvault, output, wait_for};
use crate::postgres_workers::{finish, spawn};
use crate::serve::{free_port, wait_ready};
use crate::world::{World, cu};

const ACME_SECRET: &str = "acme-callback-secret-canary";
const BETA_SECRET: &str = "beta-callback-secret-canary";
const DEFAULT_SECRET: &str = "default-callback-secret-canary";

on_both_backends!(
    each_account_takes_its_callbacks_on_its_own_address,
    scheduled_passes_archive_every_accounts_calls,
    scheduled_syncs_go_over_every_account,
);

/// A settings file declaring `default`, `acme` and `beta` (each with its callback secret
/// from a variable) and `quiet` (none), all logging in to the simulator, in one bucket kept
/// apart by `{account}` in the keys.
fn accounts_file(world: &World) -> PathBuf {
    let table = |name: &str, secret: Option<&str>| {
        let secret = secret.map_or(String::new(), |var| {
            format!("callback-secret-env = \"{var}\"\n")
        });
        format!(
            "[accounts.{name}]\nappid = \"{}\"\n{secret}",
            world.sim.config().appid
        )
    };
    let text = [
        "key-template = \"{account}/{companycode}/{uuid}{ext}\"\n".to_owned(),
        table("default", Some("DEFAULT_CALLBACK_SECRET")),
        table("acme", Some("ACME_CALLBACK_SECRET")),
        table("beta", Some("BETA_CALLBACK_SECRET")),
        table("quiet", None),
    ]
    .join("\n");
    let path = world.dir.path().join("accounts.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `callvault ARGS` with the accounts file and every account's secrets in its environment.
fn with_accounts(world: &World, args: &[&str]) -> Command {
    let mut cmd = callvault(world, args);
    cmd.env("CALLVAULT_CONFIG", accounts_file(world))
        .env("DEFAULT_CALLBACK_SECRET", DEFAULT_SECRET)
        .env("ACME_CALLBACK_SECRET", ACME_SECRET)
        .env("BETA_CALLBACK_SECRET", BETA_SECRET);
    cmd
}

/// Starts `serve` with `extra` arguments; its child and base URL once it is ready.
async fn start_serve(world: &World, extra: &[&str]) -> (Child, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["serve", "--listen", &listen];
    args.extend_from_slice(extra);
    let child = spawn(with_accounts(world, &args));
    (child, wait_ready(port).await)
}

/// SIGTERM, then a clean exit.
async fn stop(child: Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = finish(child).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "a clean stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn post(base: &str, path: &str, body: &Value) -> u16 {
    reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn record(uuid: &str) -> Value {
    json!({
        "uuid": uuid, "companycode": 20000013, "recordfilename": format!("{uuid}.wav"),
        "starttime": "2026-11-20 10:00:00", "billsec": "12", "type": "callout"
    })
}

fn scoped(world: &World, name: &str) -> Ledger {
    world.ledger.scoped(&AccountName::parse(name).unwrap())
}

/// The accounts whose rows hold `uuid`.
async fn holders(world: &World, uuid: &str) -> Vec<&'static str> {
    let mut found = Vec::new();
    for name in ["default", "acme", "beta", "quiet"] {
        if scoped(world, name).get(&cu(uuid)).await.unwrap().is_some() {
            found.push(name);
        }
    }
    found
}

/// One process, four accounts: a callback on an account's address with its own secret is
/// that account's call and no other's; its address with another account's secret, an
/// unknown account, an account without a secret and the old address with an account's
/// secret all answer 404 and write nothing; `/callback/<secret>` and `/callback?secret=`
/// are still the account `default`'s. `status --account` and the metrics tell each
/// account's own.
async fn each_account_takes_its_callbacks_on_its_own_address(kind: BackendKind) {
    let world = World::with_backend(kind).await;
    let (child, base) = start_serve(&world, &[]).await;

    let delivered = [
        (format!("/callback/acme/{ACME_SECRET}"), "a-1", "acme"),
        (
            format!("/callback/acme?secret={ACME_SECRET}"),
            "a-2",
            "acme",
        ),
        (format!("/callback/beta/{BETA_SECRET}"), "b-1", "beta"),
        (format!("/callback/{DEFAULT_SECRET}"), "d-1", "default"),
        (
            format!("/callback?secret={DEFAULT_SECRET}"),
            "d-2",
            "default",
        ),
        (
            format!("/callback/default/{DEFAULT_SECRET}"),
            "d-3",
            "default",
        ),
        (
            format!("/callback/{DEFAULT_SECRET}?from=provider"),
            "d-4",
            "default",
        ),
    ];
    for (path, uuid, account) in &delivered {
        assert_eq!(post(&base, path, &record(uuid)).await, 200, "{path}");
        assert_eq!(holders(&world, uuid).await, [*account], "{path}");
    }

    let refused = [
        format!("/callback/acme/{BETA_SECRET}"),
        format!("/callback/beta?secret={ACME_SECRET}"),
        format!("/callback/acme/{DEFAULT_SECRET}"),
        format!("/callback/{ACME_SECRET}"),
        format!("/callback?secret={BETA_SECRET}"),
        format!("/callback/gamma/{ACME_SECRET}"),
        format!("/callback/quiet/{ACME_SECRET}"),
        "/callback/acme".to_owned(),
    ];
    for (n, path) in refused.iter().enumerate() {
        let uuid = format!("intruder-{n}");
        assert_eq!(post(&base, path, &record(&uuid)).await, 404, "{path}");
        assert!(holders(&world, &uuid).await.is_empty(), "{path} wrote");
    }

    let out = output(with_accounts(
        &world,
        &["status", "--account", "acme", "--json"],
    ))
    .await;
    assert_exit(&out, 0);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (status["account"].as_str(), status["total"].as_u64()),
        (Some("acme"), Some(2))
    );

    let metrics = metrics_of(&base).await;
    for line in [
        "callvault_callbacks_total{account=\"acme\",result=\"stored\"} 2",
        "callvault_callbacks_total{account=\"beta\",result=\"stored\"} 1",
        "callvault_callbacks_total{account=\"default\",result=\"stored\"} 4",
        "callvault_callbacks_total{account=\"acme\",result=\"unauthorized\"} 2",
        "callvault_callbacks_total{account=\"beta\",result=\"unauthorized\"} 1",
        // `/callback/acme` without `?secret=` is the old address, `acme` its secret.
        "callvault_callbacks_total{account=\"default\",result=\"unauthorized\"} 3",
        // An unknown account, or one without a secret: no series of its own.
        "callvault_callbacks_total{account=\"\",result=\"unauthorized\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    stop(child).await;

    // Named with --account, a process serves those only: beta's address is unknown there.
    let (child, base) = start_serve(&world, &["--account", "acme"]).await;
    let path = format!("/callback/beta/{BETA_SECRET}");
    assert_eq!(post(&base, &path, &record("b-2")).await, 404);
    let path = format!("/callback/acme/{ACME_SECRET}");
    assert_eq!(post(&base, &path, &record("a-3")).await, 200);
    assert_eq!(holders(&world, "a-3").await, ["acme"]);
    // Its ledger figures are that account's.
    let metrics = metrics_of(&base).await;
    let pending = "callvault_records{account=\"acme\",state=\"pending\"} 3";
    assert!(metrics.lines().any(|l| l == pending), "{metrics}");
    stop(child).await;
}

/// `serve --schedule` over two accounts: the callbacks each receives on its own address
/// are archived by the scheduled passes, each account's under its own keys.
async fn scheduled_passes_archive_every_accounts_calls(kind: BackendKind) {
    let world = World::with_backend(kind).await;
    let (child, base) = start_serve(
        &world,
        &[
            "--account",
            "acme",
            "--account",
            "beta",
            "--schedule",
            "*/2 * * * * *",
            "--grace",
            "2s",
        ],
    )
    .await;
    let callbacks = world.sim.sample_callbacks(8, chrono::Utc::now());
    let (to_acme, to_beta) = callbacks.split_at(4);
    for (account, secret, calls) in [
        ("acme", ACME_SECRET, to_acme),
        ("beta", BETA_SECRET, to_beta),
    ] {
        for call in calls {
            assert_eq!(
                post(&base, &format!("/callback/{account}/{secret}"), call).await,
                200
            );
        }
    }
    let recorded = |calls: &[Value]| {
        calls
            .iter()
            .filter(|c| !c["recordfilename"].as_str().unwrap_or_default().is_empty())
            .count()
    };
    let want = [("acme", recorded(to_acme)), ("beta", recorded(to_beta))];
    let archived = wait_for(Duration::from_secs(60), async || {
        let mut all = true;
        for (name, n) in want {
            let done = scoped(&world, name)
                .uuids_in_state(RecordState::Archived)
                .await
                .unwrap();
            all &= done.len() == n;
        }
        all
    })
    .await;
    assert!(
        archived,
        "the scheduled passes archived both accounts' calls"
    );
    let keys = world.object_keys().await;
    for (name, n) in want {
        let recordings = keys
            .iter()
            .filter(|k| k.starts_with(&format!("calls/{name}/")) && !k.ends_with(".json"))
            .count();
        assert_eq!(recordings, n, "{name}: {keys:?}");
    }
    let counted = wait_for(Duration::from_secs(30), async || {
        let metrics = metrics_of(&base).await;
        ["acme", "beta"].iter().all(|name| {
            metrics.contains(&format!(
                "callvault_scheduled_passes_total{{account=\"{name}\",exit_code=\"0\"}}"
            ))
        })
    })
    .await;
    assert!(counted, "each account's scheduled passes are counted");
    stop(child).await;
}

/// `serve --sync-schedule` over two accounts: each account's sync reads the bill list into
/// its own rows (both accounts log in to the same simulator here, so each finds every
/// call), and each is counted.
async fn scheduled_syncs_go_over_every_account(kind: BackendKind) {
    let world = World::with_backend(kind).await;
    world.sim.sample_callbacks(5, chrono::Utc::now());
    let (child, base) = start_serve(
        &world,
        &[
            "--account",
            "acme",
            "--account",
            "beta",
            "--sync-schedule",
            "* * * * * *",
        ],
    )
    .await;
    let synced = wait_for(Duration::from_secs(30), async || {
        let metrics = metrics_of(&base).await;
        ["acme", "beta"].iter().all(|name| {
            metrics.contains(&format!(
                "callvault_scheduled_syncs_total{{account=\"{name}\",exit_code=\"0\"}}"
            ))
        })
    })
    .await;
    assert!(synced, "a scheduled sync ran for each account");
    for name in ["acme", "beta"] {
        let figures = scoped(&world, name).sync_figures().await.unwrap();
        assert_eq!(figures.found_by_sync, 5, "{name}");
    }
    for name in ["default", "quiet"] {
        let figures = scoped(&world, name).sync_figures().await.unwrap();
        assert!(figures.last_sync.is_none(), "{name} was not synced");
    }
    stop(child).await;
}

async fn metrics_of(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// An account's secret shorter than the least length is a configuration error naming it;
/// with no account holding a secret, `serve` without `--ui` has nothing to receive.
#[tokio::test]
async fn a_short_or_missing_secret_is_a_configuration_error() {
    let world = World::new().await;
    let mut short = with_accounts(&world, &["serve", "--listen", "127.0.0.1:0"]);
    short.env("BETA_CALLBACK_SECRET", "short");
    let out = output(short).await;
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("account `beta`: callback-secret is shorter"),
        "{err}"
    );
    assert!(!err.contains(ACME_SECRET), "{err}");

    let quiet = with_accounts(
        &world,
        &["serve", "--listen", "127.0.0.1:0", "--account", "quiet"],
    );
    let out = output(quiet).await;
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("callback-secret is not set"), "{err}");
}
