//! Ledger rows made from what the bucket holds: a call from its sidecar (the provider's
//! record as archived, with the archive facts) or, failing that, from its manifest entry;
//! one archival attempt per call; the runs the sidecars name; manifests from their headers.
//! Rows go in through the backend-neutral [`crate::ledger::Transfer`] interface, as
//! `ledger copy` writes them, so both backends take them alike.

use chrono::{DateTime, Offset, Utc};
use serde_json::{Map, Value, json};

use crate::audit::{ManifestEntry, ManifestErasure, ManifestHeader};
use crate::callback::{parse_bill, parse_record};
use crate::domain::{CallRecord, CallUuid, Origin, RecordState};
use crate::ledger::{TableRow, Tombstone};
use crate::store::StoredSidecar;
use crate::timefmt::{from_ledger, to_ledger};

/// What a call row is made of.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub uuid: CallUuid,
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub archived_at: DateTime<Utc>,
    /// The run that archived it (from the sidecar).
    pub run_id: Option<String>,
    pub content_type: Option<String>,
    /// The provider's record, when the sidecar held it.
    pub record: Option<CallRecord>,
    pub manifest_seq: Option<i64>,
}

/// Why a sidecar or an entry cannot make a call row.
pub type Unusable = String;

fn time(field: &str, raw: &str) -> Result<DateTime<Utc>, Unusable> {
    from_ledger(raw).ok_or_else(|| format!("{field} {raw:?} is not a UTC time"))
}

/// The call in `sidecar`, with the provider's record read back as `import` reads it (the
/// call's start is the sidecar's, already in UTC).
pub fn from_sidecar(sidecar: &StoredSidecar) -> Result<Recovered, Unusable> {
    let uuid = CallUuid::parse(&sidecar.uuid)
        .ok_or_else(|| format!("uuid {:?} is not a call's id", sidecar.uuid))?;
    let archived_at = time("archived_at", &sidecar.archived_at)?;
    let call_start = sidecar
        .call_start
        .as_deref()
        .map(|s| time("call_start", s))
        .transpose()?;
    let raw = match (&sidecar.call, &sidecar.call_raw) {
        (Some(value), _) => Some(value.to_string()),
        (None, Some(raw)) => Some(raw.clone()),
        (None, None) => None,
    };
    let record = raw.map(|raw| {
        let utc = Utc.fix();
        let from_bill = sidecar
            .call
            .as_ref()
            .and_then(Value::as_object)
            .filter(|map| !map.contains_key("uuid"));
        let parsed = match from_bill {
            Some(map) => parse_bill(map, &raw, &sidecar.company_code, utc),
            None => parse_record(&raw, utc),
        };
        let mut record = match parsed {
            Ok(record) => record,
            // The record as archived, even if it no longer parses: what it is, verbatim.
            Err(why) => {
                let mut record = CallRecord::new(uuid.clone(), &sidecar.company_code, "", &raw);
                record.notes = Some(format!("rebuilt from the store: {why}"));
                record
            }
        };
        record.uuid = uuid.clone();
        record.call_start = call_start;
        if record.company_code.is_empty() {
            record.company_code.clone_from(&sidecar.company_code);
        }
        record
    });
    let record = record.unwrap_or_else(|| {
        let mut record = CallRecord::new(uuid.clone(), &sidecar.company_code, "", "{}");
        record.call_start = call_start;
        record.notes = Some("rebuilt from the store: the sidecar held no call record".into());
        record
    });
    Ok(Recovered {
        uuid,
        key: sidecar.key.clone(),
        size: sidecar.size,
        sha256: sidecar.sha256.clone(),
        archived_at,
        run_id: Some(sidecar.run_id.clone()).filter(|r| !r.is_empty()),
        content_type: sidecar.content_type.clone(),
        record: Some(record),
        manifest_seq: None,
    })
}

/// The call a manifest entry alone tells of (its sidecar is gone).
pub fn from_entry(entry: &ManifestEntry, seq: i64) -> Result<Recovered, Unusable> {
    Ok(Recovered {
        uuid: CallUuid::parse(&entry.uuid)
            .ok_or_else(|| format!("uuid {:?} is not a call's id", entry.uuid))?,
        key: entry.key.clone(),
        size: entry.size,
        sha256: entry.sha256.clone(),
        archived_at: time("archived_at", &entry.archived_at)?,
        run_id: None,
        content_type: None,
        record: None,
        manifest_seq: Some(seq),
    })
}

/// The `calls` row of a recovered call: archived, with one attempt when its run is known.
pub fn call_row(call: &Recovered, now: DateTime<Utc>) -> TableRow {
    let archived = to_ledger(call.archived_at);
    let record = call.record.as_ref();
    let text = |v: Option<&str>| v.map_or(Value::Null, |s| Value::String(s.to_owned()));
    let mut row = Map::new();
    let mut set = |k: &str, v: Value| {
        row.insert(k.to_owned(), v);
    };
    set("uuid", call.uuid.to_string().into());
    set(
        "company_code",
        record.map_or("", |r| r.company_code.as_str()).into(),
    );
    set(
        "record_file",
        record.map_or("", |r| r.record_file.as_str()).into(),
    );
    set(
        "call_start",
        record
            .and_then(|r| r.call_start)
            .map_or(Value::Null, |t| to_ledger(t).into()),
    );
    set(
        "billsec",
        record
            .and_then(|r| r.billsec)
            .map_or(Value::Null, Value::from),
    );
    set(
        "raw_json",
        record.map_or("{}", |r| r.raw_json.as_str()).into(),
    );
    set("state", RecordState::Archived.as_str().into());
    set("attempts", i64::from(call.run_id.is_some()).into());
    set("next_attempt_at", archived.clone().into());
    set("object_key", call.key.clone().into());
    set(
        "size_bytes",
        i64::try_from(call.size).unwrap_or(i64::MAX).into(),
    );
    set("sha256", call.sha256.clone().into());
    set("content_type", text(call.content_type.as_deref()));
    set("archived_at", archived.clone().into());
    set("imported_at", archived.into());
    set("updated_at", to_ledger(now).into());
    set(
        "manifest_seq",
        call.manifest_seq.map_or(Value::Null, Value::from),
    );
    set("bill_id", text(record.and_then(|r| r.bill_id.as_deref())));
    set(
        "origin",
        record
            .map_or(Origin::Callback, |r| r.origin)
            .as_str()
            .into(),
    );
    set("notes", text(record.and_then(|r| r.notes.as_deref())));
    row
}

/// The one attempt a sidecar proves: the archival by its run.
pub fn attempt_row(id: i64, call: &Recovered, run_id: &str) -> TableRow {
    let at = to_ledger(call.archived_at);
    let mut row = Map::new();
    row.insert("id".into(), id.into());
    row.insert("call_uuid".into(), call.uuid.to_string().into());
    row.insert("run_id".into(), run_id.into());
    row.insert("started_at".into(), at.clone().into());
    row.insert("finished_at".into(), at.into());
    row.insert("outcome".into(), "archived".into());
    row.insert(
        "message".into(),
        "recovered from the store by `ledger rebuild`: the sidecar records this archival; earlier attempts are not known".into(),
    );
    row.insert(
        "bytes".into(),
        i64::try_from(call.size).unwrap_or(i64::MAX).into(),
    );
    row
}

/// A run the sidecars name, first seen archiving at `seen_at`: its own start, end, host and
/// outcome are not in the bucket.
pub fn run_row(id: &str, seen_at: DateTime<Utc>, store: &str) -> TableRow {
    let at = to_ledger(seen_at);
    let mut row = Map::new();
    row.insert("id".into(), id.into());
    row.insert("started_at".into(), at.clone().into());
    row.insert("finished_at".into(), at.into());
    row.insert("status".into(), "completed".into());
    row.insert("host".into(), "(unknown: rebuilt from the store)".into());
    row.insert("pid".into(), 0.into());
    row.insert(
        "options".into(),
        json!({ "rebuilt_from_store": store }).to_string().into(),
    );
    row.insert(
        "summary".into(),
        json!({
            "rebuilt_from_store": true,
            "note": "named by the sidecars of the recordings it archived; its times are those of the first recording found, its outcome is not known"
        })
        .to_string()
        .into(),
    );
    row.insert("exit_code".into(), Value::Null);
    row
}

/// The rebuild itself, as a finished run in the ledger's history: without an exit code, so
/// that it never counts as the last archiving run that succeeded (its report is the summary).
pub fn rebuild_run_row(
    id: &str,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    store: &str,
    summary: &Value,
) -> TableRow {
    let mut row = Map::new();
    row.insert("id".into(), id.into());
    row.insert("started_at".into(), to_ledger(started_at).into());
    row.insert("finished_at".into(), to_ledger(finished_at).into());
    row.insert("status".into(), "completed".into());
    row.insert("host".into(), crate::config::hostname().into());
    row.insert("pid".into(), i64::from(std::process::id()).into());
    row.insert(
        "options".into(),
        json!({ "command": "ledger rebuild --from-store", "store": store })
            .to_string()
            .into(),
    );
    row.insert("summary".into(), summary.to_string().into());
    row.insert("exit_code".into(), Value::Null);
    row
}

/// The `manifests` row of a manifest read from the bucket.
pub fn manifest_row(key: &str, header: &ManifestHeader, sha256: &str, size: u64) -> TableRow {
    let mut row = Map::new();
    row.insert("seq".into(), header.seq.into());
    row.insert("object_key".into(), key.into());
    row.insert("state".into(), "written".into());
    row.insert("run_id".into(), header.run_id.clone().into());
    row.insert("owner".into(), Value::Null);
    row.insert("claimed_until".into(), Value::Null);
    let previous = header.previous.as_ref();
    row.insert(
        "previous_key".into(),
        previous.map_or(Value::Null, |p| p.key.clone().into()),
    );
    row.insert(
        "previous_sha256".into(),
        previous.map_or(Value::Null, |p| p.sha256.clone().into()),
    );
    row.insert(
        "entries".into(),
        i64::try_from(header.entries).unwrap_or(i64::MAX).into(),
    );
    row.insert("sha256".into(), sha256.into());
    row.insert(
        "size_bytes".into(),
        i64::try_from(size).unwrap_or(i64::MAX).into(),
    );
    row.insert("created_at".into(), header.created_at.clone().into());
    row.insert("written_at".into(), header.created_at.clone().into());
    row
}

/// The tombstone an erasure line describes, listed by manifest `seq`.
pub fn tombstone(erased: &ManifestErasure, seq: i64) -> Result<Tombstone, Unusable> {
    Ok(Tombstone {
        uuid: CallUuid::parse(&erased.uuid)
            .ok_or_else(|| format!("erased uuid {:?} is not a call's id", erased.uuid))?,
        key: erased.key.clone(),
        sidecar_key: erased.sidecar_key.clone(),
        sha256: erased.sha256.clone(),
        size: erased.size,
        archived_at: erased
            .archived_at
            .as_deref()
            .map(|t| time("archived_at", t))
            .transpose()?,
        erased_at: time("erased_at", &erased.erased_at)?,
        reason: erased.reason.clone(),
        erased_by: erased.erased_by.clone(),
        versions_deleted: 0,
        manifest_seq: Some(seq),
    })
}

/// An erased call as the erasure left it: what was archived (key, size, SHA-256), no
/// personal data. Its company, call start and billed seconds are not in the bucket.
pub fn erased_call_row(t: &Tombstone) -> TableRow {
    let erased = to_ledger(t.erased_at);
    let archived = t.archived_at.map(to_ledger);
    let mut row = Map::new();
    let mut set = |k: &str, v: Value| {
        row.insert(k.to_owned(), v);
    };
    set("uuid", t.uuid.to_string().into());
    set("company_code", "".into());
    set("record_file", "".into());
    set("raw_json", "{}".into());
    set("state", RecordState::Erased.as_str().into());
    set("attempts", 0.into());
    set("next_attempt_at", erased.clone().into());
    set("object_key", t.key.clone().into());
    set(
        "size_bytes",
        i64::try_from(t.size).unwrap_or(i64::MAX).into(),
    );
    set("sha256", t.sha256.clone().into());
    set(
        "archived_at",
        archived.clone().map_or(Value::Null, Value::from),
    );
    set(
        "imported_at",
        archived.unwrap_or_else(|| erased.clone()).into(),
    );
    set("updated_at", erased.into());
    set("origin", Origin::Callback.as_str().into());
    row
}

/// The `tombstones` row of an erasure (versions deleted are not in the manifest: 0).
pub fn tombstone_row(t: &Tombstone) -> TableRow {
    let mut row = Map::new();
    row.insert("call_uuid".into(), t.uuid.to_string().into());
    row.insert("object_key".into(), t.key.clone().into());
    row.insert("sidecar_key".into(), t.sidecar_key.clone().into());
    row.insert("sha256".into(), t.sha256.clone().into());
    row.insert(
        "size_bytes".into(),
        i64::try_from(t.size).unwrap_or(i64::MAX).into(),
    );
    row.insert(
        "archived_at".into(),
        t.archived_at.map_or(Value::Null, |a| to_ledger(a).into()),
    );
    row.insert("erased_at".into(), to_ledger(t.erased_at).into());
    row.insert("reason".into(), t.reason.clone().into());
    row.insert("erased_by".into(), t.erased_by.clone().into());
    row.insert(
        "versions_deleted".into(),
        i64::try_from(t.versions_deleted).unwrap_or(i64::MAX).into(),
    );
    row.insert(
        "manifest_seq".into(),
        t.manifest_seq.map_or(Value::Null, Value::from),
    );
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sidecar(call: Option<Value>, call_raw: Option<&str>) -> StoredSidecar {
        StoredSidecar {
            account: None,
            format: crate::store::SIDECAR_FORMAT.into(),
            uuid: "u-1".into(),
            company_code: "20000013".into(),
            call_start: Some("2026-11-01T02:00:00.000Z".into()),
            key: "20000013/2026/11/01/a.wav".into(),
            size: 48213,
            sha256: "ab".into(),
            content_type: Some("audio/wav".into()),
            archived_at: "2026-11-23T19:30:00.123Z".into(),
            run_id: "run-1".into(),
            call,
            call_raw: call_raw.map(str::to_owned),
        }
    }

    #[test]
    fn a_sidecar_gives_back_the_record_as_import_read_it() {
        let call = json!({
            "uuid": "u-1", "companycode": 20000013, "recordfilename": "a.wav",
            "starttime": "2026-11-01 10:00:00", "billsec": "25", "id": 77
        });
        let found = from_sidecar(&sidecar(Some(call), None)).unwrap();
        let record = found.record.clone().unwrap();
        assert_eq!(record.record_file, "a.wav");
        assert_eq!(record.billsec, Some(25));
        assert_eq!(record.bill_id.as_deref(), Some("77"));
        assert_eq!(record.origin, Origin::Callback);
        // The start is the sidecar's (UTC), not the record's zone-less time read again.
        assert_eq!(
            record.call_start.map(to_ledger).as_deref(),
            Some("2026-11-01T02:00:00.000Z")
        );
        let row = call_row(&found, Utc::now());
        assert_eq!(row["state"], "archived");
        assert_eq!(row["attempts"], 1);
        assert_eq!(row["manifest_seq"], Value::Null);
    }

    #[test]
    fn a_bill_and_a_record_kept_verbatim_are_read_back_too() {
        let bill = json!({ "id": 9, "recordfilename": "b.wav", "billsec": 3 });
        let record = from_sidecar(&sidecar(Some(bill), None))
            .unwrap()
            .record
            .unwrap();
        assert_eq!(record.origin, Origin::Bill);
        assert_eq!(record.company_code, "20000013", "the sidecar's company");
        let sloppy = r#"{"uuid": "u-1" "companycode": "20000013", "recordfilename": "c.wav"}"#;
        let record = from_sidecar(&sidecar(None, Some(sloppy)))
            .unwrap()
            .record
            .unwrap();
        assert_eq!(record.raw_json, sloppy, "verbatim");
        assert_eq!(record.record_file, "c.wav");
        let bad = StoredSidecar {
            archived_at: "yesterday".into(),
            ..sidecar(None, None)
        };
        assert!(from_sidecar(&bad).unwrap_err().contains("archived_at"));
    }
}
