//! Which calls `hold`, `release`, `erase` and `expire` act on: a [`CallQuery`], the ledger's
//! one way to name "these calls" (the one `find` searches with: uuid, company, call start,
//! phone number or its last digits, extension, agent, state), walked page by page so memory
//! stays bounded; for each page, what the commands decide on ([`CallFacts`]: the object,
//! the holds, the manifest).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ledger::{CallCursor, CallFacts, CallQuery, Ledger, LedgerError};

/// Calls read from the ledger at a time.
const PAGE: u32 = 200;

/// A selection of calls. Commands refuse a query that selects everything.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub query: CallQuery,
}

impl Selection {
    pub fn new(query: CallQuery) -> Self {
        Self { query }
    }

    /// The calls that may be past `older_than` at `now` (of `company`, or every company):
    /// the ledger chooses by start with a day to spare, and [`crate::retention::erase`]
    /// then checks each call exactly. `None` when the period reaches before any date.
    pub fn expiring(
        older_than: crate::store::RetainFor,
        now: DateTime<Utc>,
        company: Option<String>,
    ) -> Option<Self> {
        let cutoff = retention_cutoff(older_than, now)?;
        Some(Self::new(CallQuery {
            company,
            until: Some(cutoff + chrono::Duration::days(1)),
            ..CallQuery::default()
        }))
    }

    /// Whether it names nothing to choose by (it would choose every call).
    pub fn is_empty(&self) -> bool {
        self.query.selects_everything()
    }

    /// The filters, as recorded with a hold.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::Value::String(self.query.describe())
    }
}

impl Serialize for Selection {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.query.describe())
    }
}

/// The chosen calls, page by page (in the query's order: by call start, then uuid).
pub struct Pages<'a> {
    ledger: &'a Ledger,
    query: CallQuery,
    done: bool,
}

impl<'a> Pages<'a> {
    pub fn new(ledger: &'a Ledger, selection: &Selection) -> Self {
        let mut query = selection.query.clone();
        query.limit = PAGE;
        query.after = None;
        Self {
            ledger,
            query,
            done: false,
        }
    }

    /// The next page of chosen calls; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Vec<CallFacts>>, LedgerError> {
        if self.done {
            return Ok(None);
        }
        let page = self.ledger.find_calls(&self.query).await?;
        let Some(last) = page.last() else {
            self.done = true;
            return Ok(None);
        };
        self.query.after = Some(CallCursor::after(last));
        if page.len() < self.query.page_size() as usize {
            self.done = true;
        }
        let uuids: Vec<_> = page.iter().map(|c| c.uuid.clone()).collect();
        Ok(Some(self.ledger.call_facts(&uuids).await?))
    }
}

/// The end of a retention period counted back from `now`: calls that started before it
/// are past retention (checked exactly, call by call, with [`crate::store::RetainFor::until`]).
pub fn retention_cutoff(
    retain_for: crate::store::RetainFor,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    use crate::store::RetainFor;
    match retain_for {
        RetainFor::Years(n) => now.checked_sub_months(chrono::Months::new(n.checked_mul(12)?)),
        RetainFor::Months(n) => now.checked_sub_months(chrono::Months::new(n)),
        RetainFor::Days(n) => now.checked_sub_signed(chrono::Duration::days(i64::from(n))),
    }
}
