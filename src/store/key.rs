//! Object keys from a template such as `{companycode}/{yyyy}/{mm}/{dd}/{uuid}{ext}`. Whatever
//! a record contains, a key stays under its prefix: values cannot add segments, and no
//! segment is empty, `.`, `..` or holds control characters.

use chrono::{DateTime, Datelike, FixedOffset, Timelike, Utc};

use crate::domain::CallRecord;

pub const DEFAULT_TEMPLATE: &str = "{companycode}/{yyyy}/{mm}/{dd}/{uuid}{ext}";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key template {template:?}: {problem}")]
    Template { template: String, problem: String },
    #[error("the key rendered for this record is unsafe: {0}")]
    Unsafe(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
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
        let literal: String = parts
            .iter()
            .map(|p| match p {
                Part::Literal(s) => s.as_str(),
                Part::Field(_) => "x",
            })
            .collect();
        check_segments(&literal).map_err(|p| fail(&p))?;
        Ok(Self { parts, tz })
    }

    /// The key for `record`, relative to the store's prefix.
    pub fn render(&self, record: &CallRecord) -> Result<String, KeyError> {
        let start: Option<DateTime<FixedOffset>> = record
            .call_start
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
        .take(128)
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
    if key.len() > 900 {
        return Err("longer than 900 bytes".into());
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
            uuid: CallUuid::parse(uuid).unwrap(),
            company_code: company.into(),
            record_file: file.into(),
            call_start: crate::timefmt::parse_provider_time(
                "2026-03-01 01:30:00",
                crate::timefmt::default_provider_tz(),
            )
            .unwrap(),
            billsec: Some(10),
            raw_json: "{}".into(),
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
        ] {
            assert!(KeyTemplate::parse(bad, tz).is_err(), "{bad}");
        }
        assert!(KeyTemplate::parse("calls/{yyyy}-{mm}/{filename}-{uuid}{ext}", tz).is_ok());
    }

    proptest! {
        #[test]
        fn no_record_renders_an_unsafe_key(uuid in "\\PC{1,40}", company in "\\PC{0,20}", file in "\\PC{0,40}") {
            prop_assume!(CallUuid::parse(&uuid).is_some());
            let key = default_template().render(&record(&uuid, &company, &file)).unwrap();
            let segments: Vec<&str> = key.split('/').collect();
            prop_assert_eq!(segments.len(), 5);
            for s in segments {
                prop_assert!(!s.is_empty() && s != "." && s != "..");
                prop_assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)));
            }
        }
    }
}
