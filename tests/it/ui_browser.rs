//! The web page in a real browser: Debian's headless Chromium driven through chromedriver
//! (WebDriver, with fantoccini) logs in, searches a number, opens the call, plays the
//! recording until the `<audio>` element is playing, downloads it and checks its SHA-256
//! against the ledger, logs out, and the access log holds each step. A screenshot of the
//! call's page is kept in `target/test-artifacts/`. Without `chromium` and `chromedriver`
//! the test fails and says to install them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use callvault::ledger::AccessAction;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::cli::wait_for;
use crate::ui_security::{PASSWORD, USER, UiServer};

const CHROMIUM: &str = "chromium";
const CHROMEDRIVER: &str = "chromedriver";

/// The full path of `program` on `PATH`, or a failure that says what to install.
fn require(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is not installed: the browser test needs Debian's chromium and \
                 chromium-driver packages (`sudo apt-get install -y chromium chromium-driver`)"
            )
        })
}

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Driver {
    async fn start(program: &Path) -> Self {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let child = tokio::process::Command::new(program)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        let ready = wait_for(Duration::from_secs(20), async || {
            reqwest::get(&status)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(ready, "chromedriver did not answer on {url} within 20 s");
        Self { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn browser(driver: &Driver, chromium: &Path, profile: &Path, downloads: &Path) -> Client {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
                "--window-size=1280,1400",
                format!("--user-data-dir={}", profile.display()),
            ],
            "prefs": {
                "download.default_directory": downloads,
                "download.prompt_for_download": false,
                "safebrowsing.enabled": false,
            },
        },
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!("a JSON object")
    };
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session through chromedriver")
}

/// Waits for an element; the page's source in the failure.
async fn element(client: &Client, locator: Locator<'_>) -> fantoccini::elements::Element {
    match client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(locator)
        .await
    {
        Ok(found) => found,
        Err(e) => panic!(
            "no {locator:?} ({e}) on {}:\n{}",
            client
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default(),
            client.source().await.unwrap_or_default()
        ),
    }
}

async fn path_is(client: &Client, path: &str) -> bool {
    wait_for(Duration::from_secs(10), async || {
        client.current_url().await.is_ok_and(|u| u.path() == path)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_finds_plays_downloads_and_logs_out_and_each_step_is_logged() {
    let chromium = require(CHROMIUM);
    let chromedriver = require(CHROMEDRIVER);
    let server = UiServer::start().await;
    let uuid = server.call.uuid.as_str().to_owned();
    let want_sha = server
        .row()
        .await
        .sha256
        .expect("an archived call has a SHA-256");
    let profile = tempfile::tempdir().unwrap();
    let downloads = tempfile::tempdir().unwrap();
    let driver = Driver::start(&chromedriver).await;
    let client = browser(&driver, &chromium, profile.path(), downloads.path()).await;

    // Log in.
    client.goto(&server.url("/ui/login")).await.unwrap();
    element(&client, Locator::Id("username"))
        .await
        .send_keys(USER)
        .await
        .unwrap();
    element(&client, Locator::Id("password"))
        .await
        .send_keys(PASSWORD)
        .await
        .unwrap();
    element(&client, Locator::Id("login"))
        .await
        .click()
        .await
        .unwrap();
    assert!(
        path_is(&client, "/ui/").await,
        "the search page after login"
    );

    // Search the number's last digits, open the call.
    element(&client, Locator::Id("number"))
        .await
        .send_keys("13692")
        .await
        .unwrap();
    element(&client, Locator::Id("search"))
        .await
        .click()
        .await
        .unwrap();
    element(&client, Locator::LinkText(&uuid))
        .await
        .click()
        .await
        .unwrap();
    assert!(path_is(&client, &format!("/ui/calls/default/{uuid}")).await);
    let shown = element(&client, Locator::Id("sha256"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(shown, want_sha, "the page shows the ledger's SHA-256");

    // Play until the <audio> element reports it is playing.
    element(&client, Locator::Id("player")).await;
    client
        .execute(
            "const a = document.getElementById('player'); a.muted = true; \
             return a.play().then(() => 'started', e => 'refused: ' + e);",
            vec![],
        )
        .await
        .unwrap();
    let mut state = serde_json::Value::Null;
    let playing = wait_for(Duration::from_secs(15), async || {
        state = client
            .execute(
                "const a = document.getElementById('player'); \
                 return {paused: a.paused, t: a.currentTime, err: a.error && a.error.code, \
                         ready: a.readyState, net: a.networkState};",
                vec![],
            )
            .await
            .unwrap_or_default();
        state["paused"] == false && state["t"].as_f64().is_some_and(|t| t > 0.0)
    })
    .await;
    assert!(playing, "the recording plays in the browser: {state}");

    // A screenshot of the call's page, kept as a test artifact.
    let png = client.screenshot().await.unwrap();
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("ui-call-page.png"), &png).unwrap();

    // Download through the button; the file's SHA-256 is the ledger's.
    element(&client, Locator::Id("download"))
        .await
        .click()
        .await
        .unwrap();
    let file = downloads.path().join(format!("{uuid}.wav"));
    let downloaded = wait_for(Duration::from_secs(15), async || file.is_file()).await;
    assert!(
        downloaded,
        "the download arrived in {}: {:?}",
        downloads.path().display(),
        std::fs::read_dir(downloads.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect::<Vec<_>>()
    );
    let got = hex::encode(Sha256::digest(std::fs::read(&file).unwrap()));
    assert_eq!(
        got, want_sha,
        "the downloaded recording is the archived one"
    );

    // Log out; the page is then the login form again.
    element(&client, Locator::Id("logout"))
        .await
        .click()
        .await
        .unwrap();
    assert!(
        path_is(&client, "/ui/login").await,
        "the login page after logout"
    );
    client.goto(&server.url("/ui/dashboard")).await.unwrap();
    element(&client, Locator::Id("username")).await;
    client.close().await.unwrap();
    drop(driver);

    // The access log holds every step, in order, under the user's name.
    let log = server.access_log(USER).await;
    let steps: Vec<AccessAction> = log.iter().map(|(a, _)| *a).collect();
    let expected = [
        AccessAction::Login,
        AccessAction::View,
        AccessAction::Find,
        AccessAction::View,
        AccessAction::Play,
        AccessAction::Download,
        AccessAction::Logout,
    ];
    let mut at = 0;
    for step in &steps {
        if at < expected.len() && *step == expected[at] {
            at += 1;
        }
    }
    assert_eq!(at, expected.len(), "the steps in order in {log:?}");
    assert!(
        log.contains(&(AccessAction::Find, Some("number=13692 limit=50".into()))),
        "{log:?}"
    );
    assert!(
        log.contains(&(AccessAction::View, Some(format!("call default/{uuid}")))),
        "{log:?}"
    );
}
