//! Reads call records in the provider's callback format, tolerating the type variations a
//! real provider sends (numbers as strings, empty times, missing commas) and naming the line
//! of every record it must reject.

mod lenient;

use chrono::FixedOffset;
use serde_json::{Map, Value};

use crate::domain::{CallRecord, CallUuid, Origin};
use crate::timefmt::parse_provider_time;

pub use lenient::{repair, split_objects};

/// Why one callback could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("malformed JSON: {0}")]
    Malformed(String),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}`: {problem}")]
    BadField {
        field: &'static str,
        problem: String,
    },
    #[error("an extension call-state callback, not a call record")]
    CallStateCallback,
}

/// One parsed item of an input document, with the line it started on.
#[derive(Debug)]
pub struct Parsed {
    pub line: usize,
    pub result: Result<CallRecord, RecordError>,
}

/// Parses every call record in `text` (JSON lines, a JSON array, or sloppy pretty-printed
/// objects). Never stops at a bad record.
pub fn parse_document(text: &str, tz: FixedOffset) -> Vec<Parsed> {
    split_objects(text)
        .into_iter()
        .map(|piece| {
            let result = match piece.broken {
                Some(why) => Err(RecordError::Malformed(why.to_owned())),
                None => parse_record(piece.text, tz),
            };
            Parsed {
                line: piece.line,
                result,
            }
        })
        .collect()
}

/// Parses one callback body. The record keeps `text` verbatim as its raw JSON.
pub fn parse_record(text: &str, tz: FixedOffset) -> Result<CallRecord, RecordError> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(strict) => serde_json::from_str(&repair(text))
            .map_err(|_| RecordError::Malformed(strict.to_string()))?,
    };
    let Value::Object(map) = value else {
        return Err(RecordError::NotAnObject);
    };
    record_from_map(&map, text, tz)
}

fn record_from_map(
    map: &Map<String, Value>,
    raw: &str,
    tz: FixedOffset,
) -> Result<CallRecord, RecordError> {
    if !map.contains_key("recordfilename")
        && (map.contains_key("isbleg") || map.contains_key("buuid"))
    {
        return Err(RecordError::CallStateCallback);
    }
    lenient_record(map, raw, tz, Origin::Callback, None)
}

/// Reads one bill of `App.Sip_Cdr.GetBill` (see `provider-api/bill-list-and-callback-notes.md`):
/// the callback's fields under the same names (`direction` for `type`), most often without
/// `uuid` and without `companycode`, which is then `company` (the logged-in company's).
/// `raw` is the bill as the provider sent it.
pub fn parse_bill(
    map: &Map<String, Value>,
    raw: &str,
    company: &str,
    tz: FixedOffset,
) -> Result<CallRecord, RecordError> {
    lenient_record(map, raw, tz, Origin::Bill, Some(company))
}

/// The record in `map`, keeping every field it can read and noting the others. Only what
/// names no call is refused: neither a `uuid` nor an `id` with its company. A `uuid` (or
/// record file name) that cannot be stored (a NUL, control characters) is refused too,
/// being what the call is known and fetched by.
fn lenient_record(
    map: &Map<String, Value>,
    raw: &str,
    tz: FixedOffset,
    origin: Origin,
    default_company: Option<&str>,
) -> Result<CallRecord, RecordError> {
    let mut notes = Notes::default();
    let Identity {
        uuid,
        company_code,
        bill_id,
    } = identify(map, default_company, &mut notes)?;
    let record_file = record_file(map, &mut notes)?;
    let call_start = call_start(map, tz, &mut notes);
    let billsec = int_field(map, "billsec").unwrap_or_else(|why| {
        notes.add(why);
        None
    });
    Ok(CallRecord {
        uuid,
        company_code: company_code.unwrap_or_default(),
        record_file,
        call_start,
        billsec,
        raw_json: raw.to_owned(),
        bill_id,
        notes: notes.joined(),
        origin,
        received_at: None,
    })
}

/// Which call a record is: its uuid, its company and the provider's id of its bill.
struct Identity {
    uuid: CallUuid,
    company_code: Option<String>,
    bill_id: Option<String>,
}

/// The call `map` names: by its `uuid`, else by its company (`companycode`, else
/// `default_company`) and bill `id`. Unreadable fields are noted, a missing company too.
fn identify(
    map: &Map<String, Value>,
    default_company: Option<&str>,
    notes: &mut Notes,
) -> Result<Identity, RecordError> {
    let uuid_text = match text_field(map, "uuid") {
        Ok(found) => found.filter(|u| !u.is_empty()),
        Err(RecordError::BadField { problem, .. }) if problem.contains("NUL") => {
            return Err(RecordError::BadField {
                field: "uuid",
                problem,
            });
        }
        Err(why) => {
            notes.add(why);
            None
        }
    };
    let company_code = notes
        .unless_unreadable(text_field(map, "companycode"))
        .filter(|c| !c.is_empty())
        .or_else(|| default_company.map(str::to_owned).filter(|c| !c.is_empty()));
    let bill_id = notes
        .unless_unreadable(text_field(map, "id"))
        .filter(|id| !id.is_empty());
    let uuid = match (&uuid_text, &company_code, &bill_id) {
        (Some(text), _, _) => CallUuid::parse(text).ok_or(RecordError::BadField {
            field: "uuid",
            problem: "too long or has control characters".into(),
        })?,
        (None, Some(company), Some(id)) => {
            CallUuid::for_bill(company, id).ok_or(RecordError::BadField {
                field: "id",
                problem: "too long or has control characters".into(),
            })?
        }
        (None, None, Some(_)) => return Err(RecordError::Missing("uuid (or companycode with id)")),
        (None, _, None) => return Err(RecordError::Missing("uuid")),
    };
    if company_code.is_none() && !notes.names("companycode") {
        notes.add(RecordError::Missing("companycode"));
    }
    Ok(Identity {
        uuid,
        company_code,
        bill_id,
    })
}

/// The recording's file name (empty when none or unreadable); refused when it has control
/// characters, since the recording is fetched by it.
fn record_file(map: &Map<String, Value>, notes: &mut Notes) -> Result<String, RecordError> {
    let record_file = match text_field(map, "recordfilename") {
        Ok(found) => found.unwrap_or_default(),
        Err(why) => {
            // Kept as a call without a recording, noted: a later bill or callback with a
            // readable name makes it pending.
            notes.add(why);
            String::new()
        }
    };
    if record_file.chars().any(char::is_control) {
        return Err(RecordError::BadField {
            field: "recordfilename",
            problem: "has control characters".into(),
        });
    }
    Ok(record_file)
}

/// When the call started, in the provider's zone `tz`; `None` (noted) when unreadable.
fn call_start(
    map: &Map<String, Value>,
    tz: FixedOffset,
    notes: &mut Notes,
) -> Option<chrono::DateTime<chrono::Utc>> {
    match text_field(map, "starttime") {
        Ok(Some(s)) => match parse_provider_time(&s, tz) {
            Ok(t) => t,
            Err(problem) => {
                notes.add(RecordError::BadField {
                    field: "starttime",
                    problem,
                });
                None
            }
        },
        Ok(None) => None,
        Err(why) => {
            notes.add(why);
            None
        }
    }
}

/// The fields of one record that could not be read, and why.
#[derive(Debug, Default)]
struct Notes(Vec<String>);

impl Notes {
    fn add(&mut self, why: RecordError) {
        self.0.push(why.to_string());
    }

    /// The field as read; `None`, noting why, when it cannot be read.
    fn unless_unreadable(&mut self, read: Result<Option<String>, RecordError>) -> Option<String> {
        read.unwrap_or_else(|why| {
            self.add(why);
            None
        })
    }

    fn names(&self, field: &str) -> bool {
        self.0.iter().any(|n| n.contains(&format!("`{field}`")))
    }

    fn joined(self) -> Option<String> {
        (!self.0.is_empty()).then(|| self.0.join("; "))
    }
}

/// A field the provider sends as a string or a number; `null` and absence are `None`.
fn text_field(
    map: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, RecordError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        // No ledger can hold a NUL in text (PostgreSQL refuses it), and no real field has one.
        Some(Value::String(s)) if s.contains('\0') => Err(RecordError::BadField {
            field,
            problem: "contains a NUL character".into(),
        }),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(RecordError::BadField {
            field,
            problem: format!("expected a string or number, got {}", kind(other)),
        }),
    }
}

/// An integer the provider sends as a number, a numeric string, or `""` for none.
fn int_field(map: &Map<String, Value>, field: &'static str) -> Result<Option<i64>, RecordError> {
    let bad = |problem: String| RecordError::BadField { field, problem };
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                    .map(|f| f as i64)
            })
            .map(Some)
            .ok_or_else(|| bad(format!("{n} is not a whole number"))),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| bad(format!("{s:?} is not a whole number"))),
        Some(other) => Err(bad(format!("expected a number, got {}", kind(other)))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timefmt::default_provider_tz;

    /// The call-record example of the provider's document, missing commas and all.
    const DOC_EXAMPLE: &str = r#"{
"callmethod": 3,
"starttime": "2018-03-14 12:18:21",
"answertime": "",
"endtime": "2018-03-14 12:18:35",
"duration": 14,
"billsec": 0,
"crmid": "2001",
"hangupdirection": 10015,
"chengshudu": "0",
"hangupcause": 10001,
"memberid": "18533700187590656",
"disnumber": "02566823420",
"destnumber": "015029913692",
"downloadip": "120.76.152.137",
"recordfilename": "",
"companycode": 20000013,
"type": "callout",
"id": 982,
"extnumber": "7003"
"uuid": "cda5c6c4-0a17-11e8-b177-e7cbf2bd1f36"
"userkey":1
"customuuid": "customuuid"
}"#;

    #[test]
    fn the_documented_example_parses_and_stays_verbatim() {
        let rec = parse_record(DOC_EXAMPLE, default_provider_tz()).unwrap();
        assert_eq!(rec.uuid.as_str(), "cda5c6c4-0a17-11e8-b177-e7cbf2bd1f36");
        assert_eq!(rec.company_code, "20000013");
        assert!(!rec.has_recording());
        assert_eq!(rec.billsec, Some(0));
        assert_eq!(
            crate::timefmt::to_ledger(rec.call_start.unwrap()),
            "2018-03-14T04:18:21.000Z"
        );
        assert_eq!(rec.raw_json, DOC_EXAMPLE);
    }

    #[test]
    fn numbers_as_strings_and_empty_times_are_accepted() {
        let rec = parse_record(
            r#"{"uuid": 42, "companycode": "7", "recordfilename": "a.wav", "starttime": "", "billsec": "12"}"#,
            default_provider_tz(),
        )
        .unwrap();
        assert_eq!((rec.uuid.as_str(), rec.company_code.as_str()), ("42", "7"));
        assert_eq!((rec.call_start, rec.billsec), (None, Some(12)));
    }

    #[test]
    fn only_what_names_no_call_is_rejected() {
        let tz = default_provider_tz();
        let err = |s| parse_record(s, tz).unwrap_err().to_string();
        assert_eq!(err(r#"{"companycode": 1}"#), "missing field `uuid`");
        assert!(err(r#"{"uuid": "u\u0000", "companycode": "1"}"#).contains("NUL"));
        assert!(err(r#"{"id": 7}"#).contains("companycode"));
        assert_eq!(err("[1]"), "not a JSON object");
        assert_eq!(
            parse_record(
                r#"{"uuid":"u","buuid":"b","companycode":"1","isbleg":"false"}"#,
                tz
            ),
            Err(RecordError::CallStateCallback)
        );
    }

    #[test]
    fn unreadable_fields_are_left_empty_and_noted() {
        let tz = default_provider_tz();
        let rec = parse_record(
            r#"{"uuid": "u", "companycode": {"x": 1}, "recordfilename": "a.wav",
                "billsec": "ten", "starttime": "soon", "id": [1]}"#,
            tz,
        )
        .unwrap();
        assert_eq!(rec.uuid.as_str(), "u");
        assert_eq!(rec.record_file, "a.wav");
        assert_eq!(
            (
                rec.company_code.as_str(),
                rec.billsec,
                rec.call_start,
                rec.bill_id
            ),
            ("", None, None, None)
        );
        let notes = rec.notes.unwrap();
        for field in ["companycode", "billsec", "starttime", "id"] {
            assert!(notes.contains(&format!("`{field}`")), "{notes}");
        }
        let clean = parse_record(r#"{"uuid": "u", "companycode": 1, "billsec": 3}"#, tz).unwrap();
        assert_eq!(clean.notes, None);
    }

    #[test]
    fn a_call_named_by_its_id_and_company_gets_a_bill_key() {
        let tz = default_provider_tz();
        let rec = parse_record(
            r#"{"id": "982", "companycode": 20000013, "recordfilename": "x.wav"}"#,
            tz,
        )
        .unwrap();
        assert_eq!(rec.uuid.as_str(), "bill-20000013-982");
        assert!(rec.uuid.is_bill_key());
        assert_eq!(rec.bill_id.as_deref(), Some("982"));
    }

    #[test]
    fn a_bill_takes_the_logged_in_company_and_keeps_its_id() {
        let tz = default_provider_tz();
        let raw = r#"{"id": "17", "starttime": "", "billsec": "25", "recordfilename": "r.wav", "direction": "callin"}"#;
        let map: Map<String, Value> = serde_json::from_str(raw).unwrap();
        let rec = parse_bill(&map, raw, "20000013", tz).unwrap();
        assert_eq!(rec.uuid.as_str(), "bill-20000013-17");
        assert_eq!(
            (rec.company_code.as_str(), rec.billsec),
            ("20000013", Some(25))
        );
        assert_eq!((rec.origin, rec.call_start), (Origin::Bill, None));
        assert_eq!(rec.raw_json, raw);
    }

    #[test]
    fn a_document_reports_bad_lines_and_keeps_good_ones() {
        let text = "{\"uuid\":\"a\",\"companycode\":1}\n{\"uuid\": \"x\", \"companycode\": 1\n\n{\"uuid\":\"b\",\"companycode\":1}\n";
        let parsed = parse_document(text, default_provider_tz());
        let summary: Vec<_> = parsed.iter().map(|p| (p.line, p.result.is_ok())).collect();
        assert_eq!(summary, [(1, true), (2, false), (4, true)]);
    }
}
