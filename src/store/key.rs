//! Object keys from a template such as `{companycode}/{yyyy}/{mm}/{dd}/{uuid}{ext}`. Whatever
//! a record contains, a key stays under its prefix: values cannot add segments, and no
//! segment is empty, `.`, `..` or holds control characters.

use chrono::{DateTime, Datelike, FixedOffset, Timelike, Utc};

use crate::domain::CallRecord;

pub const DEFAULT_TEMPLATE: &str = "{companycode}/{yyyy}/{mm}/{dd}/{uuid}{ext}";

/// Object keys stay well under S3's 1024 bytes, with room for a store prefix.
const MAX_KEY_BYTES: usize = 900;
/// A placeholder's value is cut to this many (ASCII, once cleaned) characters.
const MAX_VALUE_CHARS: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key template {template:?}: {problem}")]
    Template { template: String, problem: String },
    #[error("the key rendered for this record is unsafe: {0}")]
    Unsafe(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// The account the calls belong to (`crate::accounts`): what keeps two accounts'
    /// keys apart when they share a store and prefix.
    Account,
    CompanyCode,
    Uuid,
    Ext,
    Year,
    Month,
    Day,
    Hour,
    FileStem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(Field),
}

/// A parsed, validated key template.
#[derive(Debug, Clone)]
pub struct KeyTemplate {
    parts: Vec<Part>,
    /// Dates in keys are the call's date in this zone (the provider's).
    tz: FixedOffset,
    /// What `{account}` stands for (`default` unless [`KeyTemplate::for_account`]).
    account: String,
}

impl KeyTemplate {
    pub fn parse(template: &str, tz: FixedOffset) -> Result<Self, KeyError> {
        let fail = |problem: &str| KeyError::Template {
            template: template.to_owned(),
            problem: problem.to_owned(),
        };
        let mut parts = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            if let Some(inner) = rest.strip_prefix('{') {
                let end = inner.find('}').ok_or_else(|| fail("unclosed `{`"))?;
                let field = match &inner[..end] {
                    "account" => Field::Account,
                    "companycode" => Field::CompanyCode,
                    "uuid" => Field::Uuid,
                    "ext" => Field::Ext,
                    "yyyy" => Field::Year,
                    "mm" => Field::Month,
                    "dd" => Field::Day,
                    "hh" => Field::Hour,
                    "filename" => Field::FileStem,
                    other => return Err(fail(&format!("unknown placeholder {{{other}}}"))),
                };
                parts.push(Part::Field(field));
                rest = &inner[end + 1..];
            } else {
                let end = rest.find('{').unwrap_or(rest.len());
                parts.push(Part::Literal(rest[..end].to_owned()));
                rest = &rest[end..];
            }
        }
        if !parts.contains(&Part::Field(Field::Uuid)) {
            return Err(fail(
                "must contain {uuid}, or records would overwrite each other",
            ));
        }
        // Checked with every value at its shortest (an extension may be empty; any other
        // value is at least one safe character) and at its longest, so that a template that
        // parses renders a safe key for every record.
        let shortest: String = parts
            .iter()
            .map(|p| match p {
                Part::Literal(s) => s.as_str(),
                Part::Field(Field::Ext) => "",
                Part::Field(_) => "x",
            })
            .collect();
        check_segments(&shortest).map_err(|p| fail(&p))?;
        let longest: usize = parts
            .iter()
            .map(|p| match p {
                Part::Literal(s) => s.len(),
                Part::Field(Field::Ext) => 9,
                Part::Field(Field::Year) => 7,
                Part::Field(Field::Month | Field::Day | Field::Hour) => 2,
                Part::Field(_) => MAX_VALUE_CHARS,
            })
            .sum();
        if longest > MAX_KEY_BYTES {
            return Err(fail(&format!("keys could grow past {MAX_KEY_BYTES} bytes")));
        }
        Ok(Self {
            parts,
            tz,
            account: crate::accounts::DEFAULT.to_owned(),
        })
    }

    /// The same template rendering `{account}` as `account`.
    pub fn for_account(self, account: &crate::accounts::AccountName) -> Self {
        Self {
            account: account.as_str().to_owned(),
            ..self
        }
    }

    /// The key for `record`, relative to the store's prefix.
    pub fn render(&self, record: &CallRecord) -> Result<String, KeyError> {
        // An undated call is filed under the day it was received (docs/archiving.md, "Object keys").
        let start: Option<DateTime<FixedOffset>> = record
            .filing_time()
            .map(|t: DateTime<Utc>| t.with_timezone(&self.tz));
        let two = |n: Option<u32>| n.map_or_else(|| "00".to_owned(), |n| format!("{n:02}"));
        let file_name = record.record_file.rsplit(['/', '\\']).next().unwrap_or("");
        let (stem, ext) = match file_name.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => (stem, ext),
            _ => (file_name, ""),
        };
        let mut key = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => key.push_str(s),
                Part::Field(field) => key.push_str(&match field {
                    Field::Account => clean(&self.account),
                    Field::CompanyCode => clean(&record.company_code),
                    Field::Uuid => clean(record.uuid.as_str()),
                    Field::FileStem => clean(stem),
                    Field::Ext => clean_ext(ext),
                    Field::Year => {
                        start.map_or_else(|| "0000".to_owned(), |t| format!("{:04}", t.year()))
                    }
                    Field::Month => two(start.map(|t| t.month())),
                    Field::Day => two(start.map(|t| t.day())),
                    Field::Hour => two(start.map(|t| t.hour())),
                }),
            }
        }
        check_segments(&key).map_err(KeyError::Unsafe)?;
        Ok(key)
    }
}

/// A placeholder's value as one safe segment piece: `[A-Za-z0-9._-]` kept, all else `_`;
/// never empty, never only dots.
fn clean(value: &str) -> String {
    let cleaned: String = value
        .trim()
        .chars()
        .take(MAX_VALUE_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        "_".repeat(cleaned.len().max(1))
    } else {
        cleaned
    }
}

/// `.wav` from `wav`: lower-case alphanumerics only, at most 8; empty when there is none.
fn clean_ext(ext: &str) -> String {
    let ext: String = ext
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect::<String>()
        .to_ascii_lowercase();
    if ext.is_empty() {
        ext
    } else {
        format!(".{ext}")
    }
}

fn check_segments(key: &str) -> Result<(), String> {
    if key.starts_with('/') {
        return Err("must not start with `/`".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("longer than {MAX_KEY_BYTES} bytes"));
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return Err("has an empty segment".into());
        }
        if segment == "." || segment == ".." {
            return Err(format!("has a `{segment}` segment"));
        }
        if segment.chars().any(|c| c.is_control() || c == '\\') {
            return Err("has a control character or backslash".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CallUuid;
    use proptest::prelude::*;

    fn record(uuid: &str, company: &str, file: &str) -> CallRecord {
        CallRecord {
            call_start: crate::timefmt::parse_provider_time(
                "2026-03-01 01:30:00",
                crate::timefmt::default_provider_tz(),
            )
            .unwrap(),
            billsec: Some(10),
            ..CallRecord::new(CallUuid::parse(uuid).unwrap(), company, file, "{}")
        }
    }

    fn default_template() -> KeyTemplate {
        KeyTemplate::parse(DEFAULT_TEMPLATE, crate::timefmt::default_provider_tz()).unwrap()
    }

    #[test]
    fn the_default_template_uses_the_call_date_in_the_provider_zone() {
        let key = default_template()
            .render(&record("abc-1", "20000013", "x/2026/rec.WAV"))
            .unwrap();
        assert_eq!(key, "20000013/2026/03/01/abc-1.wav");
    }

    #[test]
    fn the_account_placeholder_is_the_templates_account() {
        let tz = crate::timefmt::default_provider_tz();
        let t = KeyTemplate::parse("{account}/{companycode}/{uuid}{ext}", tz).unwrap();
        let rec = record("abc-1", "20000013", "a.mp3");
        assert_eq!(t.render(&rec).unwrap(), "default/20000013/abc-1.mp3");
        let acme = crate::accounts::AccountName::parse("acme").unwrap();
        let t = t.for_account(&acme);
        assert_eq!(t.render(&rec).unwrap(), "acme/20000013/abc-1.mp3");
    }

    #[test]
    fn hostile_values_cannot_escape_or_add_segments() {
        let t = default_template();
        assert_eq!(
            t.render(&record("../../etc/passwd", "..", "a.wav"))
                .unwrap(),
            "__/2026/03/01/.._.._etc_passwd.wav"
        );
        assert_eq!(
            t.render(&record("u", "a/b\u{0}c", "evil.w/../av")).unwrap(),
            "a_b_c/2026/03/01/u"
        );
        assert_eq!(
            t.render(&record("..", " ", "a.wav")).unwrap(),
            "_/2026/03/01/__.wav"
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        let tz = crate::timefmt::default_provider_tz();
        for bad in [
            "{companycode}/{dd}",
            "/abs/{uuid}",
            "a//{uuid}",
            "../{uuid}",
            "{uuid}/{nope}",
            "{uuid",
            "a/./{uuid}",
            // An empty extension would leave an empty or `..` segment.
            "x/{ext}/{uuid}",
            "x/{ext}../{uuid}",
            // Seven 128-character values cannot fit in 900 bytes.
            "{uuid}{filename}{filename}{filename}{filename}{filename}{filename}{companycode}",
        ] {
            assert!(KeyTemplate::parse(bad, tz).is_err(), "{bad}");
        }
        assert!(KeyTemplate::parse("calls/{yyyy}-{mm}/{filename}-{uuid}{ext}", tz).is_ok());
    }

    /// Values a hostile or broken callback might carry: any text, or one built from the
    /// pieces that break paths.
    fn hostile() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            proptest::collection::vec(
                prop_oneof![
                    Just(".."),
                    Just("."),
                    Just("/"),
                    Just("\\"),
                    Just("\0"),
                    Just("\n"),
                    Just(" "),
                    Just("%2e%2e"),
                    Just("\u{202e}"),
                    Just("Ä"),
                    Just("a"),
                    Just("wav"),
                ],
                0..12,
            )
            .prop_map(|parts| parts.concat()),
        ]
    }

    /// Templates that parse, with literal text, several segments and every placeholder.
    const TEMPLATES: [&str; 4] = [
        DEFAULT_TEMPLATE,
        "calls/{companycode}/{yyyy}-{mm}-{dd}T{hh}/{filename}_{uuid}{ext}",
        "{uuid}",
        "x/{filename}/v{ext}/{uuid}.bin",
    ];

    proptest! {
        #[test]
        fn no_record_renders_a_key_outside_its_prefix(
            template in 0..TEMPLATES.len(),
            uuid in hostile(),
            company in hostile(),
            file in hostile(),
            start in proptest::option::of(-62_000_000_000i64..250_000_000_000),
        ) {
            let template_text = TEMPLATES[template];
            let uuid = CallUuid::parse(&uuid);
            prop_assume!(uuid.is_some());
            let keys = KeyTemplate::parse(template_text, crate::timefmt::default_provider_tz()).unwrap();
            let record = CallRecord {
                company_code: company,
                record_file: file,
                call_start: start.and_then(|s| DateTime::from_timestamp(s, 0)),
                ..CallRecord::new(uuid.unwrap(), "", "", "")
            };

            // A template that parses renders every record.
            let key = keys.render(&record).unwrap();

            // As many segments as the template has: values never add one.
            let segments: Vec<&str> = key.split('/').collect();
            prop_assert_eq!(segments.len(), template_text.matches('/').count() + 1);
            for s in &segments {
                prop_assert!(!s.is_empty() && *s != "." && *s != "..", "{:?}", key);
                prop_assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)), "{:?}", key);
            }
            // And the store puts it under its prefix.
            let store = crate::store::Store::open(&crate::store::StoreConfig { part_size: 5 << 20, ..crate::store::StoreConfig::new("memory:///archive/calls") }).unwrap();
            let path = store.path(&key).unwrap();
            prop_assert!(path.as_ref().starts_with("archive/calls/"), "{:?}", path);
            prop_assert_eq!(path.parts().count(), 2 + segments.len());
        }
    }
}
