//! The dashboard (`/ui/dashboard`): the figures of the user's accounts added up (calls per
//! state, at risk, the oldest waiting), a row per account when there are several, the
//! oldest calls at risk with their accounts, and recordings archived per day as charts.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::pages::{call_href, layout, listed_order, local, logged, page, unavailable};
use super::{Ui, User, chart};
use crate::accounts::AccountName;
use crate::domain::RecordState;
use crate::ledger::{AccessAction, CallQuery, CallSummary, LedgerError, LedgerFigures, risk_line};

/// Calls at risk listed on the dashboard (all are counted).
const AT_RISK_SHOWN: u32 = 20;

/// `GET /ui/dashboard`: counts per state, archived per day, calls at risk.
pub async fn dashboard(State(ui): State<Ui>, user: User) -> Response {
    let now = ui.clock.now();
    let line = risk_line(now, ui.config.retention);
    let since = now - chrono::Duration::days(29);
    let read = match Dashboard::read(&ui, &user.accounts, line, since).await {
        Ok(read) => read,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the dashboard's figures");
            return unavailable("The ledger does not answer; try again shortly.");
        }
    };
    let listed = user
        .accounts
        .iter()
        .map(|account| {
            let risky = read.risky.iter().filter(|(a, _)| a == account);
            (
                account.clone(),
                risky.map(|(_, c)| c.uuid.clone()).collect(),
            )
        })
        .collect();
    if let Err(refusal) = logged(&ui, &user, AccessAction::View, "dashboard".into(), listed).await {
        return refusal;
    }
    let days = chart::daily(&read.daily, since.date_naive(), now.date_naive());
    let body = read.body(&ui, line, &days);
    page(StatusCode::OK, layout("Dashboard", Some(&user), body))
}

/// What the dashboard shows, read from the ledger: the user's accounts, added up.
struct Dashboard {
    /// Each account's figures.
    figures: Vec<(AccountName, LedgerFigures)>,
    /// Recordings archived per day since the chart's first day.
    daily: Vec<(chrono::NaiveDate, i64)>,
    /// The oldest calls at risk (at most [`AT_RISK_SHOWN`]).
    risky: Vec<(AccountName, CallSummary)>,
}

impl Dashboard {
    /// The figures of `accounts` for the risk `line`, the calls at risk, and the days
    /// archived from `since`'s day on.
    async fn read(
        ui: &Ui,
        accounts: &[AccountName],
        line: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> Result<Self, LedgerError> {
        let risky_query = CallQuery {
            states: vec![
                RecordState::Pending,
                RecordState::InProgress,
                RecordState::Failed,
            ],
            until: Some(line),
            limit: AT_RISK_SHOWN,
            ..CallQuery::default()
        };
        let day = since
            .date_naive()
            .and_time(chrono::NaiveTime::MIN)
            .and_utc();
        let (mut figures, mut risky) = (Vec::new(), Vec::new());
        let mut daily = BTreeMap::new();
        for account in accounts {
            let Some(served) = ui.accounts.get(account) else {
                continue;
            };
            figures.push((account.clone(), served.ledger.figures(line).await?));
            let calls = served.ledger.find_calls(&risky_query).await?;
            risky.extend(calls.into_iter().map(|c| (account.clone(), c)));
            for (date, n) in served.ledger.archived_per_day(day).await? {
                *daily.entry(date).or_insert(0) += n;
            }
        }
        risky.sort_by(listed_order);
        risky.truncate(AT_RISK_SHOWN as usize);
        Ok(Self {
            figures,
            daily: daily.into_iter().collect(),
            risky,
        })
    }

    /// Calls at risk in all the accounts.
    fn at_risk(&self) -> i64 {
        self.figures.iter().map(|(_, f)| f.at_risk).sum()
    }

    /// The start of the oldest call still waiting, in any of the accounts.
    fn oldest_pending_call(&self) -> Option<DateTime<Utc>> {
        self.figures
            .iter()
            .filter_map(|(_, f)| f.oldest_pending_call)
            .min()
    }

    /// How many records are in each state, every state named.
    fn states(&self) -> Vec<(String, i64)> {
        RecordState::ALL
            .iter()
            .map(|s| {
                let n = self.figures.iter().map(|(_, f)| count(f, *s)).sum();
                (s.as_str().to_owned(), n)
            })
            .collect()
    }

    /// A row per account: its calls archived, waiting and failed, and at risk.
    fn per_account(&self) -> Markup {
        let waiting =
            |f: &LedgerFigures| count(f, RecordState::Pending) + count(f, RecordState::InProgress);
        html! {
            table aria-labelledby="per-account" {
                caption id="per-account" { "Per account" }
                thead { tr {
                    th scope="col" { "Account" } th scope="col" { "Archived" }
                    th scope="col" { "Waiting" } th scope="col" { "Failed" } th scope="col" { "At risk" }
                } }
                tbody { @for (account, f) in &self.figures { tr {
                    td { (account) } td { (count(f, RecordState::Archived)) } td { (waiting(f)) }
                    td { (count(f, RecordState::Failed)) } td { (f.at_risk) }
                } } }
            }
        }
    }

    /// The page: the figures, the calls at risk of the risk `line`, and the charts (`days`
    /// archived per day).
    fn body(&self, ui: &Ui, line: DateTime<Utc>, days: &[(String, i64)]) -> Markup {
        let states = self.states();
        let risky = &self.risky;
        let deletion_from = line - chrono::Duration::days(14);
        let tz = ui.config.tz;
        let risky_search = format!(
            "/ui/?state=pending&until={}",
            line.with_timezone(&tz).format("%Y-%m-%d")
        );
        html! {
            div.figures {
                @for (state, n) in &states { div { strong { (n) } " " (state) } }
                div { strong.risk id="at-risk" { (self.at_risk()) } " at risk" }
            }
            @if self.figures.len() > 1 { (self.per_account()) }
            p {
                "At risk: calls not archived whose start is before " (local(Some(line), tz))
                ", so the provider deletes their recordings within 14 days (retention "
                (ui.config.retention.num_days()) " days; the oldest still held date from "
                (local(Some(deletion_from), tz)) "). "
                a href=(risky_search) { "List pending calls at risk" }
            }
            @if !risky.is_empty() {
                table aria-labelledby="at-risk-calls" {
                    caption id="at-risk-calls" { "Calls at risk (oldest first, at most " (AT_RISK_SHOWN) ")" }
                    thead { tr {
                        th scope="col" { "Start (" (tz) ")" } th scope="col" { "Account" }
                        th scope="col" { "Call" } th scope="col" { "Company" } th scope="col" { "State" }
                    } }
                    tbody { @for (account, call) in risky { tr {
                        td { (local(call.call_start, tz)) }
                        td { (account) }
                        td { a href=(call_href(account, &call.uuid)) { (call.uuid.as_str()) } }
                        td { (call.company) }
                        td { (call.state.as_str()) }
                    } } }
                }
            }
            @if let Some(oldest) = self.oldest_pending_call() {
                p { "Oldest pending call: " (local(Some(oldest), tz)) }
            }
            h2 id="per-state" { "Calls per state" }
            (chart::bars("Calls per state", &states))
            h2 id="per-day" { "Recordings archived per day (UTC, last 30 days)" }
            (chart::bars("Recordings archived per day", days))
            table aria-labelledby="per-day" {
                thead { tr { th scope="col" { "Day" } th scope="col" { "Archived" } } }
                tbody { @for (day, n) in days.iter().filter(|(_, n)| *n > 0) { tr { td { (day) } td { (n) } } } }
            }
        }
    }
}

/// How many of the account's records are in `state`.
fn count(figures: &LedgerFigures, state: RecordState) -> i64 {
    figures
        .counts
        .iter()
        .find(|(s, _)| *s == state)
        .map_or(0, |(_, n)| *n)
}
