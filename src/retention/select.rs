//! Which calls `hold`, `release` and `erase` act on: by uuid, company, call start and phone
//! number (caller, callee, displayed number, extension). The ledger chooses by uuid,
//! company and start; numbers are matched here on the record as received, read leniently
//! (the provider's JSON is not always well formed), page by page so memory stays bounded.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::CallUuid;
use crate::ledger::{CallFacts, CallFilter, Ledger, LedgerError};

/// Calls read from the ledger at a time.
const PAGE: i64 = 200;

/// The fields of the provider's record that hold a phone number: the caller's, the called
/// number, the number displayed to the other party, the agent's extension.
pub const NUMBER_FIELDS: [&str; 9] = [
    "callernumber",
    "caller",
    "callerid",
    "srcnumber",
    "destnumber",
    "callee",
    "disnumber",
    "displaynumber",
    "extnumber",
];

/// Digits at least this long match as the end of a longer number (a national number
/// against one with a country code or trunk prefix); shorter ones (extensions) exactly.
const SUFFIX_DIGITS: usize = 7;

/// A selection of calls. Empty selections are refused by the commands (they would choose
/// every call).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Selection {
    #[serde(flatten)]
    pub filter: CallFilter,
    /// Phone numbers, any of which a call must carry in one of [`NUMBER_FIELDS`].
    pub numbers: Vec<String>,
}

impl Selection {
    /// Whether it names nothing to choose by.
    pub fn is_empty(&self) -> bool {
        self.filter.uuids.is_empty()
            && self.filter.company.is_none()
            && self.filter.since.is_none()
            && self.filter.until.is_none()
            && self.numbers.is_empty()
    }

    /// Whether the call (already chosen by the filter) carries one of the numbers.
    pub fn matches(&self, call: &CallFacts) -> bool {
        if self.numbers.is_empty() {
            return true;
        }
        let carried = numbers_of(&call.raw_json);
        self.numbers.iter().any(|n| {
            let want = digits(n);
            !want.is_empty() && carried.iter().any(|c| same_number(&want, c))
        })
    }

    pub fn describe(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

fn same_number(want: &str, carried: &str) -> bool {
    if want == carried {
        return true;
    }
    let (short, long) = if want.len() <= carried.len() {
        (want, carried)
    } else {
        (carried, want)
    };
    short.len() >= SUFFIX_DIGITS && long.ends_with(short)
}

/// The digits of every number field in a record as received.
fn numbers_of(raw_json: &str) -> Vec<String> {
    let value = serde_json::from_str::<serde_json::Value>(raw_json)
        .or_else(|_| serde_json::from_str(&crate::callback::lenient::repair(raw_json)));
    let Ok(serde_json::Value::Object(map)) = value else {
        return Vec::new();
    };
    NUMBER_FIELDS
        .iter()
        .filter_map(|f| map.get(*f))
        .filter_map(|v| match v {
            serde_json::Value::String(s) => Some(digits(s)),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .filter(|d| !d.is_empty())
        .collect()
}

/// The chosen calls, page by page.
pub struct Pages<'a> {
    ledger: &'a Ledger,
    selection: &'a Selection,
    after: Option<CallUuid>,
    done: bool,
}

impl<'a> Pages<'a> {
    pub fn new(ledger: &'a Ledger, selection: &'a Selection) -> Self {
        Self {
            ledger,
            selection,
            after: None,
            done: false,
        }
    }

    /// The next non-empty page of chosen calls; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Vec<CallFacts>>, LedgerError> {
        while !self.done {
            let page = self
                .ledger
                .select_calls(&self.selection.filter, self.after.as_ref(), PAGE)
                .await?;
            match page.last() {
                Some(last) => self.after = Some(last.uuid.clone()),
                None => self.done = true,
            }
            let chosen: Vec<CallFacts> = page
                .into_iter()
                .filter(|c| self.selection.matches(c))
                .collect();
            if !chosen.is_empty() {
                return Ok(Some(chosen));
            }
        }
        Ok(None)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RecordState;

    fn call(raw: &str) -> CallFacts {
        CallFacts {
            uuid: CallUuid::parse("u").unwrap(),
            state: RecordState::Archived,
            company_code: "c".into(),
            call_start: None,
            raw_json: raw.into(),
            object: None,
            holds: Vec::new(),
            manifest_seq: None,
            manifest_written: false,
        }
    }

    #[test]
    fn numbers_match_on_any_number_field_whatever_the_formatting() {
        let raw = r#"{"destnumber": "013812345678", "disnumber": 2561234567, "extnumber": "7003" "uuid": "u"}"#;
        let by = |n: &str| Selection {
            numbers: vec![n.into()],
            ..Default::default()
        };
        assert!(
            by("+86 138 1234 5678").matches(&call(raw)),
            "callee, with a country code"
        );
        assert!(by("7003").matches(&call(raw)), "extension");
        assert!(
            by("025 6123 4567").matches(&call(raw)),
            "displayed number as a JSON number"
        );
        assert!(
            !by("003").matches(&call(raw)),
            "a short number matches only whole"
        );
        assert!(!by("013899999999").matches(&call(raw)));
        assert!(!by("7003").matches(&call("{}")));
    }
}
