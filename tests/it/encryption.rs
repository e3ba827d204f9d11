//! Storage class and server-side encryption reach the server: a run through a recording
//! proxy in front of moto (the in-process s3s-fs server refuses every class but STANDARD),
//! with `--storage-class` and the standard AWS encryption settings; the headers of every
//! write of recordings and sidecars checked, the multipart start and the metadata copy of a
//! large recording included, and the objects' class and encryption read back from the server.

use std::process::Command;

use crate::cli::{assert_exit, callvault, output};
use crate::moto::Moto;
use crate::s3proxy::{S3Op, S3Proxy, SeenRequest};
use crate::world::World;

const BUCKET: &str = "classes";

/// The binary against moto through `endpoint`, storing into [`BUCKET`].
fn on_moto(world: &World, moto: &Moto, endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = callvault(world, args);
    for (k, v) in moto.env() {
        cmd.env(k, v);
    }
    cmd.env("AWS_ENDPOINT", endpoint)
        .env("CALLVAULT_STORE", format!("s3://{BUCKET}/calls"));
    cmd
}

const KMS_KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/callvault-test";

/// `run` with 5 MiB parts, the STANDARD_IA class and KMS encryption under [`KMS_KEY`],
/// plus `extra` flags.
fn encrypted_run(world: &World, moto: &Moto, endpoint: &str, extra: &[&str]) -> Command {
    let mut args = vec![
        "run",
        "--part-size-mib",
        "5",
        "--storage-class",
        "standard_ia",
    ];
    args.extend_from_slice(extra);
    let mut cmd = on_moto(world, moto, endpoint, &args);
    cmd.env("AWS_SERVER_SIDE_ENCRYPTION", "aws:kms")
        .env("AWS_SSE_KMS_KEY_ID", KMS_KEY)
        .env("AWS_SSE_BUCKET_KEY_ENABLED", "true");
    cmd
}

fn assert_headers(request: &SeenRequest, want: &[(&str, &str)]) {
    for (name, value) in want {
        assert_eq!(
            request.header(name),
            Some(*value),
            "{name} on {:?} {}: {:?}",
            request.op,
            request.path,
            request.headers
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_class_and_kms_encryption_reach_the_server_on_every_write() {
    // Arrange: a small recording (one PUT) and one larger than a part (multipart; its
    // SHA-256 goes into its sidecar), written through the proxy; then, without sidecars,
    // another large one (multipart, then the copy that puts its SHA-256 in its metadata).
    let world = World::new().await;
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET, false).await;
    let proxy = S3Proxy::start(&moto.endpoint).await;
    world.import_call("small-1", "small-1.wav", 20_000).await;
    world
        .import_call("big-1", "big-1.wav", 6 * 1024 * 1024)
        .await;
    let run = encrypted_run(&world, &moto, &proxy.endpoint, &[]);

    // Act
    let out = output(run).await;

    // Assert
    assert_exit(&out, 0);
    let encryption = [
        ("x-amz-server-side-encryption", "aws:kms"),
        ("x-amz-server-side-encryption-aws-kms-key-id", KMS_KEY),
        ("x-amz-server-side-encryption-bucket-key-enabled", "true"),
    ];
    let mut both = encryption.to_vec();
    both.push(("x-amz-storage-class", "STANDARD_IA"));
    let recordings = proxy.requests(S3Op::PutObject);
    let starts = proxy.requests(S3Op::CreateMultipart);
    let copies = proxy.requests(S3Op::CopyObject);
    let (sidecars, manifests): (Vec<_>, Vec<_>) = proxy
        .requests(S3Op::PutMetadata)
        .into_iter()
        .partition(|r| r.path.ends_with(".wav.json"));
    let count = |v: &[SeenRequest]| v.len();
    assert_eq!(
        (
            count(&recordings),
            count(&starts),
            count(&copies),
            count(&sidecars),
            count(&manifests)
        ),
        (1, 1, 0, 2, 2),
        "one PUT, one multipart start (no copy: the sidecar carries the SHA-256), two sidecars, \
         one manifest and its checkpoint"
    );
    proxy.clear();
    world
        .import_call("big-2", "big-2.wav", 6 * 1024 * 1024)
        .await;
    let bare = encrypted_run(&world, &moto, &proxy.endpoint, &["--no-sidecar"]);
    assert_exit(&output(bare).await, 0);
    let copies = proxy.requests(S3Op::CopyObject);
    assert_eq!(copies.len(), 1, "the metadata copy of the large recording");
    for request in recordings
        .iter()
        .chain(&starts)
        .chain(&copies)
        .chain(&sidecars)
    {
        assert_headers(request, &both);
    }
    // The manifest is encrypted too, and stays in the bucket's default class (it is read
    // back by every `verify --manifests`).
    assert_headers(&manifests[0], &encryption);
    assert_eq!(manifests[0].header("x-amz-storage-class"), None);
    // What the server kept: the class and the key, on both large recordings too.
    for key in [
        recordings[0].path.as_str(),
        starts[0].path.as_str(),
        copies[0].path.as_str(),
        sidecars[0].path.as_str(),
    ] {
        let head = moto.signed(http::Method::HEAD, key, "").await;
        assert!(head.status().is_success(), "{key}: {}", head.status());
        let header = |name: &str| {
            head.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            header("x-amz-storage-class").as_deref(),
            Some("STANDARD_IA"),
            "{key}"
        );
        assert_eq!(
            header("x-amz-server-side-encryption-aws-kms-key-id").as_deref(),
            Some(KMS_KEY),
            "{key}"
        );
    }

    // An archive tier that cannot be read back at once is refused before anything is claimed.
    let glacier = on_moto(
        &world,
        &moto,
        &proxy.endpoint,
        &["run", "--storage-class", "GLACIER"],
    );
    let refused = output(glacier).await;
    assert_exit(&refused, 2);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("GLACIER_IR"));
}
