//! `serve --ui`'s guards, against a real server on loopback over a world with archived
//! calls: every route wants a user; a cookie is dead after logout; wrong passwords lock the
//! login; search input is escaped and bound; the audio route takes only calls in the ledger
//! and nothing path-like, and serves ranges and checked downloads; no secret reaches a page
//! or a header; an authenticating proxy's header counts only from its networks.
//! `UiServer` is the harness the browser test uses too.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use callvault::archive::Shutdown;
use callvault::callback::parse_record;
use callvault::domain::{CallRecord, RecordState};
use callvault::ledger::{AccessAction, AccessQuery, LedgerRow};
use callvault::serve::{ServeOptions, serve};
use callvault::timefmt::default_provider_tz;
use callvault::ui::{ProxyAuth, Ui, UiConfig, UserName, UsersFile};
use reqwest::header::{COOKIE, HeaderMap, SET_COOKIE};
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::world::{S3_ACCESS_KEY, S3_SECRET_KEY, World, cu};

pub const USER: &str = "officer";
pub const PASSWORD: &str = "correct horse battery staple";
pub const CALLBACK_SECRET: &str = "callback-secret-canary-ui-4711";
/// The archived call every test finds: its shown number and agent.
pub const NUMBER: &str = "015029913692";
pub const AGENT: &str = "2042";
/// 3 seconds of 8 kHz 16-bit mono PCM, plus the WAV header.
pub const WAV_SIZE: u64 = 3 * 16_000 + 44;

/// A world with one archived call, and `serve` with the web page (and the receiver) on it.
pub struct UiServer {
    pub world: World,
    pub addr: SocketAddr,
    pub call: CallRecord,
    pub users: PathBuf,
    shutdown: Shutdown,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for UiServer {
    fn drop(&mut self) {
        self.shutdown.stop_claiming.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl UiServer {
    pub async fn start() -> Self {
        Self::with_proxy(None).await
    }

    pub async fn with_proxy(proxy: Option<ProxyAuth>) -> Self {
        let world = World::new().await;
        let call = archive_call(&world, "ui-call-0001", NUMBER, AGENT).await;
        // Other calls, so searches have something to leave out.
        world.import_samples(5).await;
        let users = world.dir.path().join("users");
        UsersFile::new(&users)
            .add(
                &UserName::parse(USER).unwrap(),
                &SecretString::from(PASSWORD),
            )
            .expect("writing the users file");
        let mut config = UiConfig::new(UsersFile::new(&users), default_provider_tz());
        config.secure_cookies = false;
        config.proxy = proxy;
        let ui = Ui::new(
            world.ledger.clone(),
            world.store.clone(),
            config,
            world.clock.clock(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::default();
        let options = ServeOptions {
            accounts: vec![callvault::accounts::AccountName::default_account()],
            ledger: world.ledger.clone(),
            receiver: Some(crate::world::receiver(
                CALLBACK_SECRET,
                callvault::serve::CallbackAnswer::Json,
            )),
            ui: Some(ui),
            retention: chrono::Duration::days(90),
            passes: None,
            syncs: None,
        };
        let stop = shutdown.clone();
        let task = tokio::spawn(async move { serve(listener, options, stop).await.unwrap() });
        Self {
            world,
            addr,
            call,
            users,
            shutdown,
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn row(&self) -> LedgerRow {
        self.world
            .ledger
            .get(&self.call.uuid)
            .await
            .unwrap()
            .unwrap()
    }

    /// Logs in as `name` with `password`; the answer (not followed).
    pub async fn try_login(&self, name: &str, password: &str) -> reqwest::Response {
        let client = client();
        let form = client.get(self.url("/ui/login")).send().await.unwrap();
        let cookie =
            cookie_of(form.headers(), "callvault_login_csrf").expect("a login CSRF cookie");
        let csrf = csrf_in(&form.text().await.unwrap());
        client
            .post(self.url("/ui/login"))
            .header(COOKIE, format!("callvault_login_csrf={cookie}"))
            .form(&[("username", name), ("password", password), ("csrf", &csrf)])
            .send()
            .await
            .unwrap()
    }

    /// Logs in as the test user; the `Cookie` header value of the session.
    pub async fn login(&self) -> String {
        let answer = self.try_login(USER, PASSWORD).await;
        assert_eq!(answer.status(), 303, "a right password logs in");
        let token = cookie_of(answer.headers(), "callvault_session").expect("a session cookie");
        format!("callvault_session={token}")
    }

    pub async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut request = client().get(self.url(path));
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send().await.unwrap()
    }

    /// What the access log holds for the test user: (action, query), oldest first.
    pub async fn access_log(&self, actor: &str) -> Vec<(AccessAction, Option<String>)> {
        let query = AccessQuery {
            actor: Some(actor.to_owned()),
            limit: 1000,
            ..AccessQuery::default()
        };
        self.world
            .ledger
            .access_entries(&query)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.entry.action, e.entry.query))
            .collect()
    }
}

/// A client that follows no redirect and keeps no cookie: every test says what it sends.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of cookie `name` set by an answer.
pub fn cookie_of(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (pair, _) = v.split_once(';').unwrap_or((v, ""));
            let (k, value) = pair.split_once('=')?;
            (k.trim() == name).then(|| value.to_owned())
        })
}

/// The CSRF token a page's form carries.
pub fn csrf_in(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token");
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// Imports a call with a WAV recording, numbers and an agent, and archives it.
pub async fn archive_call(world: &World, uuid: &str, number: &str, agent: &str) -> CallRecord {
    let file = format!("20000013-20261101-{uuid}.wav");
    world.sim.add_recording(&file, WAV_SIZE);
    let json = serde_json::json!({
        "uuid": uuid, "companycode": 20000013, "recordfilename": file,
        "starttime": "2026-11-01 10:00:00", "answertime": "2026-11-01 10:00:05",
        "endtime": "2026-11-01 10:00:08", "duration": 8, "billsec": 3, "type": "callout",
        "disnumber": number, "destnumber": "02566601234", "extnumber": "7007", "crmid": agent,
        "id": 4711,
    });
    let record = parse_record(&json.to_string(), default_provider_tz()).expect("a valid call");
    world
        .ledger
        .import(std::slice::from_ref(&record), chrono::Utc::now())
        .await
        .unwrap();
    let result = world.run(&world.options()).await;
    assert!(
        result.report.archived >= 1,
        "the call is archived: {result:?}"
    );
    let row = world.ledger.get(&cu(uuid)).await.unwrap().unwrap();
    assert_eq!(row.state, RecordState::Archived);
    record
}

/// Every route of the page, with the method it answers.
fn routes(uuid: &str) -> Vec<(&'static str, String)> {
    vec![
        ("GET", "/ui".into()),
        ("GET", "/ui/".into()),
        ("GET", format!("/ui/?number={NUMBER}")),
        ("GET", "/ui/dashboard".into()),
        ("GET", format!("/ui/calls/{uuid}")),
        ("GET", format!("/ui/calls/{uuid}/audio")),
        ("GET", format!("/ui/calls/{uuid}/download")),
        ("POST", "/ui/logout".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_route_answers_strangers_with_the_login_page_or_401() {
    let server = UiServer::start().await;
    let uuid = server.call.uuid.as_str().to_owned();
    for cookie in [None, Some("callvault_session=0123456789abcdef")] {
        for (method, path) in routes(&uuid) {
            let mut request = client().request(method.parse().unwrap(), server.url(&path));
            if let Some(cookie) = cookie {
                request = request.header(COOKIE, cookie);
            }
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), 401, "{method} {path} with {cookie:?}");
            let body = answer.text().await.unwrap();
            if !path.ends_with("/audio") && !path.ends_with("/download") {
                assert!(
                    body.contains(r#"action="/ui/login""#),
                    "{path}: the login page"
                );
            }
            assert!(
                !body.contains(NUMBER) && !body.contains(&uuid),
                "{path} shows nothing"
            );
        }
    }
    assert!(
        server.access_log(USER).await.is_empty(),
        "nothing was accessed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cookie_is_dead_after_logout_and_logout_needs_its_csrf_token() {
    let server = UiServer::start().await;
    let answer = server.try_login(USER, PASSWORD).await;
    let set: Vec<String> = answer
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .filter(|v| v.starts_with("callvault_session="))
        .collect();
    assert_eq!(set.len(), 1);
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set[0].contains(attribute), "{attribute} in {}", set[0]);
    }
    assert!(
        !set[0].contains("Secure"),
        "plain HTTP on loopback: no Secure"
    );
    let cookie = format!(
        "callvault_session={}",
        cookie_of(answer.headers(), "callvault_session").unwrap()
    );
    let page = server.get("/ui/", Some(&cookie)).await;
    assert_eq!(page.status(), 200);
    let csrf = csrf_in(&page.text().await.unwrap());

    // A logout without the form's token (as another site would post it) changes nothing.
    let forged = client()
        .post(server.url("/ui/logout"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", "not-the-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(server.get("/ui/", Some(&cookie)).await.status(), 200);

    let out = client()
        .post(server.url("/ui/logout"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    // The same cookie, replayed: refused on every route.
    for (method, path) in routes(server.call.uuid.as_str()) {
        let answer = client()
            .request(method.parse().unwrap(), server.url(&path))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401, "{method} {path} after logout");
    }
    let log = server.access_log(USER).await;
    let actions: Vec<AccessAction> = log.iter().map(|(a, _)| *a).collect();
    assert_eq!(
        actions,
        vec![
            AccessAction::Login,
            AccessAction::View,
            AccessAction::View,
            AccessAction::Logout
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_wrong_passwords_lock_the_login_even_for_the_right_one() {
    let server = UiServer::start().await;
    // A login post without the form's CSRF cookie is refused before any password check.
    let no_csrf = client()
        .post(server.url("/ui/login"))
        .form(&[("username", USER), ("password", PASSWORD), ("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), 403);
    for i in 0..5 {
        let answer = server.try_login(USER, "wrong password here").await;
        assert_eq!(answer.status(), 401, "wrong password {i}");
        assert!(cookie_of(answer.headers(), "callvault_session").is_none());
    }
    let locked = server.try_login(USER, PASSWORD).await;
    assert_eq!(locked.status(), 429, "locked after five wrong passwords");
    assert!(cookie_of(locked.headers(), "callvault_session").is_none());
    assert!(
        locked
            .text()
            .await
            .unwrap()
            .contains("Too many wrong passwords")
    );
    let failed = server
        .access_log(USER)
        .await
        .into_iter()
        .filter(|(a, _)| *a == AccessAction::LoginFailed)
        .count();
    assert_eq!(failed, 6, "every refused login is in the access log");

    // The lock lasts its 15 minutes on the page's clock, then the right password logs in.
    server.world.clock.advance(Duration::from_secs(14 * 60));
    assert_eq!(server.try_login(USER, PASSWORD).await.status(), 429);
    server.world.clock.advance(Duration::from_secs(60));
    assert_eq!(server.try_login(USER, PASSWORD).await.status(), 303);
}

/// A session lasts its 8 hours on the page's clock and not a moment longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_time_is_up() {
    let server = UiServer::start().await;
    let cookie = server.login().await;
    server
        .world
        .clock
        .advance(Duration::from_secs(8 * 3600 - 60));
    assert_eq!(server.get("/ui/", Some(&cookie)).await.status(), 200);

    server.world.clock.advance(Duration::from_secs(61));

    assert_eq!(
        server.get("/ui/", Some(&cookie)).await.status(),
        401,
        "the login page, not the search"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_input_with_html_or_sql_is_escaped_and_bound() {
    let server = UiServer::start().await;
    let cookie = server.login().await;
    let calls_before = server
        .world
        .ledger
        .count_rows(callvault::ledger::Table::Calls)
        .await
        .unwrap();
    let script = "<script>alert(1)</script>";
    let injections = [
        ("company", script.to_owned()),
        ("agent", "' OR '1'='1".to_owned()),
        ("extension", "7007'; DROP TABLE calls; --".to_owned()),
        ("number", format!("{script}13692")),
        ("number", script.to_owned()),
        ("uuid", format!("\"><img src=x onerror=alert(1)>{script}")),
    ];
    for (field, value) in injections {
        let url = reqwest::Url::parse_with_params(&server.url("/ui/"), &[(field, value.as_str())])
            .unwrap();
        let answer = client()
            .get(url)
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let body = answer.text().await.unwrap();
        assert!(status == 200 || status == 400, "{field}={value}: {status}");
        assert!(
            !body.contains("<script>alert"),
            "{field}: raw script in the page"
        );
        assert!(
            !body.contains("<img src=x"),
            "{field}: raw markup in the page"
        );
        if value.contains('<') {
            assert!(body.contains("&lt;"), "{field}: escaped in the page");
        }
        // SQL in a filter is a value: it matches no call, it does not match every call.
        if field != "number" {
            assert!(body.contains("0 call(s)"), "{field}={value} matched calls");
        }
    }
    // The digits in `<script>…13692` still find the call by its number's suffix.
    let answer = server.get("/ui/?number=13692", Some(&cookie)).await;
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains(server.call.uuid.as_str())
    );
    let calls_after = server
        .world
        .ledger
        .count_rows(callvault::ledger::Table::Calls)
        .await
        .unwrap();
    assert_eq!(calls_before, calls_after, "the ledger is intact");
    assert_eq!(server.row().await.state, RecordState::Archived);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audio_route_serves_ranges_of_ledger_calls_only_and_downloads_are_checked() {
    let server = UiServer::start().await;
    let cookie = server.login().await;
    let uuid = server.call.uuid.as_str().to_owned();
    for bad in [
        "..%2F..%2Fetc%2Fpasswd",
        "%2E%2E",
        "..",
        "calls%2F2026%2Fx.wav",
        "a%5C..%5Cb",
        "%252e%252e%252f",
    ] {
        for route in [
            format!("{bad}/audio"),
            format!("{bad}/download"),
            format!("default/{bad}/audio"),
            format!("default/{bad}/download"),
        ] {
            let answer = server
                .get(&format!("/ui/calls/{route}"), Some(&cookie))
                .await;
            assert!(
                answer.status() == 400 || answer.status() == 404,
                "{route}: {}",
                answer.status()
            );
            let kind = answer
                .headers()
                .get("content-type")
                .unwrap()
                .to_str()
                .unwrap();
            assert!(!kind.starts_with("audio/"), "{route}: {kind}");
        }
    }
    let unknown = server
        .get(
            "/ui/calls/00000000-0000-0000-0000-000000000000/audio",
            Some(&cookie),
        )
        .await;
    assert_eq!(unknown.status(), 404);
    // A call in the ledger without an archived recording: nothing to play.
    let pending = server
        .world
        .ledger
        .uuids_in_state(RecordState::NoRecording)
        .await
        .unwrap();
    if let Some(none) = pending.first() {
        let answer = server
            .get(&format!("/ui/calls/{none}/audio"), Some(&cookie))
            .await;
        assert_eq!(answer.status(), 404);
    }

    let row = server.row().await;
    let key = row.object_key.clone().unwrap();
    let range = client()
        .get(server.url(&format!("/ui/calls/{uuid}/audio")))
        .header(COOKIE, &cookie)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(range.status(), 206);
    assert_eq!(
        range.headers()["content-range"].to_str().unwrap(),
        format!("bytes 100-199/{WAV_SIZE}")
    );
    assert_eq!(range.headers()["accept-ranges"], "bytes");
    assert_eq!(range.headers()["content-type"], "audio/wav");
    let part = range.bytes().await.unwrap();
    let path = server.world.store.path(&key).unwrap();
    let whole = {
        use object_store::ObjectStoreExt;
        server
            .world
            .store
            .object_store()
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    };
    assert_eq!(&part[..], &whole[100..200]);
    let beyond = client()
        .get(server.url(&format!("/ui/calls/{uuid}/audio")))
        .header(COOKIE, &cookie)
        .header("range", format!("bytes={WAV_SIZE}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 416);

    let download = server
        .get(&format!("/ui/calls/{uuid}/download"), Some(&cookie))
        .await;
    assert_eq!(download.status(), 200);
    assert!(
        download.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(".wav")
    );
    let body = download.bytes().await.unwrap();
    assert_eq!(Some(hex::encode(Sha256::digest(&body))), row.sha256);

    // The stored object changed behind the ledger's back: the download ends in an error.
    let mut tampered = whole.to_vec();
    tampered[WAV_SIZE as usize - 1] ^= 0xFF;
    {
        use object_store::ObjectStoreExt;
        server
            .world
            .store
            .object_store()
            .put(&path, tampered.into())
            .await
            .unwrap();
    }
    let download = server
        .get(&format!("/ui/calls/{uuid}/download"), Some(&cookie))
        .await;
    assert_eq!(
        download.status(),
        200,
        "the headers go out before the end is hashed"
    );
    assert!(
        download.bytes().await.is_err(),
        "a changed recording is not handed over whole"
    );

    let log = server.access_log(USER).await;
    assert!(
        log.contains(&(AccessAction::Play, Some("bytes=100-199".into()))),
        "{log:?}"
    );
    assert_eq!(
        log.iter()
            .filter(|(a, _)| *a == AccessAction::Download)
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_page_or_header_shows_the_callback_secret_or_the_store_keys() {
    let server = UiServer::start().await;
    let cookie = server.login().await;
    let uuid = server.call.uuid.as_str().to_owned();
    let mut seen = String::new();
    let paths = [
        "/ui/login".to_owned(),
        "/ui/".to_owned(),
        format!("/ui/?number={NUMBER}"),
        format!("/ui/?agent={AGENT}"),
        "/ui/dashboard".to_owned(),
        format!("/ui/calls/{uuid}"),
        format!("/ui/calls/default/{uuid}"),
        format!("/ui/calls/{uuid}/audio"),
        format!("/ui/calls/default/{uuid}/download"),
        "/ui/calls/nope/audio".to_owned(),
        "/ui/nowhere".to_owned(),
    ];
    for path in &paths {
        let answer = server.get(path, Some(&cookie)).await;
        for (name, value) in answer.headers() {
            seen.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("")));
        }
        if !path.ends_with("/audio") && !path.ends_with("/download") {
            seen.push_str(&answer.text().await.unwrap());
        }
    }
    assert!(
        seen.contains(server.call.uuid.as_str()),
        "the pages were seen"
    );
    assert!(
        seen.contains("default-src 'none'"),
        "a content policy forbids outside assets"
    );
    for secret in [CALLBACK_SECRET, S3_SECRET_KEY, S3_ACCESS_KEY] {
        assert!(
            !seen.contains(secret),
            "{secret} appears in a page or header"
        );
    }
    for outside in [r#"src="http"#, r#"href="http"#, "url(http", "@import"] {
        assert!(
            !seen.contains(outside),
            "a page loads something from elsewhere: {outside}"
        );
    }
    let users = std::fs::read_to_string(&server.users).unwrap();
    let hash = users.lines().last().unwrap().split_once(':').unwrap().1;
    assert!(
        !seen.contains(hash),
        "the password hash never leaves the file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_user_header_counts_only_from_the_proxy_networks() {
    let header = reqwest::header::HeaderName::from_static("x-forwarded-user");
    let elsewhere = UiServer::with_proxy(Some(ProxyAuth {
        header: header.clone(),
        networks: vec!["10.0.0.0/8".parse().unwrap()],
    }))
    .await;
    let answer = client()
        .get(elsewhere.url("/ui/dashboard"))
        .header(&header, "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        401,
        "the header from outside the proxy's networks is ignored"
    );
    assert!(elsewhere.access_log("mallory").await.is_empty());

    let behind = UiServer::with_proxy(Some(ProxyAuth {
        header: header.clone(),
        networks: vec!["127.0.0.0/8".parse().unwrap()],
    }))
    .await;
    // The proxy's user must be in the users file (without a password) to see anything.
    let carol = UserName::parse("carol").unwrap();
    let not_yet = client()
        .get(behind.url("/ui/dashboard"))
        .header(&header, "carol")
        .send()
        .await
        .unwrap();
    assert_eq!(not_yet.status(), 403, "not in the users file");
    UsersFile::new(&behind.users)
        .put(&carol, None, None)
        .unwrap();
    let answer = client()
        .get(behind.url("/ui/dashboard"))
        .header(&header, "carol")
        .header("x-forwarded-for", "192.0.2.7, 10.1.2.3")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.text().await.unwrap().contains("carol"));
    assert_eq!(
        behind.access_log("carol").await,
        vec![
            (
                AccessAction::Refused,
                Some("/ui/dashboard (not in the users file)".into())
            ),
            (AccessAction::View, Some("dashboard".into()))
        ]
    );
    let entries = behind
        .world
        .ledger
        .access_entries(&AccessQuery {
            actor: Some("carol".into()),
            limit: 10,
            ..AccessQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        entries[1].entry.source, "web@192.0.2.7",
        "the browser's address, as the proxy saw it"
    );
    let bad_name = client()
        .get(behind.url("/ui/dashboard"))
        .header(&header, "<script>")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_name.status(), 401);
}

/// Sessions live until logout or their end, only the token's hash is kept, expired ones are
/// dropped, `ledger copy` carries them; the dashboard's per-day count sees archived calls.
async fn sessions_and_daily_counts_in_the_ledger(kind: callvault::ledger::BackendKind) {
    use callvault::ledger::{Table, UiSession, copy_ledger, table_checksum};
    let world = World::with_backend(kind).await;
    let ledger = &world.ledger;
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let session = UiSession {
        username: USER.into(),
        created_at: now,
        expires_at: now + chrono::Duration::hours(1),
    };
    let hash = "a".repeat(64);
    ledger.create_session(&hash, &session, now).await.unwrap();
    assert_eq!(
        ledger.session(&hash, now).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(ledger.session(&"b".repeat(64), now).await.unwrap(), None);
    let later = now + chrono::Duration::hours(2);
    assert_eq!(ledger.session(&hash, later).await.unwrap(), None, "ran out");
    // A new session drops the ones that ran out.
    let next = UiSession {
        created_at: later,
        expires_at: later + chrono::Duration::hours(1),
        ..session.clone()
    };
    let hash2 = "c".repeat(64);
    ledger.create_session(&hash2, &next, later).await.unwrap();
    assert_eq!(ledger.count_rows(Table::UiSessions).await.unwrap(), 1);
    // Copied with the ledger, then ended (logout) here.
    let target = crate::world::TempLedger::new(kind).await;
    copy_ledger(ledger, &target).await.unwrap();
    assert_eq!(
        table_checksum(ledger, Table::UiSessions).await.unwrap(),
        table_checksum(&target, Table::UiSessions).await.unwrap()
    );
    assert!(ledger.end_session(&hash2).await.unwrap());
    assert!(!ledger.end_session(&hash2).await.unwrap());
    assert_eq!(ledger.session(&hash2, later).await.unwrap(), None);

    let today = chrono::Utc::now();
    let midnight = today
        .date_naive()
        .and_time(chrono::NaiveTime::MIN)
        .and_utc();
    assert!(ledger.archived_per_day(midnight).await.unwrap().is_empty());
    archive_call(&world, "ui-daily-0001", NUMBER, AGENT).await;
    assert_eq!(
        ledger.archived_per_day(midnight).await.unwrap(),
        vec![(today.date_naive(), 1)]
    );
    let tomorrow = midnight + chrono::Duration::days(1);
    assert!(ledger.archived_per_day(tomorrow).await.unwrap().is_empty());
}

on_both_backends!(sessions_and_daily_counts_in_the_ledger);

/// The binary: `user add` takes the password from standard input and writes only its hash;
/// `serve --ui` without a users file stops with a configuration error that says what to
/// do; with one, and no callback secret, it serves the page alone (no receiver).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_and_serve_ui_from_the_command_line() {
    use std::io::Write;
    use std::process::Stdio;

    use crate::cli::{assert_exit, callvault, output, wait_for};

    let world = World::new().await;
    let add = |password: &'static str| {
        let mut cmd = callvault(&world, &["user", "add", USER, "--users-file", "users"]);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        async move {
            tokio::task::spawn_blocking(move || {
                let mut child = cmd.spawn().expect("the binary runs");
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(format!("{password}\n").as_bytes())
                    .unwrap();
                child.wait_with_output().unwrap()
            })
            .await
            .unwrap()
        }
    };
    assert_exit(&add("short").await, 2);
    assert_exit(&add(PASSWORD).await, 0);
    let users = UsersFile::new(world.dir.path().join("users"));
    assert!(
        users
            .verify(USER, &SecretString::from(PASSWORD))
            .unwrap()
            .is_some()
    );
    let text = std::fs::read_to_string(users.path()).unwrap();
    assert!(!text.contains(PASSWORD));

    let missing = output(callvault(
        &world,
        &["serve", "--ui", "--ui-users-file", "nobody"],
    ))
    .await;
    assert_exit(&missing, 2);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("callvault user add"));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut serve = callvault(
        &world,
        &[
            "serve",
            "--ui",
            "--ui-users-file",
            "users",
            "--listen",
            &listen,
        ],
    );
    serve.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = serve.spawn().expect("serve runs");
    let base = format!("http://{listen}");
    let up = wait_for(std::time::Duration::from_secs(20), async || {
        reqwest::get(format!("{base}/healthz")).await.is_ok()
    })
    .await;
    let page = client().get(format!("{base}/ui/")).send().await;
    let callback = client()
        .post(format!("{base}/callback/{CALLBACK_SECRET}"))
        .send()
        .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "serve --ui answers");
    assert_eq!(page.unwrap().status(), 401, "the page wants a user");
    assert_eq!(
        callback.unwrap().status(),
        404,
        "no receiver without a callback secret"
    );
}

/// The dashboard counts the calls at risk (not archived, close to the provider's deletion)
/// and lists them; the access log names the calls it showed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_counts_and_lists_the_calls_at_risk() {
    let server = UiServer::start().await;
    let old = (chrono::Utc::now() - chrono::Duration::days(80))
        .with_timezone(&default_provider_tz())
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let risky = crate::world::call("ui-risky-0001", "20000013-risky.wav", &old);
    server
        .world
        .ledger
        .import(std::slice::from_ref(&risky), chrono::Utc::now())
        .await
        .unwrap();
    let cookie = server.login().await;
    let page = server.get("/ui/dashboard", Some(&cookie)).await;
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(
        body.contains(r#"<strong class="risk" id="at-risk">1</strong>"#),
        "{body}"
    );
    assert!(body.contains(r#"href="/ui/calls/default/ui-risky-0001""#));
    assert!(body.contains("<svg"), "the charts are drawn in the page");
    assert!(body.contains("<title>Recordings archived per day</title>"));
    let entries = server
        .world
        .ledger
        .access_entries(&AccessQuery {
            actor: Some(USER.into()),
            limit: 10,
            ..AccessQuery::default()
        })
        .await
        .unwrap();
    let view = entries
        .iter()
        .find(|e| e.entry.action == AccessAction::View)
        .unwrap();
    assert_eq!(view.entry.calls, vec![risky.uuid.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_page_names_the_legal_holds_that_keep_the_call() {
    let server = UiServer::start().await;
    let cookie = server.login().await;
    let path = format!("/ui/calls/default/{}", server.call.uuid.as_str());
    let before = server.get(&path, Some(&cookie)).await.text().await.unwrap();
    assert!(
        before.contains(r#"<dd id="hold">not on hold</dd>"#),
        "{before}"
    );

    let hold = callvault::ledger::HoldId::generate();
    server
        .world
        .ledger
        .create_hold(&callvault::ledger::NewHold {
            id: &hold,
            reason: "CASE-<2026>-17",
            placed_by: "legal",
            placed_at: chrono::Utc::now(),
            selection: &serde_json::json!({"uuid": [server.call.uuid.as_str()]}),
        })
        .await
        .unwrap();
    server
        .world
        .ledger
        .add_held_calls(
            &hold,
            &[(
                server.call.uuid.clone(),
                callvault::ledger::ObjectHold::Unsupported,
            )],
        )
        .await
        .unwrap();
    let held = server.get(&path, Some(&cookie)).await.text().await.unwrap();
    assert!(
        held.contains("on hold: CASE-&lt;2026&gt;-17"),
        "the hold's reason is shown, escaped: {held}"
    );
    assert!(held.contains(hold.as_str()), "{held}");
    assert!(held.contains("placed by legal"), "{held}");
}
