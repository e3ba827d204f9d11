//! An S3 server that enforces Object Lock, for the compliance tests: the in-process s3s-fs
//! server knows no retention, legal holds or refused deletes; `moto` (PyPI, `moto[server]`)
//! does. The suite installs it itself, pinned, into a cached virtual environment under the
//! target directory (as `.ci/validate-deploy` does for its validators), and starts
//! `moto_server` on a free loopback port per test. When it cannot be had, the test fails
//! with what to do: these tests are never skipped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use callvault::store::S3Options;
use tokio::process::{Child, Command};
use tokio::sync::OnceCell;

/// The pinned requirement; the venv is rebuilt when it changes.
const REQUIREMENT: &str = "moto[server]==5.2.5";
pub(crate) const ACCESS_KEY: &str = "moto-access-key";
pub(crate) const SECRET_KEY: &str = "moto-secret-key";
/// How long moto may take to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);

static VENV: OnceCell<PathBuf> = OnceCell::const_new();

/// The venv's `moto_server`, installed on first use (once per test binary; a stamp file
/// records the requirement it was built from).
async fn moto_server_bin() -> PathBuf {
    VENV.get_or_init(|| async {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/moto-venv");
        let bin = venv.join("bin/moto_server");
        let stamp = venv.join(".callvault-requirement");
        let ready =
            bin.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == REQUIREMENT);
        if !ready {
            let venv_s = venv.to_string_lossy().into_owned();
            run(
                "python3",
                &["-m", "venv", "--clear", &venv_s],
                "create a Python virtual environment for moto (is python3 with venv installed?)",
            )
            .await;
            let pip = venv.join("bin/pip").to_string_lossy().into_owned();
            run(
                &pip,
                &[
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-input",
                    REQUIREMENT,
                ],
                "install moto from PyPI (the Object Lock tests need it: allow access to PyPI)",
            )
            .await;
            std::fs::write(&stamp, REQUIREMENT).expect("write the moto venv's stamp");
        }
        assert!(
            bin.exists(),
            "{} missing after installing moto",
            bin.display()
        );
        venv
    })
    .await
    .join("bin/moto_server")
}

async fn run(program: &str, args: &[&str], what: &str) {
    let out = Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot {what}: {program}: {e}"));
    assert!(
        out.status.success(),
        "cannot {what}: {program} {args:?} exited {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `moto_server` on loopback; killed when dropped.
pub struct Moto {
    pub endpoint: String,
    _child: Child,
}

impl Moto {
    pub async fn start() -> Self {
        let bin = moto_server_bin().await;
        // A free port: bind, read, release (moto binds it a moment later).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if http
                .get(format!("{endpoint}/moto-api/"))
                .send()
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "moto_server did not answer on {endpoint} within {START_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            endpoint,
            _child: child,
        }
    }

    /// Creates `bucket`, with Object Lock enabled (and so versioning) when `object_lock`.
    pub async fn create_bucket(&self, bucket: &str, object_lock: bool) {
        let mut request = reqwest::Client::new().put(format!("{}/{bucket}", self.endpoint));
        if object_lock {
            request = request.header("x-amz-bucket-object-lock-enabled", "true");
        }
        let response = request.send().await.expect("create bucket");
        assert!(
            response.status().is_success(),
            "creating bucket {bucket}: {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// The `AWS_*` settings (as environment variable names) that reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_CHECKSUM_ALGORITHM", "SHA256".into()),
        ]
    }

    /// A SigV4-signed request straight at moto, for what callvault does not ask itself (an
    /// object's headers, its versions). `path` is `/bucket/key`; `query` may be empty.
    pub async fn signed(&self, method: http::Method, path: &str, query: &str) -> reqwest::Response {
        use object_store::aws::{AwsAuthorizer, AwsCredential};
        use object_store::client::{HttpRequest, HttpRequestBody};
        let credential = AwsCredential {
            key_id: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
            token: None,
        };
        let mut url = format!("{}{path}", self.endpoint);
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let mut request: HttpRequest = http::Request::builder()
            .method(method.clone())
            .uri(url.as_str())
            .body(HttpRequestBody::empty())
            .expect("a request");
        AwsAuthorizer::new(&credential, "s3", "us-east-1")
            .try_authorize(&mut request, None)
            .expect("signed");
        let mut call = reqwest::Client::new().request(method, url.as_str());
        for (name, value) in request.headers() {
            call = call.header(name.as_str(), value.as_bytes());
        }
        call.send().await.expect("moto answers")
    }

    /// The version ids `bucket` holds of `key` (newest first, as S3 lists them).
    pub async fn versions(&self, bucket: &str, key: &str) -> Vec<String> {
        let answer = self
            .signed(
                http::Method::GET,
                &format!("/{bucket}"),
                &format!(
                    "prefix={}&versions=",
                    url::form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>()
                ),
            )
            .await;
        assert!(
            answer.status().is_success(),
            "listing versions: {}",
            answer.status()
        );
        let body = answer.text().await.expect("a listing");
        body.split("<Version>")
            .skip(1)
            .filter(|v| v.contains(&format!("<Key>{key}</Key>")))
            .filter_map(|v| {
                let (_, rest) = v.split_once("<VersionId>")?;
                Some(rest.split_once("</VersionId>")?.0.to_owned())
            })
            .collect()
    }

    pub fn options(&self) -> S3Options {
        self.env()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect()
    }
}
