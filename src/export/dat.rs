//! `calls.dat`: a Concordance load file, so that e-discovery review tools (Relativity,
//! Concordance, Nuix) load the calls with their fields and native files. UTF-8 with a BOM,
//! each value between `þ` (U+00FE), fields separated by U+0014 (shown as `¶` by those
//! tools), rows ending in CRLF.

use chrono::FixedOffset;

use super::format::CallLine;
use super::gather::AccountPart;
use crate::ledger::CallParties;

const QUOTE: char = '\u{fe}';
const SEPARATOR: char = '\u{14}';

pub const FIELDS: [&str; 19] = [
    "BEGDOC",
    "ACCOUNT",
    "UUID",
    "CALL_START",
    "COMPANY",
    "CALLER",
    "CALLEE",
    "EXTENSION",
    "DURATION_S",
    "OBJECT_KEY",
    "OBJECT_VERSION",
    "SIZE",
    "SHA256",
    "RETENTION_MODE",
    "RETAIN_UNTIL",
    "LEGAL_HOLD",
    "MANIFEST",
    "CHECKPOINT",
    "NATIVE_PATH",
];

/// A value as a field: the delimiters and line breaks it may hold become spaces.
fn field(value: &str) -> String {
    let clean: String = value
        .chars()
        .map(|c| match c {
            QUOTE | SEPARATOR | '\r' | '\n' => ' ',
            c => c,
        })
        .collect();
    format!("{QUOTE}{clean}{QUOTE}")
}

fn row(values: &[String]) -> String {
    let fields: Vec<String> = values.iter().map(|v| field(v)).collect();
    format!("{}\r\n", fields.join(&SEPARATOR.to_string()))
}

/// The load file of `lines` (the calls of `parts`, in the same order).
pub fn load_file(parts: &[AccountPart], lines: &[CallLine], tz: FixedOffset) -> String {
    let mut out = String::from("\u{feff}");
    out.push_str(&row(&FIELDS.map(str::to_owned)));
    let calls = parts.iter().flat_map(|p| p.calls.iter());
    for (call, line) in calls.zip(lines) {
        let c = &call.call;
        let parties = CallParties::of(&c.raw_json);
        let object = line.object.as_ref();
        let retention = object.and_then(|o| o.retention.as_ref());
        let first = line.leaves.first();
        let text = |v: Option<String>| v.unwrap_or_default();
        out.push_str(&row(&[
            format!("{}-{}", line.account, line.uuid),
            line.account.clone(),
            line.uuid.clone(),
            text(c.call_start.map(|t| t.with_timezone(&tz).to_rfc3339())),
            c.company_code.clone(),
            text(parties.caller.or(parties.display_number)),
            text(parties.callee),
            text(parties.extension),
            text(c.billsec.map(|s| s.to_string())),
            text(object.map(|o| o.key.clone())),
            text(object.and_then(|o| o.version.clone())),
            text(object.map(|o| o.size.to_string())),
            text(object.map(|o| o.sha256.clone())),
            text(retention.map(|r| r.mode.clone())),
            text(retention.map(|r| r.retain_until.clone())),
            text(object.and_then(|o| o.legal_hold).map(|h| h.to_string())),
            text(first.map(|l| l.manifest.key.clone())),
            text(first.map(|l| l.checkpoint.clone())),
            text(line.recording.clone()),
        ]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_and_cannot_break_a_row() {
        let r = row(&["a\u{fe}b".into(), "c\r\nd".into()]);
        assert_eq!(r, "\u{fe}a b\u{fe}\u{14}\u{fe}c  d\u{fe}\r\n");
    }
}
