//! End-to-end checks of the simulator over real HTTP, as the archiver's client will see it.

use futures::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::*;

async fn start() -> Simulator {
    let bind = "127.0.0.1:0".parse().expect("valid address");
    Simulator::start(bind, SimulatorConfig::default())
        .await
        .expect("simulator starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client builds")
}

/// Posts `fields` as multipart/form-data, as the real client does.
async fn call(sim: &Simulator, fields: &[(&str, &str)]) -> Value {
    let form = fields
        .iter()
        .fold(reqwest::multipart::Form::new(), |form, (k, v)| {
            form.text(k.to_string(), v.to_string())
        });
    let response = client()
        .post(sim.api_url())
        .multipart(form)
        .send()
        .await
        .expect("api answers");
    response.json().await.expect("api answers json")
}

async fn login_as(sim: &Simulator, appid: &str, accesskey: &str) -> Value {
    let service = " App.Sip_Auth.Login ";
    call(
        sim,
        &[
            ("service", service),
            ("appid", appid),
            ("accesskey", accesskey),
        ],
    )
    .await
}

async fn login(sim: &Simulator) -> String {
    let answer = login_as(sim, "demo-app", "demo-secret-key").await;
    let token = answer["data"]["result"]["token"].as_str();
    token.expect("login returns a token").to_owned()
}

async fn link(sim: &Simulator, token: &str, filename: &str) -> Value {
    let service = "App.Sip_Cdr.GetRecodeFile";
    call(
        sim,
        &[
            ("service", service),
            ("token", token),
            ("filename", filename),
        ],
    )
    .await
}

async fn downurl(sim: &Simulator, token: &str, filename: &str) -> String {
    let answer = link(sim, token, filename).await;
    let url = answer["data"]["result"]["downurl"].as_str();
    url.expect("a download link").to_owned()
}

async fn get(url: &str) -> reqwest::Response {
    client().get(url).send().await.expect("download answers")
}

#[tokio::test]
async fn login_succeeds_fails_and_can_be_refused() {
    let sim = start().await;

    let ok = login_as(&sim, "demo-app", "demo-secret-key").await;
    let bad_key = login_as(&sim, "demo-app", "nope").await;
    let bad_app = login_as(&sim, "nope", "demo-secret-key").await;
    sim.set_faults(|f| f.refuse_logins = true);
    let refused = login_urlencoded(&sim).await;

    assert_eq!(
        (&ok["ret"], &ok["data"]["status"]),
        (&200.into(), &0.into())
    );
    assert_eq!(ok["data"]["result"]["companycode"], "20000013");
    assert_eq!(
        ok["data"]["result"]["token"].as_str().map(str::len),
        Some(32)
    );
    assert_eq!(
        (&bad_key["ret"], &bad_key["data"]["status"]),
        (&200.into(), &1.into())
    );
    assert_eq!(bad_key["data"]["errors"]["code"], "1003");
    assert_eq!(bad_app["ret"], 601);
    assert_eq!(refused["ret"], 601);
    let stats = sim.stats();
    assert_eq!((stats.logins, stats.failed_logins), (4, 3));
    sim.shutdown().await;
}

async fn login_urlencoded(sim: &Simulator) -> Value {
    let fields = [
        ("service", "App.Sip_Auth.Login"),
        ("appid", "demo-app"),
        ("accesskey", "demo-secret-key"),
    ];
    let response = client().post(sim.api_url()).form(&fields).send().await;
    response
        .expect("api answers")
        .json()
        .await
        .expect("api answers json")
}

#[tokio::test]
async fn downloaded_bytes_hash_to_expected_sha256() {
    let sim = start().await;
    sim.add_recording("20000013-20261101-abc.wav", 300_000);
    let token = login(&sim).await;

    let answer = link(&sim, &token, "20000013-20261101-abc.wav").await;
    let url = answer["data"]["result"]["downurl"]
        .as_str()
        .expect("downurl")
        .to_owned();
    let response = get(&url).await;
    let status = response.status();
    let headers = response.headers().clone();
    let mut hasher = Sha256::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        hasher.update(chunk.expect("body chunk"));
    }

    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "audio/wav");
    assert_eq!(headers["content-length"], "300000");
    assert_eq!(headers["accept-ranges"], "bytes");
    assert!(
        answer["data"]["result"]["expiredtime"]
            .as_str()
            .is_some_and(|t| t.starts_with("Expiration time:"))
    );
    assert_eq!(
        Some(hex::encode(hasher.finalize())),
        sim.expected_sha256("20000013-20261101-abc.wav")
    );
    assert_eq!(sim.stats().downloads, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn range_request_resumes_mid_file() {
    let sim = start().await;
    sim.add_recording("r.mp3", 200_000);
    let token = login(&sim).await;
    let url = downurl(&sim, &token, "r.mp3").await;

    let full = get(&url).await.bytes().await.expect("full body");
    let part = client()
        .get(&url)
        .header("Range", "bytes=70001-")
        .send()
        .await
        .expect("part");
    let status = part.status();
    let content_range = part.headers()["content-range"].clone();
    let part = part.bytes().await.expect("part body");

    assert_eq!(status, 206);
    assert_eq!(content_range, "bytes 70001-199999/200000");
    assert_eq!(part, full.slice(70_001..));
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_links_and_filenames_are_refused() {
    let sim = start().await;
    sim.add_recording("a.wav", 1000);
    let token = login(&sim).await;
    let url = downurl(&sim, &token, "a.wav").await;

    let tampered = get(&url.replace("sig=", "sig=0")).await;
    let unknown = link(&sim, &token, "missing.wav").await;
    let illegal = link(&sim, &token, "../a.wav").await;
    let no_token = link(&sim, "not-a-token", "a.wav").await;
    sim.remove_recording("a.wav");
    let removed = get(&url).await;

    assert_eq!(tampered.status(), 403);
    assert_eq!(unknown["data"]["status"], 1);
    assert_eq!(unknown["data"]["errors"]["code"], "1002");
    assert_eq!(illegal["ret"], 400);
    assert_eq!(no_token["ret"], 600);
    assert_eq!(removed.status(), 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn every_nth_link_request_invalidates_tokens() {
    let sim = start().await;
    sim.add_recording("a.wav", 1000);
    sim.set_faults(|f| f.invalidate_tokens_every = Some(3));
    let mut token = login(&sim).await;

    let mut rets = Vec::new();
    for _ in 0..6 {
        let answer = link(&sim, &token, "a.wav").await;
        if answer["ret"] == 600 {
            token = login(&sim).await;
        }
        rets.push(answer["ret"].as_u64().expect("ret is a number"));
    }

    assert_eq!(rets, [200, 200, 600, 200, 200, 600]);
    let stats = sim.stats();
    assert_eq!(
        (stats.invalidations, stats.url_requests, stats.logins),
        (2, 6, 3)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn api_faults_answer_in_order() {
    let sim = start().await;
    sim.add_recording("a.wav", 1000);
    let token = login(&sim).await;
    sim.set_faults(|f| {
        f.server_error_next = 1;
        f.code_1001_next = 1;
        f.extension_exception_every = Some(3);
    });

    let server_error = link(&sim, &token, "a.wav").await;
    let code_1001 = link(&sim, &token, "a.wav").await;
    let extension = link(&sim, &token, "a.wav").await;
    let after = link(&sim, &token, "a.wav").await;

    assert_eq!(server_error["ret"], 500);
    assert_eq!(code_1001["data"]["errors"]["code"], "1001");
    assert_eq!(extension["data"]["errors"]["code"], "1010");
    assert_eq!(after["ret"], 600);
    sim.shutdown().await;
}

#[tokio::test]
async fn truncate_fault_cuts_the_body_short_once() {
    let sim = start().await;
    sim.add_recording("t.wav", 500_000);
    sim.push_download_fault("t.wav", DownloadFault::Truncate(1000));
    let token = login(&sim).await;
    let url = downurl(&sim, &token, "t.wav").await;

    let first = get(&url).await;
    let declared = first.content_length();
    let mut received = 0;
    let mut failed = false;
    let mut body = first.bytes_stream();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => received += bytes.len(),
            Err(_) => failed = true,
        }
    }
    let second = get(&url).await.bytes().await.expect("second body");

    assert_eq!(declared, Some(500_000));
    assert!(failed, "a truncated body must surface as an error");
    assert_eq!(received, 1000);
    assert_eq!(second.len(), 500_000);
    sim.shutdown().await;
}

#[tokio::test]
async fn html_page_and_stall_faults() {
    let sim = start().await;
    sim.add_recording("h.wav", 10_000);
    sim.push_download_fault("h.wav", DownloadFault::HtmlPage);
    sim.push_download_fault("h.wav", DownloadFault::Stall(Duration::from_millis(300)));
    let token = login(&sim).await;
    let url = downurl(&sim, &token, "h.wav").await;

    let html = get(&url).await;
    let html_type = html.headers()["content-type"].clone();
    let began = Instant::now();
    let stalled = get(&url).await;
    let headers_after = began.elapsed();
    let body = stalled.bytes().await.expect("stalled body");
    let body_after = began.elapsed();

    assert_eq!(html.status(), 200);
    assert!(html_type.to_str().is_ok_and(|t| t.starts_with("text/html")));
    assert!(
        headers_after < Duration::from_millis(250),
        "headers come before the stall"
    );
    assert!(body_after >= Duration::from_millis(300));
    assert_eq!(body.len(), 10_000);
    sim.shutdown().await;
}

#[tokio::test]
async fn stats_endpoint_reports_counters() {
    let sim = start().await;
    login(&sim).await;

    let stats: Value = client()
        .get(format!("{}_sim/stats", sim.api_url()))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");

    assert_eq!(stats["logins"], 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn streamed_content_is_deterministic_per_filename() {
    let mut hasher = Sha256::new();
    let mut stream = std::pin::pin!(recording_bytes("x.wav", 123_457, 0..123_457));
    while let Some(chunk) = stream.next().await {
        hasher.update(chunk.expect("generation does not fail"));
    }

    let streamed = hex::encode(hasher.finalize());

    assert_eq!(streamed, expected_sha256("x.wav", 123_457));
    assert_ne!(streamed, expected_sha256("y.wav", 123_457));
}

/// One window of `GetBill`, asked for as a logged-in client.
struct BillList {
    sim: Simulator,
    token: String,
    start: String,
    end: String,
}

impl BillList {
    /// Page `page` of `per` bills, with `syncflag` `flag`.
    async fn page(&self, flag: &str, page: &str, per: &str) -> Value {
        call(
            &self.sim,
            &[
                ("service", "App.Sip_Cdr.GetBill"),
                ("token", &self.token),
                ("starttime", &self.start),
                ("endtime", &self.end),
                ("syncflag", flag),
                ("currentpage", page),
                ("itemsperpage", per),
            ],
        )
        .await
    }
}

/// `GetBill` as the notes describe it: windows by call start, pages, `itemsperpage` capped
/// at 1,000, the provider-side cursor of `syncflag` 1 (2: fetched ones, 3: all), sloppy
/// numbers, no uuid unless asked, a stale token refused.
#[tokio::test]
async fn the_bill_list_pages_and_keeps_a_cursor() {
    let sim = start().await;
    let now = chrono::Utc::now();
    let callbacks = sim.sample_callbacks(25, now);
    let list = BillList {
        token: login(&sim).await,
        start: envelope::provider_time(now - chrono::Duration::days(31)),
        end: envelope::provider_time(now + chrono::Duration::minutes(1)),
        sim: sim.clone(),
    };
    let bills = |flag, page, per| list.page(flag, page, per);

    let all = bills("3", "1", "5000").await;
    let result = &all["data"]["result"];
    assert_eq!(result["totalitems"], 25, "{all}");
    assert_eq!(result["itemsperpage"], MAX_ITEMS_PER_PAGE);
    let listed = result["bills"].as_array().unwrap();
    assert_eq!(listed.len(), 25);
    assert!(
        listed
            .iter()
            .all(|b| b.get("uuid").is_none() && b.get("companycode").is_none())
    );
    assert!(
        listed.iter().any(|b| b["id"].is_string()) && listed.iter().any(|b| b["id"].is_number())
    );
    assert_eq!(listed[0]["recordfilename"], callbacks[0]["recordfilename"]);

    // The cursor: page 1 of syncflag 1 marks its 10 bills fetched, so page 2 of the rest
    // skips 10 that nobody has read: a reader paging with 1 loses them.
    let first = bills("1", "1", "10").await;
    assert_eq!(
        first["data"]["result"]["bills"].as_array().unwrap().len(),
        10
    );
    let second = bills("1", "2", "10").await;
    assert_eq!(second["data"]["result"]["totalitems"], 15);
    assert_eq!(
        second["data"]["result"]["bills"].as_array().unwrap().len(),
        5
    );
    let fetched = bills("2", "1", "100").await;
    assert_eq!(fetched["data"]["result"]["totalitems"], 15);
    let page3 = bills("3", "3", "10").await;
    assert_eq!(
        page3["data"]["result"]["bills"].as_array().unwrap().len(),
        5
    );
    assert_eq!(
        bills("3", "1", "0").await["data"]["result"]["itemsperpage"],
        10
    );

    sim.set_faults(|f| f.bills_with_uuid = true);
    let with_uuid = bills("3", "1", "1").await;
    assert_eq!(
        with_uuid["data"]["result"]["bills"][0]["uuid"],
        callbacks[0]["uuid"]
    );
    sim.invalidate_all_tokens();
    assert_eq!(bills("3", "1", "1").await["ret"], 600);
    assert_eq!(
        sim.stats().bill_requests,
        7,
        "the stale-token request is refused before"
    );
}

fn globex_config() -> AccountConfig {
    AccountConfig {
        appid: "globex-app".into(),
        accesskey: "globex-secret-key".into(),
        company_code: "20000099".into(),
    }
}

/// Logs in as `account`, returning its token and the company the provider named.
async fn login_account(sim: &Simulator, account: &ProviderAccount) -> (String, Value) {
    let answer = login_as(sim, &account.appid(), &account.accesskey()).await;
    let result = &answer["data"]["result"];
    let token = result["token"].as_str().expect("a token").to_owned();
    (token, result["companycode"].clone())
}

/// Two accounts on one simulator: each logs in with its own appid and accesskey (not the
/// other's key), and a token serves its own account's recordings only: another account's
/// file is, to it, a file that does not exist (1002), as the provider looks only among the
/// company's own; a link of one account's recording is refused when altered to another's.
#[tokio::test]
async fn a_token_gets_its_own_accounts_recordings_only() {
    let sim = start().await;
    let acme = sim.default_account();
    let globex = sim.add_account(globex_config()).expect("a new appid");
    assert!(
        sim.add_account(globex_config()).is_none(),
        "an appid is one account"
    );
    acme.add_recording("acme.wav", 1000);
    globex.add_recording("globex.wav", 2000);

    let (acme_token, acme_company) = login_account(&sim, &acme).await;
    let (globex_token, globex_company) = login_account(&sim, &globex).await;
    let crossed = login_as(&sim, "globex-app", "demo-secret-key").await;

    assert_eq!(
        (acme_company, globex_company),
        ("20000013".into(), "20000099".into())
    );
    assert_eq!(crossed["data"]["errors"]["code"], "1003", "{crossed}");
    for (token, theirs) in [(&acme_token, "globex.wav"), (&globex_token, "acme.wav")] {
        let refused = link(&sim, token, theirs).await;
        assert_eq!(refused["data"]["status"], 1, "{refused}");
        assert_eq!(refused["data"]["errors"]["code"], "1002", "{refused}");
    }
    let url = downurl(&sim, &globex_token, "globex.wav").await;
    let body = get(&url).await.bytes().await.unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&body)),
        globex.expected_sha256("globex.wav").unwrap()
    );
    let as_default = url.replace("account=1&", "");
    assert_eq!(
        get(&as_default).await.status(),
        403,
        "a link is for one account"
    );
    let own = downurl(&sim, &acme_token, "acme.wav").await;
    assert_eq!(get(&own).await.bytes().await.unwrap().len(), 1000);
}

/// Each account's bill list names its own calls only, and its cursor (`syncflag` 1) is its
/// own: reading one account's bills leaves the other's unread.
#[tokio::test]
async fn each_account_has_its_own_calls_and_bill_list() {
    let sim = start().await;
    let now = chrono::Utc::now();
    let globex = sim.add_account(globex_config()).unwrap();
    let acme_calls = sim.sample_callbacks(4, now);
    let globex_calls = globex.sample_callbacks(6, now);
    let (acme_token, _) = login_account(&sim, &sim.default_account()).await;
    let (globex_token, _) = login_account(&sim, &globex).await;
    let list = |token: &str| BillList {
        token: token.to_owned(),
        start: envelope::provider_time(now - chrono::Duration::days(31)),
        end: envelope::provider_time(now + chrono::Duration::minutes(1)),
        sim: sim.clone(),
    };
    let files = |answer: &Value| -> Vec<Value> {
        let bills = answer["data"]["result"]["bills"].as_array().unwrap();
        bills.iter().map(|b| b["recordfilename"].clone()).collect()
    };

    let globex_first = list(&globex_token).page("1", "1", "100").await;
    let acme_first = list(&acme_token).page("1", "1", "100").await;

    let expected = |calls: &[Value]| -> Vec<Value> {
        calls.iter().map(|c| c["recordfilename"].clone()).collect()
    };
    assert_eq!(files(&globex_first), expected(&globex_calls));
    assert_eq!(
        files(&acme_first),
        expected(&acme_calls),
        "acme's cursor untouched"
    );
    assert!(
        globex_calls
            .iter()
            .all(|c| c["companycode"] == 20000099 && c["id"].as_u64() <= Some(6)),
        "globex's calls are its company's, numbered from 1"
    );
    let again = list(&globex_token).page("1", "1", "100").await;
    assert_eq!(again["data"]["result"]["totalitems"], 0);
}
