//! Two accounts, two stores (issue 18, point 8), on both backends, against moto (an S3
//! server that enforces Object Lock and keeps each object's encryption): one run archives
//! each account into its own bucket, locked by its own retention and encrypted with its own
//! KMS key, every setting from the account's table. Then account B's store refuses its
//! credentials (the S3 fault proxy in front of B's bucket only): A is archived in full, B's
//! calls stay pending with their attempts unspent, and the exit code and report name B.

use chrono::Timelike;

use callvault::accounts::AccountName;
use callvault::domain::RecordState;
use callvault::ledger::{BackendKind, Ledger};
use callvault::store::{LockMode, RetainFor, Store, StoreConfig};

use crate::cli::{assert_exit, callvault, output};
use crate::moto::Moto;
use crate::s3proxy::{Fault, S3Op, S3Proxy};
use crate::world::World;

const ACME_KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/acme";
const BETA_KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/beta";

/// acme: bucket `acme-vault`, governance for 30 days, its KMS key; beta: `beta-vault`,
/// compliance for 90 days, its own key; each through its own proxy to moto.
fn config(world: &World, acme_proxy: &str, beta_proxy: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[accounts.acme]
appid = "{appid}"
store = "s3://acme-vault/calls"
retention-mode = "governance"
retain-for = "30d"

[accounts.acme.aws]
endpoint = "{acme_proxy}"
server_side_encryption = "aws:kms"
sse_kms_key_id = "{ACME_KEY}"

[accounts.beta]
appid = "{appid}"
store = "s3://beta-vault/calls"
retention-mode = "compliance"
retain-for = "90d"

[accounts.beta.aws]
endpoint = "{beta_proxy}"
server_side_encryption = "aws:kms"
sse_kms_key_id = "{BETA_KEY}"
"#,
        appid = world.sim.config().appid,
    );
    let path = world.dir.path().join("stores.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn import(
    world: &World,
    config: &std::path::Path,
    account: &str,
    n: usize,
    name: &str,
) -> std::process::Command {
    let lines: Vec<String> = world
        .sim
        .sample_callbacks(n, chrono::Utc::now())
        .iter()
        .map(|c| c.to_string())
        .collect();
    let file = world.dir.path().join(name);
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let mut cmd = on_moto(world, config, &["import", "--account", account]);
    cmd.arg(file);
    cmd
}

fn on_moto(world: &World, config: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut cmd = callvault(world, args);
    cmd.env_remove("CALLVAULT_STORE")
        .env("CALLVAULT_CONFIG", config)
        .env("AWS_ACCESS_KEY_ID", crate::moto::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", crate::moto::SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_CHECKSUM_ALGORITHM", "SHA256")
        .env_remove("AWS_ENDPOINT");
    cmd
}

fn bucket(moto: &Moto, name: &str) -> Store {
    Store::open(&StoreConfig {
        s3: moto.options(),
        ..StoreConfig::new(format!("s3://{name}/calls"))
    })
    .expect("store")
}

/// Every archived call of `account`: its key, locked as `mode` until its start plus
/// `retain_for`, encrypted with `kms_key`, and in no other bucket.
async fn archived_as(
    ledger: &Ledger,
    moto: &Moto,
    (bucket_name, store): (&str, &Store),
    (mode, retain_for, kms_key): (LockMode, RetainFor, &str),
) -> usize {
    let uuids = ledger.uuids_in_state(RecordState::Archived).await.unwrap();
    for uuid in &uuids {
        let row = ledger.get(uuid).await.unwrap().unwrap();
        let key = row.object_key.unwrap();
        let lock = store.object_retention(&key).await.unwrap().expect("locked");
        let start = row.record.call_start.unwrap();
        let until = retain_for.until(start).unwrap().with_nanosecond(0).unwrap();
        assert_eq!(
            (lock.mode, lock.until),
            (mode, until),
            "{bucket_name}/{key}"
        );
        let head = moto
            .signed(
                http::Method::HEAD,
                &format!("/{bucket_name}/calls/{key}"),
                "",
            )
            .await;
        let kms = head
            .headers()
            .get("x-amz-server-side-encryption-aws-kms-key-id")
            .and_then(|v| v.to_str().ok());
        assert_eq!(kms, Some(kms_key), "{bucket_name}/{key}");
    }
    uuids.len()
}

async fn each_account_into_its_own_store(kind: BackendKind) {
    let world = World::with_backend(kind).await;
    let moto = Moto::start().await;
    moto.create_bucket("acme-vault", true).await;
    moto.create_bucket("beta-vault", true).await;
    let (acme_proxy, beta_proxy) = (
        S3Proxy::start(&moto.endpoint).await,
        S3Proxy::start(&moto.endpoint).await,
    );
    let config = config(&world, &acme_proxy.endpoint, &beta_proxy.endpoint);
    for account in ["acme", "beta"] {
        assert_exit(
            &output(import(&world, &config, account, 5, "first.jsonl")).await,
            0,
        );
    }

    let out = output(on_moto(&world, &config, &["run", "--json"])).await;
    assert_exit(&out, 0);

    let acme = world.ledger.scoped(&AccountName::parse("acme").unwrap());
    let beta = world.ledger.scoped(&AccountName::parse("beta").unwrap());
    let (acme_store, beta_store) = (bucket(&moto, "acme-vault"), bucket(&moto, "beta-vault"));
    let governance = (LockMode::Governance, RetainFor::Days(30), ACME_KEY);
    let compliance = (LockMode::Compliance, RetainFor::Days(90), BETA_KEY);
    let a = archived_as(&acme, &moto, ("acme-vault", &acme_store), governance).await;
    let b = archived_as(&beta, &moto, ("beta-vault", &beta_store), compliance).await;
    assert!(a > 0 && b > 0, "{a} {b}");
    // Each bucket holds its own account's recordings only (and the same uuids are two
    // objects, one in each bucket).
    assert!(
        acme_proxy
            .requests(S3Op::PutObject)
            .iter()
            .all(|r| r.path.starts_with("/acme-vault/"))
    );
    assert!(
        beta_proxy
            .requests(S3Op::PutObject)
            .iter()
            .all(|r| r.path.starts_with("/beta-vault/"))
    );

    // B's store refuses its credentials from now on; A's is fine.
    for account in ["acme", "beta"] {
        assert_exit(
            &output(import(&world, &config, account, 5, "second.jsonl")).await,
            0,
        );
    }
    let beta_pending = beta.uuids_in_state(RecordState::Pending).await.unwrap();
    assert!(!beta_pending.is_empty());
    beta_proxy.inject(S3Op::PutObject, Fault::Status(403), u32::MAX);
    beta_proxy.inject(S3Op::CreateMultipart, Fault::Status(403), u32::MAX);
    let out = output(on_moto(&world, &config, &["run", "--json"])).await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let accounts = report["accounts"].as_array().unwrap();
    assert_eq!(accounts[0]["account"], "acme");
    assert_eq!(accounts[0]["exit_code"], 0, "{report}");
    assert_eq!(accounts[1]["account"], "beta");
    let beta_code = accounts[1]["exit_code"].as_i64().unwrap();
    assert!(beta_code >= 2, "{report}");
    assert_eq!(report["exit_code"].as_i64(), Some(beta_code));
    assert_eq!(out.status.code(), Some(beta_code as i32));
    let stopped = accounts[1]["stopped_by"].as_str().unwrap_or_default();
    assert!(
        stopped.contains("refused") || stopped.contains("403"),
        "{report}"
    );
    assert!(beta_proxy.injected(S3Op::PutObject) + beta_proxy.injected(S3Op::CreateMultipart) >= 1);
    // A: everything with a recording archived; B: its new calls pending, attempts unspent.
    assert!(
        acme.uuids_in_state(RecordState::Pending)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        acme.uuids_in_state(RecordState::Failed)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        beta.uuids_in_state(RecordState::Failed)
            .await
            .unwrap()
            .is_empty()
    );
    for uuid in &beta_pending {
        let row = beta.get(uuid).await.unwrap().unwrap();
        assert_eq!(
            (row.state, row.attempts),
            (RecordState::Pending, 0),
            "{uuid}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_account_into_its_own_store_on_sqlite() {
    each_account_into_its_own_store(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_account_into_its_own_store_on_postgres() {
    each_account_into_its_own_store(BackendKind::Postgres).await;
}
