//! Hostile download links: links and redirects to hosts or addresses the policy does not
//! allow are refused before a byte is fetched, nothing is archived, and the refusal shows
//! in the ledger without the link's signed query.

use callvault::archive::{RunOptions, RunResult, run_pass};
use callvault::domain::RecordState;
use callvault::provider::Downloader;
use callvault::simulator::DownloadFault;

use crate::world::{LOOPBACK, World};

impl World {
    /// A run whose downloader allows `hosts` (besides the simulator's) and `networks`.
    async fn run_with_policy(
        &self,
        opts: &RunOptions,
        hosts: &[&str],
        networks: &[&str],
    ) -> RunResult {
        let mut deps = self.deps();
        deps.downloader =
            Downloader::new(self.downloader_settings(hosts, networks)).expect("downloader");
        run_pass(&deps, opts).await.expect("the ledger works")
    }

    /// `http://localhost:PORT/`: the simulator under a name that is not the API's host.
    fn localhost_base(&self) -> String {
        format!("http://localhost:{}/", self.sim.local_addr().port())
    }
}

/// One attempt per run, and few attempts in all, so refusals show run by run.
fn one_attempt_per_run(world: &World) -> RunOptions {
    let mut opts = world.options();
    opts.retry.attempts_per_run = 1;
    opts.retry.max_attempts = 3;
    opts
}

#[tokio::test]
async fn a_link_to_another_host_is_refused_until_the_retry_limit_and_nothing_is_archived() {
    let world = World::new().await;
    world
        .import_call("elsewhere", "elsewhere.wav", 48_044)
        .await;
    let base = world.localhost_base();
    world.sim.set_faults(|f| f.link_base = Some(base));
    let opts = one_attempt_per_run(&world);

    let first = world.run(&opts).await;

    assert_eq!(first.report.retry_later, 1, "{:?}", first.report);
    let row = world
        .ledger
        .get(&crate::world::cu("elsewhere"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, RecordState::Pending);
    assert_eq!(row.last_error_code.as_deref(), Some("url_refused"));
    let message = row.last_error.unwrap();
    assert!(message.contains("localhost"), "{message}");
    assert!(message.contains("--download-host"), "{message}");
    assert!(!message.contains("sig=") && !message.contains("expires="));

    for _ in 0..2 {
        world.run(&opts).await;
    }

    let row = world
        .ledger
        .get(&crate::world::cu("elsewhere"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.state, row.attempts, row.last_error_code.as_deref()),
        (RecordState::Failed, 3, Some("url_refused"))
    );
    assert_eq!(world.sim.stats().downloads, 0, "nothing was fetched");
    assert!(world.object_keys().await.is_empty());
}

#[tokio::test]
async fn an_allowed_host_must_still_resolve_to_an_allowed_address() {
    let world = World::new().await;
    world.import_call("named", "named.wav", 48_044).await;
    let base = world.localhost_base();
    world.sim.set_faults(|f| f.link_base = Some(base));
    let opts = one_attempt_per_run(&world);

    // `localhost` is allowed as a host, but its addresses are loopback, not allowed here.
    let refused = world.run_with_policy(&opts, &["localhost"], &[]).await;

    assert_eq!(refused.report.retry_later, 1);
    let row = world
        .ledger
        .get(&crate::world::cu("named"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.last_error_code.as_deref(), Some("url_refused"));
    assert!(row.last_error.unwrap().contains("loopback"));
    assert_eq!(world.sim.stats().downloads, 0);

    // Allowed host and allowed network: the same link is fetched and archived.
    let archived = world
        .run_with_policy(&opts, &["localhost"], &[LOOPBACK])
        .await;

    assert_eq!(archived.report.archived, 1, "{:?}", archived.report);
    assert_eq!(world.verify_archived().await, 1);
}

#[tokio::test]
async fn links_to_metadata_and_other_special_addresses_are_refused_even_when_allowlisted() {
    let world = World::new().await;
    world.import_call("meta", "meta.wav", 48_044).await;
    world.import_call("other", "other.wav", 48_044).await;
    world
        .sim
        .set_faults(|f| f.link_base = Some("http://169.254.169.254/".into()));
    let opts = one_attempt_per_run(&world);

    let result = world
        .run_with_policy(&opts, &["169.254.169.254"], &[LOOPBACK, "169.254.0.0/16"])
        .await;

    assert_eq!(result.report.retry_later, 2);
    let row = world
        .ledger
        .get(&crate::world::cu("meta"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.last_error_code.as_deref(), Some("url_refused"));
    assert!(row.last_error.unwrap().contains("cloud metadata"));

    // The simulator's own address, but only 127.0.0.2 is allowed: refused as loopback.
    world.sim.set_faults(|f| f.link_base = None);
    let result = world.run_with_policy(&opts, &[], &["127.0.0.2/32"]).await;

    assert_eq!(result.report.retry_later, 2);
    let row = world
        .ledger
        .get(&crate::world::cu("other"))
        .await
        .unwrap()
        .unwrap();
    assert!(row.last_error.unwrap().contains("a loopback address"));
    assert_eq!(world.sim.stats().downloads, 0);
    assert!(world.object_keys().await.is_empty());
}

#[tokio::test]
async fn a_redirect_to_a_host_not_allowed_is_refused_and_a_fresh_link_succeeds() {
    let world = World::new().await;
    world.import_call("hop", "hop.wav", 48_044).await;
    world
        .sim
        .push_download_fault("hop.wav", DownloadFault::RedirectTo(world.localhost_base()));
    let opts = one_attempt_per_run(&world);

    let refused = world.run(&opts).await;

    assert_eq!(refused.report.retry_later, 1);
    let row = world
        .ledger
        .get(&crate::world::cu("hop"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.last_error_code.as_deref(), Some("url_refused"));
    let message = row.last_error.unwrap();
    assert!(message.contains("redirect refused"), "{message}");
    assert!(message.contains("localhost"), "{message}");
    assert!(!message.contains("sig="), "{message}");
    assert_eq!(
        world.sim.stats().downloads,
        1,
        "only the first hop was fetched"
    );
    assert!(world.object_keys().await.is_empty());

    let later = world.run(&opts).await;

    assert_eq!(later.report.archived, 1);
    assert_eq!(world.verify_archived().await, 1);
}

#[tokio::test]
async fn three_redirects_within_the_policy_are_followed_and_a_fourth_is_not() {
    let world = World::new().await;
    world.import_call("three", "three.wav", 48_044).await;
    world.import_call("four", "four.wav", 48_044).await;
    for _ in 0..3 {
        world
            .sim
            .push_download_fault("three.wav", DownloadFault::RedirectTo(world.sim.api_url()));
    }
    for _ in 0..4 {
        world
            .sim
            .push_download_fault("four.wav", DownloadFault::RedirectTo(world.sim.api_url()));
    }
    let opts = one_attempt_per_run(&world);

    let first = world.run(&opts).await;

    assert_eq!(
        (first.report.archived, first.report.retry_later),
        (1, 1),
        "{:?}",
        first.report
    );
    assert_eq!(
        world
            .ledger
            .get(&crate::world::cu("three"))
            .await
            .unwrap()
            .unwrap()
            .state,
        RecordState::Archived
    );
    let four = world
        .ledger
        .get(&crate::world::cu("four"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(four.last_error_code.as_deref(), Some("url_refused"));
    assert!(four.last_error.unwrap().contains("more than 3 redirects"));
    assert_eq!(world.sim.stats().downloads, 4 + 4);

    let second = world.run(&opts).await;

    assert_eq!(second.report.archived, 1);
    assert_eq!(world.verify_archived().await, 2);
}

/// A byte pipe to the simulator that counts its connections: an HTTP proxy for plain-HTTP
/// requests (the simulator's server reads the absolute-form request line).
async fn counting_pipe(
    to: std::net::SocketAddr,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (url, count)
}

#[tokio::test]
async fn downloads_use_the_configured_proxy_and_only_that() {
    let world = World::new().await;
    world.import_call("proxied", "proxied.wav", 48_044).await;
    let (proxy, connections) = counting_pipe(world.sim.local_addr()).await;
    let mut settings = world.downloader_settings(&[], &[LOOPBACK]);
    settings.proxy = Some(proxy.parse().unwrap());
    let mut deps = world.deps();
    deps.downloader = Downloader::new(settings).unwrap();

    let result = run_pass(&deps, &world.options()).await.unwrap();

    assert_eq!(result.report.archived, 1, "{:?}", result.report);
    assert_eq!(world.verify_archived().await, 1);
    assert!(connections.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn the_callback_secret_never_reaches_the_logs_the_answers_or_the_ledger() {
    use std::process::Stdio;
    use std::time::Duration;

    const SECRET: &str = "cb-secret-canary-7f3a9c21e5";
    let world = World::new().await;
    let port = crate::serve::free_port();
    let args = [
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--schedule",
        "*/1 * * * * *",
        "--grace",
        "2s",
        "--log",
        "debug",
    ];
    let mut child = crate::cli::callvault(&world, &args)
        .env("CALLVAULT_CALLBACK_SECRET", SECRET)
        .env("CALLVAULT_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the output as it comes: a full pipe would block the process's logging.
    let outputs = crate::serve::drain(&mut child);
    let base = crate::serve::wait_ready(port).await;

    // Good callbacks by path and by query, a wrong secret, a body that is not a record.
    let client = reqwest::Client::new();
    let callbacks = world.sim.sample_callbacks(4, chrono::Utc::now());
    let mut answers = String::new();
    let posts = callbacks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let path = match i % 2 {
                0 => format!("/callback/{SECRET}"),
                _ => format!("/callback?secret={SECRET}"),
            };
            (path, c.to_string())
        })
        .chain([
            (format!("/callback/{SECRET}x"), callbacks[0].to_string()),
            (format!("/callback/{SECRET}"), "{\"uuid\": ".to_owned()),
        ]);
    for (path, body) in posts {
        let response = client
            .post(format!("{base}{path}"))
            .body(body)
            .send()
            .await
            .unwrap();
        answers.push_str(&response.text().await.unwrap());
    }
    let archived = crate::cli::wait_for(Duration::from_secs(30), async || {
        world.count(RecordState::Archived).await == callbacks.len()
    })
    .await;
    assert!(archived, "the scheduled passes archived the received calls");
    for page in ["/metrics", "/readyz", "/healthz"] {
        answers.push_str(
            &reqwest::get(format!("{base}{page}"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }

    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let (stdout, stderr) = outputs.collect();

    assert_eq!(status.code(), Some(0));
    let ledger = std::fs::read(world.dir.path().join("ledger.db")).unwrap();
    let wal = std::fs::read(world.dir.path().join("ledger.db-wal")).unwrap_or_default();
    let everything = [stdout, stderr, answers.into_bytes(), ledger, wal].concat();
    let text = String::from_utf8_lossy(&everything);
    assert!(
        text.contains("callvault_records"),
        "the answers were captured"
    );
    assert!(
        text.contains("\"level\":\"DEBUG\""),
        "the debug log was captured"
    );
    for canary in [
        SECRET,
        world.sim.config().accesskey.as_str(),
        crate::world::S3_SECRET_KEY,
        crate::world::S3_ACCESS_KEY,
        "sig=",
    ] {
        assert!(!text.contains(canary), "{canary:?} leaked");
    }
}
