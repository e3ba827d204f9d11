//! The web page's HTML: login, search and a call's page (the dashboard has its own
//! module), rendered on the server with maud (which escapes every value it is given). One
//! layout, inline CSS, no script; forms that change anything carry a CSRF token; every
//! control has a label and is reachable by keyboard.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use secrecy::SecretString;
use serde::Deserialize;

use super::auth::{
    self, LOGIN_CSRF_COOKIE, Refused, SESSION_COOKIE, Via, clear_cookie, new_token, same_token,
    set_cookie, sha256_hex,
};
use super::scope::{self, Miss};
use super::users::UserName;
use super::{Ui, User};
use crate::accounts::AccountName;
use crate::domain::{CallUuid, RecordState};
use crate::ledger::{
    AccessAction, CallCursor, CallDetail, CallQuery, CallSummary, HoldSummary, Ledger, LedgerError,
    PhoneNumber, UiSession,
};

const CSS: &str = "
body{font:15px/1.4 system-ui,sans-serif;margin:0;color:#1a202c;background:#f7fafc}
header{background:#1a365d;color:#fff;padding:.5rem 1rem;display:flex;gap:1rem;align-items:center;flex-wrap:wrap}
header a{color:#fff}header nav{display:flex;gap:1rem;flex:1}
main{padding:1rem;max-width:72rem}
a:focus,button:focus,input:focus,select:focus{outline:3px solid #f6ad55;outline-offset:2px}
.skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:1rem;background:#fff;color:#000;padding:.3rem}
form.filters{display:grid;grid-template-columns:repeat(auto-fill,minmax(13rem,1fr));gap:.6rem;align-items:end}
label{display:block;font-weight:600;font-size:.9rem}
input,select,button{font:inherit;padding:.3rem .4rem;width:100%;box-sizing:border-box}
button{background:#2b6cb0;color:#fff;border:0;border-radius:3px;cursor:pointer;width:auto;padding:.4rem 1rem}
table{border-collapse:collapse;width:100%;background:#fff;margin:1rem 0}
th,td{border:1px solid #cbd5e0;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#edf2f7}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;background:#fff;padding:1rem}
dt{font-weight:600}dd{margin:0;word-break:break-all}
.error{background:#fed7d7;border:1px solid #c53030;padding:.5rem;margin:.5rem 0}
.note{color:#4a5568}
.login{max-width:22rem;margin:3rem auto;background:#fff;padding:1.5rem}
.login p{margin:.6rem 0}
a.button{display:inline-block;background:#2b6cb0;color:#fff;padding:.4rem 1rem;border-radius:3px;text-decoration:none}
.figures{display:flex;gap:1rem;flex-wrap:wrap}.figures div{background:#fff;padding:.6rem 1rem;border:1px solid #cbd5e0}
.risk{color:#c53030;font-weight:700}
";

pub(super) fn layout(title: &str, user: Option<&User>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — callvault" }
                style { (PreEscaped(CSS)) }
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    strong { "callvault" }
                    @if let Some(user) = user {
                        nav aria-label="Main" {
                            a href="/ui/" { "Search" }
                            a href="/ui/dashboard" { "Dashboard" }
                        }
                        span { "Signed in as " strong { (user.name) } }
                        @match &user.via {
                            Via::Session { csrf, .. } => {
                                form method="post" action="/ui/logout" {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button type="submit" id="logout" { "Log out" }
                                }
                            }
                            Via::Proxy => span.note { "(through the sign-in proxy)" }
                        }
                    }
                }
                main id="main" tabindex="-1" { h1 { (title) } (body) }
            }
        }
    }
}

/// An HTML answer the browser must not keep.
pub(super) fn page(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, axum::response::Html(markup.into_string())).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The login form; sets a fresh login CSRF cookie.
fn login_page(status: StatusCode, message: Option<&str>, secure: bool) -> Response {
    let csrf = new_token();
    let body = html! {
        div.login {
            @if let Some(message) = message {
                p.error role="alert" { (message) }
            }
            form method="post" action="/ui/login" {
                input type="hidden" name="csrf" value=(csrf);
                p {
                    label for="username" { "User name" }
                    input id="username" name="username" type="text" autocomplete="username" required autofocus;
                }
                p {
                    label for="password" { "Password" }
                    input id="password" name="password" type="password" autocomplete="current-password" required;
                }
                p { button type="submit" id="login" { "Log in" } }
            }
        }
    };
    let mut response = page(status, layout("Log in", None, body));
    if let Ok(v) = HeaderValue::from_str(&set_cookie(LOGIN_CSRF_COOKIE, &csrf, None, secure)) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthenticated { page: true, secure } => login_required(secure),
            Self::Unauthenticated { page: false, .. } => (
                StatusCode::UNAUTHORIZED,
                [(header::CACHE_CONTROL, "no-store")],
                "log in first\n",
            )
                .into_response(),
            Self::NotListed { page: true } => page(
                StatusCode::FORBIDDEN,
                layout(
                    "Not allowed",
                    None,
                    html! { p.error role="alert" { (NOT_LISTED) } },
                ),
            ),
            Self::NotListed { page: false } => (
                StatusCode::FORBIDDEN,
                [(header::CACHE_CONTROL, "no-store")],
                NOT_LISTED,
            )
                .into_response(),
            Self::LedgerDown => unavailable("the ledger does not answer; try again shortly"),
            Self::UsersFileDown => unavailable("The users file cannot be read; tell the operator."),
        }
    }
}

/// What a user the users file does not list is told.
const NOT_LISTED: &str = "You are signed in, but not given any account on this page: ask the \
    operator to add you (`callvault user add NAME --proxy-only --account ACCOUNT`).";

/// What an unauthenticated request to a page gets: the login form, with 401.
pub fn login_required(secure: bool) -> Response {
    login_page(
        StatusCode::UNAUTHORIZED,
        Some("Log in to continue."),
        secure,
    )
}

pub(super) fn unavailable(message: &'static str) -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        layout(
            "Unavailable",
            None,
            html! { p.error role="alert" { (message) } },
        ),
    )
}

fn error_page(status: StatusCode, user: &User, title: &str, message: &str) -> Response {
    page(
        status,
        layout(
            title,
            Some(user),
            html! { p.error role="alert" { (message) } },
        ),
    )
}

/// Logs a page's access in the log of each account it read, with that account's calls
/// (`calls`); on failure the page is not shown.
pub(super) async fn logged(
    ui: &Ui,
    user: &User,
    action: AccessAction,
    query: String,
    calls: Vec<(AccountName, Vec<CallUuid>)>,
) -> Result<(), Response> {
    let appended = async {
        for (account, calls) in calls {
            let (actor, from) = (user.name.as_str(), user.from);
            ui.log(&account, actor, from, action, Some(query.clone()), calls)
                .await?;
        }
        Ok::<_, LedgerError>(())
    };
    appended.await.map_err(|e| {
        tracing::error!(error = %e, "cannot write the access log; the page is not shown");
        error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            user,
            "Unavailable",
            "The access log cannot be written, so nothing is shown. Try again shortly.",
        )
    })
}

/// Each of the user's accounts with no call: the log entries of a page that lists none.
fn each_account(user: &User) -> Vec<(AccountName, Vec<CallUuid>)> {
    user.accounts.iter().map(|a| (a.clone(), vec![])).collect()
}

pub async fn root(_user: User) -> Redirect {
    Redirect::to("/ui/")
}

pub async fn login_form(State(ui): State<Ui>) -> Response {
    login_page(StatusCode::OK, None, ui.config.secure_cookies)
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

pub async fn login(
    State(ui): State<Ui>,
    parts: axum::http::request::Parts,
    Form(form): Form<LoginForm>,
) -> Response {
    let secure = ui.config.secure_cookies;
    let from = auth::peer(&parts);
    let cookie_csrf = auth::cookie(&parts, LOGIN_CSRF_COOKIE).unwrap_or("");
    if cookie_csrf.is_empty() || !same_token(cookie_csrf, &form.csrf) {
        return login_page(
            StatusCode::FORBIDDEN,
            Some("The form expired or did not come from this page; log in again."),
            secure,
        );
    }
    let name = form.username.trim().to_owned();
    let actor =
        UserName::parse(&name).map_or_else(|_| "(invalid name)".to_owned(), |n| n.to_string());
    if let Some(wait) = ui.guard.locked(&name, from) {
        let accounts = accounts_of(&ui, &name).await;
        return locked_out(&ui, &accounts, &actor, from, wait).await;
    }
    let user = match check_password(&ui, &name, form.password).await {
        Ok(user) => user,
        Err(answer) => return answer,
    };
    let Some(user) = user else {
        ui.guard.failed(&name, from);
        let accounts = accounts_of(&ui, &name).await;
        let failed = Some("wrong name or password".into());
        let _ = ui
            .log_each(&accounts, &actor, from, AccessAction::LoginFailed, failed)
            .await;
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some("Wrong user name or password."),
            secure,
        );
    };
    ui.guard.succeeded(&name);
    let accounts = accounts_of(&ui, &name).await;
    start_session(&ui, &user, &accounts, from).await
}

/// The accounts whose logs a login of `name` goes to: the user's, or every account served
/// here when the file does not list the name (or cannot be read).
async fn accounts_of(ui: &Ui, name: &str) -> Vec<AccountName> {
    match ui.user_accounts(name).await {
        Ok(Some(accounts)) => accounts,
        _ => ui.served(),
    }
}

/// The answer to a login while the name or the address is locked (`wait` more), logged.
async fn locked_out(
    ui: &Ui,
    accounts: &[AccountName],
    actor: &str,
    from: IpAddr,
    wait: std::time::Duration,
) -> Response {
    let locked = Some("locked".into());
    let _ = ui
        .log_each(accounts, actor, from, AccessAction::LoginFailed, locked)
        .await;
    let minutes = wait.as_secs().div_ceil(60).max(1);
    login_page(
        StatusCode::TOO_MANY_REQUESTS,
        Some(&format!(
            "Too many wrong passwords for this user or from this address. Try again in {minutes} minute(s)."
        )),
        ui.config.secure_cookies,
    )
}

/// The user `name` and `password` log in as (`None` when either is wrong), checked off the
/// async threads (the hash is slow on purpose); `Err` is the answer when no check could be
/// made.
async fn check_password(
    ui: &Ui,
    name: &str,
    password: String,
) -> Result<Option<UserName>, Response> {
    let users = ui.config.users.clone();
    let password = SecretString::from(password);
    let checked = {
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || users.verify(&name, &password)).await
    };
    match checked {
        Ok(Ok(user)) => Ok(user),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot check a login");
            Err(unavailable(
                "The users file cannot be read; tell the operator.",
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "the login check failed");
            Err(unavailable("The login check failed; try again."))
        }
    }
}

/// Starts a session for `user` (recorded in the ledger, the login logged in its `accounts`'
/// logs) and sends its cookie, with the search page to go to.
async fn start_session(
    ui: &Ui,
    user: &UserName,
    accounts: &[AccountName],
    from: IpAddr,
) -> Response {
    let secure = ui.config.secure_cookies;
    let token = new_token();
    let now = ui.clock.now();
    let ttl = ui.config.session_ttl;
    let session = UiSession {
        username: user.to_string(),
        created_at: now,
        expires_at: now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(8)),
    };
    let stored = async {
        ui.sessions
            .create_session(&sha256_hex(&token), &session, now)
            .await?;
        ui.log_each(accounts, user.as_str(), from, AccessAction::Login, None)
            .await
    };
    if let Err(e) = stored.await {
        tracing::error!(error = %e, "cannot record a session");
        return unavailable("The ledger does not answer; try again shortly.");
    }
    let mut response = Redirect::to("/ui/").into_response();
    let h = response.headers_mut();
    for cookie in [
        set_cookie(SESSION_COOKIE, &token, Some(ttl), secure),
        clear_cookie(LOGIN_CSRF_COOKIE, secure),
    ] {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            h.append(header::SET_COOKIE, v);
        }
    }
    response
}

#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(State(ui): State<Ui>, user: User, Form(form): Form<LogoutForm>) -> Response {
    let Via::Session { token_sha256, csrf } = &user.via else {
        return error_page(
            StatusCode::BAD_REQUEST,
            &user,
            "Log out",
            "You are signed in through the sign-in proxy: log out there.",
        );
    };
    if !same_token(csrf, &form.csrf) {
        return error_page(
            StatusCode::FORBIDDEN,
            &user,
            "Log out",
            "The form did not come from this page.",
        );
    }
    if let Err(e) = ui.sessions.end_session(token_sha256).await {
        tracing::error!(error = %e, "cannot end a session");
        return unavailable("The ledger does not answer; try again shortly.");
    }
    let _ = ui
        .log_each(
            &user.accounts,
            user.name.as_str(),
            user.from,
            AccessAction::Logout,
            None,
        )
        .await;
    let mut response = Redirect::to("/ui/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&clear_cookie(SESSION_COOKIE, ui.config.secure_cookies)) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// The search form's fields, as typed.
#[derive(Debug, Default, Deserialize)]
pub struct SearchForm {
    #[serde(default)]
    number: String,
    #[serde(default)]
    extension: String,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    company: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    uuid: String,
    #[serde(default)]
    after: String,
}

/// Results per page on the web page.
const PAGE: u32 = 50;

impl SearchForm {
    fn is_empty(&self) -> bool {
        [
            &self.number,
            &self.extension,
            &self.agent,
            &self.company,
            &self.since,
            &self.until,
            &self.state,
            &self.uuid,
        ]
        .iter()
        .all(|f| f.trim().is_empty())
    }

    /// The query these fields ask for, or what is wrong with them.
    fn query(&self, tz: chrono::FixedOffset) -> Result<CallQuery, String> {
        let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let number = match text(&self.number) {
            Some(n) => {
                Some(PhoneNumber::parse(&n).ok_or("the phone number must have digits in it")?)
            }
            None => None,
        };
        let bound = |s: &str, upper| -> Result<Option<DateTime<Utc>>, String> {
            text(s)
                .map(|s| crate::timefmt::parse_bound(&s, tz, upper))
                .transpose()
        };
        let states = match text(&self.state) {
            Some(s) => vec![RecordState::parse(&s).ok_or("unknown state")?],
            None => vec![],
        };
        let uuids = match text(&self.uuid) {
            Some(u) => vec![CallUuid::parse(&u).ok_or("not a call id")?],
            None => vec![],
        };
        Ok(CallQuery {
            number,
            extension: text(&self.extension),
            agent: text(&self.agent),
            company: text(&self.company),
            since: bound(&self.since, false)?,
            until: bound(&self.until, true)?,
            states,
            uuids,
            limit: PAGE,
            after: None,
        })
    }

    /// Where each account's calls resume (the `after` field): a line `ACCOUNT/CURSOR` per
    /// account that listed calls on the pages before, so that each account's calls go on
    /// exactly after the last one shown, however they interleave with the others'.
    fn cursors(&self) -> Result<BTreeMap<AccountName, CallCursor>, String> {
        self.after
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let (account, cursor) = line.trim().split_once('/').ok_or("bad page cursor")?;
                let account = AccountName::parse(account).map_err(|_| "bad page cursor")?;
                let cursor = CallCursor::parse(cursor).ok_or("bad page cursor")?;
                Ok((account, cursor))
            })
            .collect()
    }

    /// The address of the next page, each account resuming at its cursor.
    fn next_page(&self, cursors: &BTreeMap<AccountName, CallCursor>) -> String {
        let pairs = [
            ("number", &self.number),
            ("extension", &self.extension),
            ("agent", &self.agent),
            ("company", &self.company),
            ("since", &self.since),
            ("until", &self.until),
            ("state", &self.state),
            ("uuid", &self.uuid),
        ];
        let mut url = url::Url::parse("http://x/ui/").expect("a fixed URL");
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in pairs {
                if !v.trim().is_empty() {
                    q.append_pair(k, v.trim());
                }
            }
            let after: Vec<String> = cursors.iter().map(|(a, c)| format!("{a}/{c}")).collect();
            q.append_pair("after", &after.join("\n"));
        }
        format!("/ui/?{}", url.query().unwrap_or(""))
    }
}

fn filters(form: &SearchForm) -> Markup {
    let field = |id: &str, label: &str, value: &str, kind: &str, hint: &str| {
        html! {
            div {
                label for=(id) { (label) }
                input id=(id) name=(id) type=(kind) value=(value) aria-describedby={(id) "-hint"};
                small.note id={(id) "-hint"} { (hint) }
            }
        }
    };
    html! {
        form.filters method="get" action="/ui/" role="search" aria-label="Find calls" {
            (field("number", "Phone number", &form.number, "search", "caller, callee or shown; last digits match"))
            (field("extension", "Extension", &form.extension, "text", "exact"))
            (field("agent", "Agent", &form.agent, "text", "crmid or userid, exact"))
            (field("company", "Company", &form.company, "text", "company code"))
            (field("since", "From", &form.since, "date", "call start, this day or later"))
            (field("until", "To", &form.until, "date", "call start, up to this day"))
            div {
                label for="state" { "State" }
                select id="state" name="state" {
                    option value="" { "any" }
                    @for state in RecordState::ALL {
                        option value=(state.as_str()) selected[form.state == state.as_str()] { (state.as_str()) }
                    }
                }
            }
            (field("uuid", "Call id", &form.uuid, "text", "the call's uuid"))
            div { button type="submit" id="search" { "Search" } }
        }
    }
}

pub(super) fn local(t: Option<DateTime<Utc>>, tz: chrono::FixedOffset) -> String {
    t.map_or_else(String::new, |t| {
        t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S").to_string()
    })
}

fn size_text(bytes: Option<i64>) -> String {
    match bytes {
        Some(b) if b >= 1024 * 1024 => format!("{:.1} MiB ({b} bytes)", b as f64 / 1048576.0),
        Some(b) if b >= 1024 => format!("{:.1} KiB ({b} bytes)", b as f64 / 1024.0),
        Some(b) => format!("{b} bytes"),
        None => String::new(),
    }
}

/// `GET /ui/`: the search form, and the calls it finds in the user's accounts.
pub async fn search(State(ui): State<Ui>, user: User, Query(form): Query<SearchForm>) -> Response {
    let tz = ui.config.tz;
    if form.is_empty() {
        let accounts = each_account(&user);
        let viewed = logged(
            &ui,
            &user,
            AccessAction::View,
            "search form".into(),
            accounts,
        );
        if let Err(refusal) = viewed.await {
            return refusal;
        }
        let body = html! {
            (filters(&form))
            p.note { "Fill in any of the fields; calls matching all of them are listed, oldest first." }
        };
        return page(StatusCode::OK, layout("Find calls", Some(&user), body));
    }
    let asked = form.query(tz).and_then(|q| Ok((q, form.cursors()?)));
    let (query, cursors) = match asked {
        Ok(asked) => asked,
        Err(why) => {
            let body = html! { p.error role="alert" { (why) } (filters(&form)) };
            return page(
                StatusCode::BAD_REQUEST,
                layout("Find calls", Some(&user), body),
            );
        }
    };
    let found = match Found::read(&ui, &user.accounts, &query, cursors).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "a search failed");
            return unavailable("The ledger does not answer; try again shortly.");
        }
    };
    let calls = found.calls_per_account(&user.accounts);
    if let Err(refusal) = logged(&ui, &user, AccessAction::Find, query.describe(), calls).await {
        return refusal;
    }
    let next = found.more.then(|| form.next_page(&found.cursors));
    let body = html! {
        (filters(&form))
        h2 id="results" { (found.calls.len()) " call(s)" }
        @if found.calls.is_empty() {
            p { "No call matches." }
        } @else {
            (results(&found.calls, tz))
            @if let Some(next) = next {
                p { a href=(next) { "Next page" } }
            }
        }
    };
    page(StatusCode::OK, layout("Find calls", Some(&user), body))
}

/// A page of calls found in several accounts, merged in the order calls are listed.
struct Found {
    calls: Vec<(AccountName, CallSummary)>,
    /// Where each account resumes on the next page.
    cursors: BTreeMap<AccountName, CallCursor>,
    /// Whether there may be more calls after this page.
    more: bool,
}

impl Found {
    /// A page of `query`'s calls in `accounts`, each resuming after its cursor.
    async fn read(
        ui: &Ui,
        accounts: &[AccountName],
        query: &CallQuery,
        mut cursors: BTreeMap<AccountName, CallCursor>,
    ) -> Result<Self, LedgerError> {
        let page = query.page_size() as usize;
        let mut calls = Vec::new();
        let mut full = false;
        for account in accounts {
            let Some(served) = ui.accounts.get(account) else {
                continue;
            };
            let query = CallQuery {
                after: cursors.get(account).cloned(),
                ..query.clone()
            };
            let rows = served.ledger.find_calls(&query).await?;
            full |= rows.len() >= page;
            calls.extend(rows.into_iter().map(|c| (account.clone(), c)));
        }
        calls.sort_by(listed_order);
        let more = full || calls.len() > page;
        calls.truncate(page);
        for (account, call) in &calls {
            cursors.insert(account.clone(), CallCursor::after(call));
        }
        Ok(Self {
            calls,
            cursors,
            more,
        })
    }

    /// Each of `accounts` with the calls of it this page lists (the access log's entries).
    fn calls_per_account(&self, accounts: &[AccountName]) -> Vec<(AccountName, Vec<CallUuid>)> {
        accounts
            .iter()
            .map(|account| {
                let calls = self.calls.iter().filter(|(a, _)| a == account);
                (
                    account.clone(),
                    calls.map(|(_, c)| c.uuid.clone()).collect(),
                )
            })
            .collect()
    }
}

/// The table of calls found, each with its account and a link to its page.
fn results(found: &[(AccountName, CallSummary)], tz: chrono::FixedOffset) -> Markup {
    html! {
        table aria-labelledby="results" {
            thead { tr {
                th scope="col" { "Start (" (tz) ")" }
                th scope="col" { "Account" }
                th scope="col" { "Call" }
                th scope="col" { "Shown number" }
                th scope="col" { "Callee" }
                th scope="col" { "Extension" }
                th scope="col" { "Agent" }
                th scope="col" { "Company" }
                th scope="col" { "Seconds" }
                th scope="col" { "State" }
            } }
            tbody {
                @for (account, call) in found {
                    tr {
                        td { (local(call.call_start, tz)) }
                        td { (account) }
                        td { a href=(call_href(account, &call.uuid)) { (call.uuid.as_str()) } }
                        td { (call.parties.display_number.as_deref().unwrap_or("")) }
                        td { (call.parties.callee.as_deref().unwrap_or("")) }
                        td { (call.parties.extension.as_deref().unwrap_or("")) }
                        td { (call.parties.crmid.as_deref().or(call.parties.userid.as_deref()).unwrap_or("")) }
                        td { (call.company) }
                        td { (call.billsec.map(|s| s.to_string()).unwrap_or_default()) }
                        td { (call.state.as_str()) }
                    }
                }
            }
        }
    }
}

/// The order calls of several accounts are listed in: as one account's (by start, undated
/// last, then uuid), then by account.
pub(super) fn listed_order(
    (a, x): &(AccountName, CallSummary),
    (b, y): &(AccountName, CallSummary),
) -> std::cmp::Ordering {
    let key = |c: &CallSummary| (c.call_start.is_none(), c.call_start, c.uuid.clone());
    key(x).cmp(&key(y)).then_with(|| a.cmp(b))
}

/// The address of `account`'s call `uuid`'s page.
pub(super) fn call_href(account: &AccountName, uuid: &CallUuid) -> String {
    format!("/ui/calls/{account}/{}", urlencode(uuid.as_str()))
}

/// A path segment with everything but unreserved characters percent-encoded.
fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// `GET /ui/calls/{account}/{uuid}`: everything the ledger knows about one call of one of
/// the user's accounts, and its recording.
pub async fn call(
    State(ui): State<Ui>,
    user: User,
    Path((account, raw)): Path<(String, String)>,
) -> Response {
    match scope::named(&ui, &user, &account, &raw, "call").await {
        Ok((account, uuid)) => call_page(&ui, &user, &account, &uuid).await,
        Err(miss) => call_missing(&user, miss),
    }
}

/// `GET /ui/calls/{uuid}`, a link from before accounts: to the call's page when exactly one
/// of the user's accounts holds the uuid; otherwise as an unknown call.
pub async fn old_call(State(ui): State<Ui>, user: User, Path(raw): Path<String>) -> Response {
    match scope::unnamed(&ui, &user, &raw, "call").await {
        Ok((account, uuid)) => Redirect::to(&call_href(&account, &uuid)).into_response(),
        Err(miss) => call_missing(&user, miss),
    }
}

/// The answer when an address leads to no call of the user's: the same for an unknown call
/// and for another account's.
fn call_missing(user: &User, miss: Miss) -> Response {
    match miss {
        Miss::BadId => error_page(
            StatusCode::BAD_REQUEST,
            user,
            "Not a call",
            "That is not a call id.",
        ),
        Miss::NotFound => error_page(
            StatusCode::NOT_FOUND,
            user,
            "No such call",
            "The ledger holds no call with this id.",
        ),
        Miss::Unavailable => unavailable("The ledger does not answer; try again shortly."),
    }
}

/// The page of `account`'s call `uuid` (the account is the user's).
async fn call_page(ui: &Ui, user: &User, account: &AccountName, uuid: &CallUuid) -> Response {
    let Some(served) = ui.accounts.get(account) else {
        return call_missing(user, Miss::NotFound);
    };
    let read = async {
        let Some(detail) = served.ledger.call_detail(uuid).await? else {
            return Ok(None);
        };
        let holds = call_holds(&served.ledger, uuid).await?;
        Ok::<_, LedgerError>(Some((detail, holds)))
    };
    let (detail, holds) = match read.await {
        Ok(Some(read)) => read,
        Ok(None) => return call_missing(user, Miss::NotFound),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a call");
            return unavailable("The ledger does not answer; try again shortly.");
        }
    };
    let what = format!("call {account}/{}", uuid.as_str());
    let calls = vec![(account.clone(), vec![uuid.clone()])];
    if let Err(refusal) = logged(ui, user, AccessAction::View, what, calls).await {
        return refusal;
    }
    page(
        StatusCode::OK,
        layout(
            &format!("Call {}", uuid.as_str()),
            Some(user),
            call_body(account, &detail, &holds, ui.config.tz),
        ),
    )
}

fn call_body(
    account: &AccountName,
    d: &CallDetail,
    holds: &[HoldSummary],
    tz: chrono::FixedOffset,
) -> Markup {
    html! {
        (recording_section(account, d))
        (call_section(account, d, tz))
        (archive_section(d, holds, tz))
        (manifest_section(d, tz))
        (attempts_section(d, tz))
    }
}

/// The player and the download link, when the call has an archived recording.
fn recording_section(account: &AccountName, d: &CallDetail) -> Markup {
    let s = &d.summary;
    let href = call_href(account, &s.uuid);
    let playable = s.state == RecordState::Archived && d.object_key.is_some();
    html! {
        section aria-labelledby="recording" {
            h2 id="recording" { "Recording" }
            @if playable {
                audio id="player" controls preload="metadata" src={(href) "/audio"} aria-label="Play the recording" {
                    "Your browser cannot play this recording; download it instead."
                }
                p { a.button id="download" href={(href) "/download"} download { "Download the recording" } }
            } @else {
                p.note { "No archived recording to play (state: " (s.state.as_str()) ")." }
            }
        }
    }
}

/// What the provider said about the call.
fn call_section(account: &AccountName, d: &CallDetail, tz: chrono::FixedOffset) -> Markup {
    let s = &d.summary;
    html! {
        section aria-labelledby="call" {
            h2 id="call" { "Call" }
            dl {
                dt { "Account" } dd id="account" { (account) }
                dt { "Call id" } dd id="uuid" { (s.uuid.as_str()) }
                dt { "Start (" (tz) ")" } dd { (local(s.call_start, tz)) }
                dt { "Company" } dd { (s.company) }
                dt { "Shown number" } dd { (s.parties.display_number.as_deref().unwrap_or("")) }
                dt { "Callee" } dd { (s.parties.callee.as_deref().unwrap_or("")) }
                dt { "Caller" } dd { (s.parties.caller.as_deref().unwrap_or("")) }
                dt { "Extension" } dd { (s.parties.extension.as_deref().unwrap_or("")) }
                dt { "Agent (crmid / userid)" } dd { (s.parties.crmid.as_deref().unwrap_or("")) " / " (s.parties.userid.as_deref().unwrap_or("")) }
                dt { "Billed seconds" } dd { (s.billsec.map(|b| b.to_string()).unwrap_or_default()) }
                dt { "Recording file" } dd { (d.record_file) }
                dt { "Provider id" } dd { (d.bill_id.as_deref().unwrap_or("")) }
            }
        }
    }
}

/// What the archive holds of the call: its state, object, checks and holds.
fn archive_section(d: &CallDetail, holds: &[HoldSummary], tz: chrono::FixedOffset) -> Markup {
    let s = &d.summary;
    html! {
        section aria-labelledby="archive" {
            h2 id="archive" { "Archive" }
            dl {
                dt { "State" } dd id="state" { (s.state.as_str()) }
                dt { "Archived at" } dd { (local(d.archived_at, tz)) }
                dt { "SHA-256" } dd id="sha256" { (s.sha256.as_deref().unwrap_or("")) }
                dt { "Size" } dd { (size_text(s.size_bytes)) }
                dt { "Object" } dd { (d.object_key.as_deref().unwrap_or("")) }
                dt { "Content type" } dd { (d.content_type.as_deref().unwrap_or("")) }
                dt { "Verification" } dd id="verification" {
                    @match &d.last_verify_result {
                        Some(result) => { (result) " at " (local(d.last_verified_at, tz)) }
                        None => "not verified yet",
                    }
                }
                dt { "Media check" } dd {
                    (d.media_duration_ms.map(|ms| format!("{:.1} s", ms as f64 / 1000.0)).unwrap_or_default())
                    " " (d.media_note.as_deref().unwrap_or(""))
                }
                dt { "Last error" } dd { (d.last_error_code.as_deref().unwrap_or("")) " " (d.last_error.as_deref().unwrap_or("")) }
                (hold_state(holds, tz))
            }
        }
    }
}

/// The manifests that list the call.
fn manifest_section(d: &CallDetail, tz: chrono::FixedOffset) -> Markup {
    html! {
        section aria-labelledby="manifest" {
            h2 id="manifest" { "Manifest" }
            @if d.manifests.is_empty() {
                p.note { "Not listed in a manifest yet (the next archival pass writes one)." }
            } @else {
                table aria-labelledby="manifest" {
                    thead { tr { th scope="col" { "Seq" } th scope="col" { "Object" } th scope="col" { "SHA-256" } th scope="col" { "Written" } } }
                    tbody { @for m in &d.manifests { tr {
                        td { (m.seq) } td { (m.object_key) } td { (m.sha256.as_deref().unwrap_or("being written")) } td { (local(m.written_at, tz)) }
                    } } }
                }
            }
        }
    }
}

/// Every attempt to archive the call.
fn attempts_section(d: &CallDetail, tz: chrono::FixedOffset) -> Markup {
    html! {
        section aria-labelledby="attempts" {
            h2 id="attempts" { "Attempts (" (d.attempts_made) ")" }
            table aria-labelledby="attempts" {
                thead { tr {
                    th scope="col" { "Started" } th scope="col" { "Finished" } th scope="col" { "Outcome" }
                    th scope="col" { "Bytes" } th scope="col" { "Error" } th scope="col" { "Run" }
                } }
                tbody { @for a in &d.attempts { tr {
                    td { (local(Some(a.started_at), tz)) } td { (local(a.finished_at, tz)) } td { (a.outcome.as_str()) }
                    td { (a.bytes) } td { (a.error_code.as_deref().unwrap_or("")) " " (a.message.as_deref().unwrap_or("")) } td { (a.run_id) }
                } } }
            }
        }
    }
}

/// The active legal holds that keep this call (their case references), from the ledger.
async fn call_holds(ledger: &Ledger, uuid: &CallUuid) -> Result<Vec<HoldSummary>, LedgerError> {
    let facts = ledger.call_facts(std::slice::from_ref(uuid)).await?;
    let Some(ids) = facts.into_iter().next().map(|f| f.holds) else {
        return Ok(Vec::new());
    };
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let active = ledger.holds(false).await?;
    Ok(active.into_iter().filter(|h| ids.contains(&h.id)).collect())
}

/// The call's legal-hold state: each active hold's reference, reason and who placed it.
fn hold_state(holds: &[HoldSummary], tz: chrono::FixedOffset) -> Markup {
    html! {
        dt { "Hold" }
        dd id="hold" {
            @if holds.is_empty() {
                "not on hold"
            } @else {
                @for h in holds {
                    "on hold: " (h.reason) " (" (h.id.as_str()) ", placed by " (h.placed_by) " at " (local(Some(h.placed_at), tz)) ")"
                    br;
                }
            }
        }
    }
}

/// Adds the page's protective headers to every answer: no framing, no sniffing, no
/// referrer, and a content policy that forbids scripts and anything from elsewhere.
pub async fn protect(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; media-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> SearchForm {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        serde_urlencoded_form(&query)
    }

    fn serde_urlencoded_form(query: &str) -> SearchForm {
        let uri: axum::http::Uri = format!("/ui/?{query}").parse().unwrap();
        Query::<SearchForm>::try_from_uri(&uri).unwrap().0
    }

    #[test]
    fn the_form_becomes_a_query_and_bad_fields_say_what_is_wrong() {
        let tz = crate::timefmt::PROVIDER_TZ;
        let q = form(&[
            ("number", "+49 (0)30-13692"),
            ("state", "archived"),
            ("since", "2026-03-01"),
        ])
        .query(tz)
        .unwrap();
        assert_eq!(q.number.unwrap().as_str(), "4903013692");
        assert_eq!(q.states, vec![RecordState::Archived]);
        assert_eq!(q.since.unwrap().to_rfc3339(), "2026-02-28T16:00:00+00:00");
        assert_eq!(q.limit, PAGE);
        assert!(form(&[("number", "abc")]).query(tz).is_err());
        assert!(form(&[("state", "gone")]).query(tz).is_err());
        assert!(form(&[("since", "March")]).query(tz).is_err());
        assert!(form(&[]).is_empty() && !form(&[("agent", "7")]).is_empty());
    }

    #[test]
    fn the_next_page_keeps_the_filters_and_continues_after_the_last_call() {
        let f = form(&[("agent", "a&b=c"), ("company", "")]);
        let last = CallSummary {
            uuid: CallUuid::parse("u-1").unwrap(),
            call_start: None,
            company: "1".into(),
            parties: Default::default(),
            billsec: None,
            state: RecordState::Archived,
            size_bytes: None,
            sha256: None,
        };
        let acme = AccountName::parse("acme").unwrap();
        let globex = AccountName::parse("globex").unwrap();
        let cursors = BTreeMap::from([
            (acme, CallCursor::after(&last)),
            (globex, CallCursor::Undated(CallUuid::parse("u 2").unwrap())),
        ]);
        let next = f.next_page(&cursors);
        assert_eq!(
            next,
            "/ui/?agent=a%26b%3Dc&after=acme%2F-%2Fu-1%0Aglobex%2F-%2Fu+2"
        );
        let back = serde_urlencoded_form(next.strip_prefix("/ui/?").unwrap());
        assert_eq!(back.agent, "a&b=c");
        assert_eq!(
            back.cursors().unwrap(),
            cursors,
            "each account resumes at its own"
        );
        assert!(form(&[("after", "-/u-1")]).cursors().is_err());
    }
}
