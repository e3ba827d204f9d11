//! `serve --ui` over two accounts: each user sees the calls of its accounts and nothing of
//! the others'. Every route tried by the user of the other account answers as an unknown
//! call would (the same status, the same body) or lists nothing of that account; the same
//! uuid in both accounts leads each user to its own copy; an old `/ui/calls/<uuid>` link
//! leads to the call only when one of the user's accounts holds it; a user of every account
//! sees both, each row naming its account; a proxy user the users file does not list sees
//! nothing; and every refused attempt is in the access log of the account it aimed at.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use callvault::accounts::AccountName;
use callvault::archive::{Shutdown, run_pass};
use callvault::callback::parse_record;
use callvault::domain::RecordState;
use callvault::ledger::{AccessAction, AccessQuery, BackendKind, Ledger};
use callvault::serve::{ServeOptions, serve};
use callvault::store::{Store, StoreConfig};
use callvault::timefmt::default_provider_tz;
use callvault::ui::{ProxyAuth, Ui, UiAccount, UiConfig, UserAccounts, UserName, UsersFile};
use reqwest::header::COOKIE;
use secrecy::SecretString;

use crate::ui_security::{WAV_SIZE, client, cookie_of, csrf_in};
use crate::world::{BUCKET, TEST_PART, World};

const PASSWORD: &str = "correct horse battery staple";
const PROXY_HEADER: &str = "x-forwarded-user";

/// One call of the test: its account, uuid, shown number and recording's size.
struct Call {
    account: &'static str,
    uuid: &'static str,
    number: &'static str,
    size: u64,
}

/// The same uuid in both accounts (each its own number and recording), and one call only
/// in each.
const CALLS: [Call; 4] = [
    Call {
        account: "acme",
        uuid: "shared-0001",
        number: "0150111111",
        size: WAV_SIZE,
    },
    Call {
        account: "acme",
        uuid: "acme-only-0002",
        number: "0150111112",
        size: WAV_SIZE,
    },
    Call {
        account: "globex",
        uuid: "shared-0001",
        number: "0260999999",
        size: WAV_SIZE + 16_000,
    },
    Call {
        account: "globex",
        uuid: "globex-only-0003",
        number: "0260999998",
        size: WAV_SIZE + 16_000,
    },
];

fn account(name: &str) -> AccountName {
    AccountName::parse(name).unwrap()
}

/// Two accounts with archived calls, the users of the test, and the page over both.
struct Server {
    world: World,
    page: Page,
    shutdown: Shutdown,
}

impl std::ops::Deref for Server {
    type Target = Page;

    fn deref(&self) -> &Page {
        &self.page
    }
}

/// The page at an address, asked as its users.
struct Page {
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.stop_claiming.cancel();
    }
}

impl Server {
    async fn start(kind: BackendKind) -> Self {
        let world = World::with_backend(kind).await;
        let mut accounts = BTreeMap::new();
        for name in ["acme", "globex"] {
            let ledger = world.ledger.scoped(&account(name));
            let store = Store::open(&StoreConfig {
                s3: world.s3.options(),
                part_size: TEST_PART,
                ..StoreConfig::new(format!("s3://{BUCKET}/{name}"))
            })
            .unwrap();
            archive(&world, &ledger, &store, name).await;
            accounts.insert(account(name), UiAccount { ledger, store });
        }
        let users = UsersFile::new(world.dir.path().join("users"));
        let only = |name: &str| Some(UserAccounts::Only(vec![account(name)]));
        let pw = SecretString::from(PASSWORD);
        for (user, password, accounts) in [
            ("ann", Some(&pw), only("acme")),
            ("gus", Some(&pw), only("globex")),
            ("boss", Some(&pw), Some(UserAccounts::All)),
            ("proxied", None, only("globex")),
        ] {
            users
                .put(&UserName::parse(user).unwrap(), password, accounts)
                .unwrap();
        }
        let mut config = UiConfig::new(users, default_provider_tz());
        config.secure_cookies = false;
        config.proxy = Some(ProxyAuth {
            header: PROXY_HEADER.parse().unwrap(),
            networks: vec!["127.0.0.0/8".parse().unwrap()],
        });
        let ui = Ui::with_accounts(world.ledger.clone(), accounts, config, world.clock.clock());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::default();
        let options = ServeOptions {
            ledger: world.ledger.clone(),
            accounts: vec![callvault::accounts::AccountName::default_account()],
            receiver: None,
            ui: Some(ui),
            retention: chrono::Duration::days(90),
            passes: None,
            syncs: None,
        };
        let stop = shutdown.clone();
        tokio::spawn(async move { serve(listener, options, stop).await.unwrap() });
        Self {
            world,
            page: Page { addr },
            shutdown,
        }
    }

    /// What `account`'s access log holds of `actor`: (action, query, calls).
    async fn log(
        &self,
        account_name: &str,
        actor: &str,
    ) -> Vec<(AccessAction, String, Vec<String>)> {
        let query = AccessQuery {
            actor: Some(actor.to_owned()),
            limit: 1000,
            ..AccessQuery::default()
        };
        let ledger = self.world.ledger.scoped(&account(account_name));
        let entries = ledger.access_entries(&query).await.unwrap();
        entries
            .into_iter()
            .map(|e| {
                let calls = e
                    .entry
                    .calls
                    .iter()
                    .map(|c| c.as_str().to_owned())
                    .collect();
                (e.entry.action, e.entry.query.unwrap_or_default(), calls)
            })
            .collect()
    }
}

impl Page {
    /// Logs in as `user`; the `Cookie` header value of its session.
    async fn login(&self, user: &str) -> String {
        let client = client();
        let url = format!("http://{}/ui/login", self.addr);
        let form = client.get(&url).send().await.unwrap();
        let cookie = cookie_of(form.headers(), "callvault_login_csrf").unwrap();
        let csrf = csrf_in(&form.text().await.unwrap());
        let answer = client
            .post(&url)
            .header(COOKIE, format!("callvault_login_csrf={cookie}"))
            .form(&[("username", user), ("password", PASSWORD), ("csrf", &csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 303, "{user} logs in");
        let token = cookie_of(answer.headers(), "callvault_session").unwrap();
        format!("callvault_session={token}")
    }

    /// `path` as the session `cookie`'s user: the status, the `Location`, the body (as
    /// text) and its length in bytes.
    async fn get(&self, path: &str, cookie: &str) -> (u16, String, String, usize) {
        self.ask(path, COOKIE.as_str(), cookie).await
    }

    /// `path` as the proxy's user `name`.
    async fn get_proxied(&self, path: &str, name: &str) -> (u16, String, String, usize) {
        self.ask(path, PROXY_HEADER, name).await
    }

    async fn ask(&self, path: &str, header: &str, value: &str) -> (u16, String, String, usize) {
        let answer = client()
            .get(format!("http://{}{path}", self.addr))
            .header(header, value)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let location = answer
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned())
            .unwrap_or_default();
        // Bytes, not text: a recording's length is its bytes'.
        let body = answer.bytes().await.unwrap_or_default();
        (
            status,
            location,
            String::from_utf8_lossy(&body).into_owned(),
            body.len(),
        )
    }
}

/// Imports `name`'s calls into its ledger, each with its own recording, and archives them.
async fn archive(world: &World, ledger: &Ledger, store: &Store, name: &str) {
    let mut records = Vec::new();
    for call in CALLS.iter().filter(|c| c.account == name) {
        let file = format!("20000013-20261101-{}-{name}.wav", call.uuid);
        world.sim.add_recording(&file, call.size);
        let json = serde_json::json!({
            "uuid": call.uuid, "companycode": 20000013, "recordfilename": file,
            "starttime": "2026-11-01 10:00:00", "answertime": "2026-11-01 10:00:05",
            "endtime": "2026-11-01 10:00:08", "duration": 8, "billsec": 3, "type": "callout",
            "disnumber": call.number, "destnumber": "02566601234", "extnumber": "7007",
            "crmid": format!("agent-{name}"), "id": 4711,
        });
        records.push(parse_record(&json.to_string(), default_provider_tz()).unwrap());
    }
    ledger.import(&records, chrono::Utc::now()).await.unwrap();
    let result = run_pass(
        &world.deps_with(ledger.clone(), store.clone()),
        &world.options(),
    )
    .await
    .unwrap();
    assert_eq!(result.report.archived, records.len() as u64, "{result:?}");
    for record in &records {
        let row = ledger.get(&record.uuid).await.unwrap().unwrap();
        assert_eq!(row.state, RecordState::Archived);
    }
}

/// What nobody but a user of `account` may see of it: its calls' numbers and agent.
fn secrets_of(account_name: &str) -> Vec<String> {
    let mut secrets: Vec<String> = CALLS
        .iter()
        .filter(|c| c.account == account_name)
        .map(|c| c.number.to_owned())
        .collect();
    secrets.push(format!("agent-{account_name}"));
    secrets
}

/// The other account of the two.
fn other(account_name: &str) -> &'static str {
    if account_name == "acme" {
        "globex"
    } else {
        "acme"
    }
}

/// The routes of one call: its page, its player's audio, its download.
fn call_routes(prefix: &str) -> [String; 3] {
    [
        prefix.to_owned(),
        format!("{prefix}/audio"),
        format!("{prefix}/download"),
    ]
}

async fn each_user_sees_only_its_account(kind: BackendKind) {
    let server = Server::start(kind).await;
    for (user, mine) in [("ann", "acme"), ("gus", "globex")] {
        let cookie = server.login(user).await;
        let theirs = other(mine);
        // Every route of every call of the other account answers as an unknown call does.
        for call in CALLS.iter().filter(|c| c.account == theirs) {
            let asked = call_routes(&format!("/ui/calls/{theirs}/{}", call.uuid));
            let unknown = call_routes(&format!("/ui/calls/{mine}/no-such-call"));
            for (asked, unknown) in asked.iter().zip(&unknown) {
                let (status, _, body, _) = server.get(asked, &cookie).await;
                let (unknown_status, _, unknown_body, _) = server.get(unknown, &cookie).await;
                assert_eq!((status, &body), (404, &unknown_body), "{user} {asked}");
                assert_eq!(unknown_status, 404);
            }
        }
        // Its own calls, the shared uuid included, are its own copies.
        for call in CALLS.iter().filter(|c| c.account == mine) {
            let [page, audio, download] = call_routes(&format!("/ui/calls/{mine}/{}", call.uuid));
            let (status, _, body, _) = server.get(&page, &cookie).await;
            assert_eq!(status, 200, "{user} {page}");
            assert!(body.contains(call.number), "{user} {page}");
            assert!(
                body.contains(&format!("{page}/audio")),
                "the player names the account"
            );
            assert_eq!(server.get(&audio, &cookie).await.0, 200);
            let (status, _, _, len) = server.get(&download, &cookie).await;
            assert_eq!((status, len as u64), (200, call.size), "{download}");
        }
        // An account that is not served, and a path-like account, are unknown too.
        for path in [
            "/ui/calls/initech/shared-0001",
            "/ui/calls/..%2Fglobex/shared-0001",
        ] {
            assert_eq!(server.get(path, &cookie).await.0, 404, "{path}");
        }
        // Lists: search and the dashboard show nothing of the other account.
        let theirs_only = CALLS
            .iter()
            .find(|c| c.account == theirs && !c.uuid.starts_with("shared"))
            .unwrap();
        for path in [
            "/ui/?company=20000013".to_owned(),
            "/ui/?uuid=shared-0001".to_owned(),
            format!("/ui/?number={}", theirs_only.number),
            format!("/ui/?uuid={}", theirs_only.uuid),
            "/ui/dashboard".to_owned(),
            "/ui/".to_owned(),
        ] {
            let (status, _, page, _) = server.get(&path, &cookie).await;
            assert_eq!(status, 200, "{user} {path}");
            // What was found (the search form above it shows what the user typed).
            let body = page.split(r#"id="results""#).nth(1).unwrap_or(&page);
            for secret in secrets_of(theirs).iter().chain([&theirs.to_owned()]) {
                assert!(
                    !body.contains(secret.as_str()),
                    "{user} {path} shows {secret}"
                );
            }
            assert!(!body.contains(theirs_only.uuid), "{user} {path}");
        }
        let (_, _, found, _) = server.get("/ui/?company=20000013", &cookie).await;
        assert!(found.contains("2 call(s)"), "{found}");
        assert!(found.contains(&format!("/ui/calls/{mine}/shared-0001")));
        let (_, _, dashboard, _) = server.get("/ui/dashboard", &cookie).await;
        assert!(
            dashboard.contains("<strong>2</strong> archived"),
            "{dashboard}"
        );
        // Each refused attempt is in the log of the account it aimed at, with its call.
        let refused: Vec<_> = server
            .log(theirs, user)
            .await
            .into_iter()
            .filter(|(action, _, _)| *action == AccessAction::Refused)
            .collect();
        assert_eq!(refused.len(), 6, "three routes of two calls: {refused:?}");
        for what in ["call", "audio", "download"] {
            let aimed = format!("{what} {theirs}/{}", theirs_only.uuid);
            assert!(
                refused
                    .iter()
                    .any(|(_, q, calls)| q.starts_with(&aimed) && calls == &[theirs_only.uuid]),
                "{aimed} in {refused:?}"
            );
        }
        // The user's own log: its login, views and searches, and the probe of an account
        // not served here; the other account's log holds nothing else of the user.
        let own = server.log(mine, user).await;
        assert!(own.iter().any(|(a, _, _)| *a == AccessAction::Login));
        assert!(
            own.iter()
                .any(|(a, q, _)| *a == AccessAction::Refused && q.starts_with("call initech/"))
        );
        assert!(
            server
                .log(theirs, user)
                .await
                .iter()
                .all(|(a, _, _)| *a == AccessAction::Refused),
            "the other account's log holds only the refusals"
        );
    }
}

on_both_backends!(each_user_sees_only_its_account);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_links_lead_to_the_call_only_in_exactly_one_of_the_users_accounts() {
    let server = Server::start(BackendKind::Sqlite).await;
    let ann = server.login("ann").await;
    // The shared uuid: ann's own copy.
    let (status, location, _, _) = server.get("/ui/calls/shared-0001", &ann).await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/ui/calls/acme/shared-0001")
    );
    let (status, _, _, len) = server.get("/ui/calls/shared-0001/download", &ann).await;
    assert_eq!((status, len as u64), (200, WAV_SIZE), "acme's recording");
    // Only globex holds it: as an unknown call, and the attempt is in globex's log.
    for (asked, unknown) in call_routes("/ui/calls/globex-only-0003")
        .iter()
        .zip(&call_routes("/ui/calls/no-such-call"))
    {
        let (status, _, body, _) = server.get(asked, &ann).await;
        let (_, _, unknown_body, _) = server.get(unknown, &ann).await;
        assert_eq!((status, &body), (404, &unknown_body), "{asked}");
    }
    let refused = server.log("globex", "ann").await;
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|(a, q, calls)| *a == AccessAction::Refused
                && q.contains("globex-only-0003")
                && calls == &["globex-only-0003"])
    );
    // A user of both accounts: the uuid in both is ambiguous (404), the other leads on.
    let boss = server.login("boss").await;
    assert_eq!(server.get("/ui/calls/shared-0001", &boss).await.0, 404);
    let (status, location, _, _) = server.get("/ui/calls/globex-only-0003", &boss).await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/ui/calls/globex/globex-only-0003")
    );
    assert!(
        server
            .log("acme", "boss")
            .await
            .iter()
            .all(|(a, _, _)| *a != AccessAction::Refused)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_of_every_account_sees_both_each_row_naming_its_account() {
    let server = Server::start(BackendKind::Sqlite).await;
    let boss = server.login("boss").await;
    let (status, _, found, _) = server.get("/ui/?company=20000013", &boss).await;
    assert_eq!(status, 200);
    assert!(found.contains("4 call(s)"), "{found}");
    for call in &CALLS {
        assert!(found.contains(&format!("/ui/calls/{}/{}", call.account, call.uuid)));
        assert!(found.contains(call.number));
    }
    for call in &CALLS {
        let (status, _, page, _) = server
            .get(&format!("/ui/calls/{}/{}", call.account, call.uuid), &boss)
            .await;
        assert_eq!(status, 200);
        assert!(
            page.contains(call.number)
                && page.contains(&format!(r#"id="account">{}<"#, call.account))
        );
    }
    let (_, _, dashboard, _) = server.get("/ui/dashboard", &boss).await;
    assert!(
        dashboard.contains("<strong>4</strong> archived"),
        "{dashboard}"
    );
    assert!(dashboard.contains("Per account") && dashboard.contains("globex"));
    // The search is in each account's log with that account's calls.
    for name in ["acme", "globex"] {
        let finds: Vec<_> = server
            .log(name, "boss")
            .await
            .into_iter()
            .filter(|(a, _, _)| *a == AccessAction::Find)
            .collect();
        assert_eq!(finds.len(), 1);
        let mine: Vec<&str> = CALLS
            .iter()
            .filter(|c| c.account == name)
            .map(|c| c.uuid)
            .collect();
        let mut logged = finds[0].2.clone();
        logged.sort();
        let mut mine: Vec<String> = mine.into_iter().map(str::to_owned).collect();
        mine.sort();
        assert_eq!(logged, mine, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_user_sees_only_what_its_line_gives_and_an_unlisted_one_nothing() {
    let server = Server::start(BackendKind::Sqlite).await;
    // Listed without a password, for globex.
    let (status, _, page, _) = server
        .get_proxied("/ui/calls/globex/globex-only-0003", "proxied")
        .await;
    assert_eq!(status, 200);
    assert!(page.contains("0260999998"));
    assert_eq!(
        server
            .get_proxied("/ui/calls/acme/acme-only-0002", "proxied")
            .await
            .0,
        404
    );
    // It cannot log in with a password (it has none).
    let client = client();
    let url = format!("http://{}/ui/login", server.addr);
    let form = client.get(&url).send().await.unwrap();
    let cookie = cookie_of(form.headers(), "callvault_login_csrf").unwrap();
    let csrf = csrf_in(&form.text().await.unwrap());
    let answer = client
        .post(&url)
        .header(COOKIE, format!("callvault_login_csrf={cookie}"))
        .form(&[("username", "proxied"), ("password", ""), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    // Not listed: every route refuses, showing nothing of any account.
    let mut routes = vec![
        "/ui/".to_owned(),
        "/ui/?company=20000013".into(),
        "/ui/dashboard".into(),
    ];
    for call in &CALLS {
        routes.extend(call_routes(&format!(
            "/ui/calls/{}/{}",
            call.account, call.uuid
        )));
        routes.extend(call_routes(&format!("/ui/calls/{}", call.uuid)));
    }
    for path in &routes {
        let (status, _, body, _) = server.get_proxied(path, "stranger").await;
        assert_eq!(status, 403, "{path}");
        for secret in secrets_of("acme").iter().chain(&secrets_of("globex")) {
            assert!(!body.contains(secret.as_str()), "{path}");
        }
    }
    for name in ["acme", "globex"] {
        let log = server.log(name, "stranger").await;
        assert_eq!(log.len(), routes.len(), "{name}: {log:?}");
        assert!(log.iter().all(|(a, q, _)| *a == AccessAction::Refused && q.contains("not in the users file")));
    }
}

/// `user add` writes each user's accounts (checked against the settings file's), keeps them
/// on a new password, and writes no password for a user of the proxy; `serve --ui` serves the
/// accounts it is given, each user seeing its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_gives_accounts_and_serve_ui_serves_them() {
    use std::io::Write;
    use std::process::{Command, Output, Stdio};

    use crate::cli::{assert_exit, callvault, wait_for};

    let world = World::new().await;
    let settings = world.dir.path().join("accounts.toml");
    std::fs::write(
        &settings,
        "key-template = \"{account}/{uuid}{ext}\"\n[accounts.acme]\nappid = \"a\"\n\
         [accounts.globex]\nappid = \"g\"\n",
    )
    .unwrap();
    let with_settings = |args: &[&str]| -> Command {
        let mut cmd = callvault(&world, args);
        cmd.env("CALLVAULT_CONFIG", &settings);
        cmd
    };
    let add = |args: &[&str]| -> Output {
        let mut cmd = with_settings(&[&["user", "add"], args, &["--users-file", "users"]].concat());
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let _ = writeln!(stdin, "{PASSWORD}");
        drop(stdin);
        child.wait_with_output().unwrap()
    };
    assert_exit(&add(&["ann", "--account", "acme"]), 0);
    assert_exit(&add(&["boss", "--all-accounts"]), 0);
    assert_exit(
        &add(&[
            "jane@example.com",
            "--proxy-only",
            "--account",
            "globex,acme",
        ]),
        0,
    );
    let unknown = add(&["eve", "--account", "initech"]);
    assert_exit(&unknown, 2);
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        said.contains("initech") && said.contains("acme, globex"),
        "{said}"
    );
    assert_exit(&add(&["ann"]), 0); // a new password, the same accounts
    let text = std::fs::read_to_string(world.dir.path().join("users")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("ann:$argon2id$") && lines[0].ends_with(":acme"));
    assert!(lines[1].starts_with("boss:$argon2id$") && lines[1].ends_with(":*"));
    assert_eq!(lines[2], "jane@example.com::globex,acme");
    assert!(!text.contains(PASSWORD));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let args = [
        "serve",
        "--ui",
        "--account",
        "acme",
        "--ui-users-file",
        "users",
        "--listen",
        &listen,
    ];
    let mut serve = with_settings(&args);
    serve.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = serve.spawn().unwrap();
    let addr: SocketAddr = listen.parse().unwrap();
    let up = wait_for(std::time::Duration::from_secs(20), async || {
        reqwest::get(format!("http://{listen}/healthz"))
            .await
            .is_ok()
    })
    .await;
    let server = Page { addr };
    let ann = if up {
        Some(server.login("ann").await)
    } else {
        None
    };
    let found = match &ann {
        Some(cookie) => Some(server.get("/ui/?company=1", cookie).await),
        None => None,
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "serve --ui answers");
    let (status, _, body, _) = found.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("0 call(s)"), "{body}");
}

/// A search over several accounts pages through every call once, in order, even when the
/// same uuid with the same start is in both and the page ends between them (each account
/// resumes after its own last call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_a_search_over_two_accounts_list_every_call_once() {
    let server = Server::start(BackendKind::Sqlite).await;
    // acme has one call more, first, so that the first page ends between acme's and
    // globex's `page-25`.
    for (name, first) in [("acme", 0), ("globex", 1)] {
        let records: Vec<_> = (first..31)
            .map(|i| {
                let json = serde_json::json!({
                    "uuid": format!("page-{i:02}"), "companycode": 777,
                    "recordfilename": format!("777-page-{i:02}.wav"),
                    "starttime": format!("2026-10-01 10:{i:02}:00"), "duration": 8, "billsec": 3,
                    "type": "callout", "disnumber": "0301234", "id": 100 + i,
                });
                parse_record(&json.to_string(), default_provider_tz()).unwrap()
            })
            .collect();
        let ledger = server.world.ledger.scoped(&account(name));
        ledger.import(&records, chrono::Utc::now()).await.unwrap();
    }
    let boss = server.login("boss").await;
    let mut path = "/ui/?company=777".to_owned();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (status, _, body, _) = server.get(&path, &boss).await;
        assert_eq!(status, 200, "{body}");
        for row in body.split(r#"<a href="/ui/calls/"#).skip(1) {
            seen.push(row[..row.find('"').unwrap()].to_owned());
        }
        let Some(at) = body.find(">Next page<") else {
            break;
        };
        let link = &body[..at];
        let link = &link[link.rfind("href=\"").unwrap() + 6..link.len() - 1];
        path = link.replace("&amp;", "&");
    }
    let mut want = vec!["acme/page-00".to_owned()];
    want.extend((1..31).flat_map(|i| [format!("acme/page-{i:02}"), format!("globex/page-{i:02}")]));
    assert_eq!(seen.len(), 61);
    assert_eq!(
        seen[49], "acme/page-25",
        "the first page ends between the two page-25s"
    );
    assert_eq!(seen, want);
}
