//! The bundle's files, one function each, from the accounts' parts (`gather`): the
//! recordings streamed from the store, the proofs, the audit trail, completeness, the
//! Object Lock configuration, the calls' lines and the load file.

use std::collections::{BTreeSet, HashSet};

use serde_json::{Value, json};

use super::format::{
    self, AUDIT_ACCESS, AUDIT_ERASURES, AUDIT_HOLDS, AUDIT_VERIFICATIONS, CALLS, CONSISTENCY,
    CallLine, HoldFact, OBJECT_LOCK, TSA_CERTIFICATES, recording_path,
};
use super::gather::AccountPart;
use super::write::{AccountSource, Bundle, ExportError, ExportRequest};
use crate::domain::CallUuid;
use crate::ledger::{AccessQuery, MAX_PAGE, risk_line};
use crate::timefmt::to_ledger;

fn source_of<'a>(accounts: &'a [AccountSource], part: &AccountPart) -> Option<&'a AccountSource> {
    accounts.iter().find(|s| s.name.as_str() == part.account)
}

/// With `--with-recordings`, each archived call's recording, streamed from its store and
/// re-hashed on the way: one whose SHA-256 or size is not the archive's fails the export.
pub async fn recordings(
    request: &ExportRequest,
    accounts: &[AccountSource],
    parts: &[AccountPart],
    bundle: &mut Bundle,
) -> Result<u64, ExportError> {
    if !request.with_recordings {
        return Ok(0);
    }
    let mut count = 0;
    for part in parts {
        let Some(source) = source_of(accounts, part) else {
            continue;
        };
        for call in &part.calls {
            let Some(object) = &call.object else {
                continue;
            };
            let missing = || ExportError::Missing {
                account: part.account.clone(),
                uuid: call.call.uuid.to_string(),
                key: object.key.clone(),
            };
            let body = source
                .store
                .read(&object.key)
                .await
                .map_err(|source| ExportError::store(&object.key, source))?
                .ok_or_else(missing)?;
            let path = recording_path(&part.account, &object.key);
            let (size, sha256) = bundle.put_stream(&path, object.size, body).await?;
            if size != object.size || sha256 != object.sha256 {
                return Err(ExportError::Mismatch(Box::new(super::write::Mismatch {
                    account: part.account.clone(),
                    uuid: call.call.uuid.to_string(),
                    key: object.key.clone(),
                    expected: object.sha256.clone(),
                    expected_size: object.size,
                    found: sha256,
                    found_size: size,
                })));
            }
            count += 1;
        }
    }
    Ok(count)
}

/// The certificates a token carries, as PEM: the hook the lead wires to
/// `proof::tsa::token_certificates_pem`.
fn token_certificates(_token: &[u8]) -> Option<String> {
    None
}

/// The checkpoints, tokens and keys, `consistency.jsonl`, and `tsa/certificates.pem` (when
/// the tokens carry certificates).
pub async fn proofs(parts: &[AccountPart], bundle: &mut Bundle) -> Result<(), ExportError> {
    let mut written = HashSet::new();
    let mut certificates = BTreeSet::new();
    for part in parts {
        for file in &part.files {
            // A key that signed several accounts' checkpoints is written once.
            if !written.insert(file.path.clone()) {
                continue;
            }
            if file.path.ends_with(".tsr") {
                certificates.extend(token_certificates(&file.bytes));
            }
            bundle.put(&file.path, file.bytes.clone()).await?;
        }
    }
    let lines: Vec<_> = parts.iter().flat_map(|p| p.consistency.iter()).collect();
    bundle.put_lines(CONSISTENCY, &lines).await?;
    if !certificates.is_empty() {
        let pem: String = certificates.into_iter().collect();
        bundle.put(TSA_CERTIFICATES, pem.into_bytes()).await?;
    }
    Ok(())
}

fn named(account: &str, value: impl serde::Serialize) -> Value {
    let mut line = json!({ "account": account });
    if let (Some(map), Ok(Value::Object(fields))) =
        (line.as_object_mut(), serde_json::to_value(value))
    {
        map.extend(fields);
    }
    line
}

/// The access-log entries touching each account's calls (only those calls named in each),
/// the export's own included.
async fn access_lines(
    source: &AccountSource,
    part: &AccountPart,
) -> Result<Vec<Value>, ExportError> {
    let ours: HashSet<&CallUuid> = part.calls.iter().map(|c| &c.call.uuid).collect();
    let mut entries = std::collections::BTreeMap::new();
    for uuid in &ours {
        let mut query = AccessQuery {
            uuid: Some((*uuid).clone()),
            limit: MAX_PAGE,
            ..AccessQuery::default()
        };
        loop {
            let page = source.ledger.access_entries(&query).await?;
            let full = page.len() == MAX_PAGE as usize;
            query.after_id = page.last().map(|e| e.id);
            for mut entry in page {
                entry.entry.calls.retain(|c| ours.contains(c));
                entries.insert(entry.id, entry);
            }
            if !full {
                break;
            }
        }
    }
    Ok(entries.values().map(|e| named(&part.account, e)).collect())
}

/// `audit/`: access-log entries, holds, erasures and the last verification of each call.
pub async fn audit(
    accounts: &[AccountSource],
    parts: &[AccountPart],
    bundle: &mut Bundle,
) -> Result<(), ExportError> {
    let (mut access, mut holds, mut erasures, mut verified) = (vec![], vec![], vec![], vec![]);
    for part in parts {
        if let Some(source) = source_of(accounts, part) {
            access.extend(access_lines(source, part).await?);
        }
        for call in &part.calls {
            holds.extend(call.holds.iter().map(|h| named(&part.account, h)));
            erasures.extend(call.tombstone.iter().map(|t| named(&part.account, t)));
            verified.push(json!({
                "account": part.account,
                "uuid": call.call.uuid,
                "result": call.call.last_verify_result,
                "verified_at": call.call.last_verified_at.map(to_ledger),
            }));
        }
    }
    bundle.put_lines(AUDIT_ACCESS, &access).await?;
    bundle.put_lines(AUDIT_HOLDS, &holds).await?;
    bundle.put_lines(AUDIT_ERASURES, &erasures).await?;
    bundle.put_lines(AUDIT_VERIFICATIONS, &verified).await
}

/// `completeness.jsonl`: for each day (in the provider's zone) and company of the calls,
/// the provider's bill list against the archive.
pub async fn completeness(
    request: &ExportRequest,
    accounts: &[AccountSource],
    parts: &[AccountPart],
    bundle: &mut Bundle,
) -> Result<(), ExportError> {
    let tz = request.tz;
    let mut lines = Vec::new();
    for part in parts {
        let Some(source) = source_of(accounts, part) else {
            continue;
        };
        let days: BTreeSet<(chrono::NaiveDate, String)> = part
            .calls
            .iter()
            .filter_map(|c| {
                Some((
                    c.call.call_start?.with_timezone(&tz).date_naive(),
                    c.call.company_code.clone(),
                ))
            })
            .collect();
        let (Some((first, _)), Some((last, _))) = (days.first(), days.last()) else {
            continue;
        };
        let midnight = |d: chrono::NaiveDate| {
            d.and_hms_opt(0, 0, 0)
                .and_then(|t| t.and_local_timezone(tz).single())
                .map(|t| t.with_timezone(&chrono::Utc))
        };
        let (Some(since), Some(until)) = (midnight(*first), last.succ_opt().and_then(midnight))
        else {
            continue;
        };
        let risk = risk_line(request.now, request.retention);
        for day in source.ledger.completeness(since, until, tz, risk).await? {
            let Some(date) = day.day else { continue };
            if days.contains(&(date, day.company_code.clone())) {
                let mut line = named(&part.account, &day);
                line["complete"] = day.complete().into();
                lines.push(line);
            }
        }
    }
    bundle.put_lines(format::COMPLETENESS, &lines).await
}

/// `object-lock.json`: per account, the bucket's Object Lock configuration as read.
pub async fn object_lock(parts: &[AccountPart], bundle: &mut Bundle) -> Result<(), ExportError> {
    let mut accounts = serde_json::Map::new();
    for part in parts {
        accounts.insert(
            part.account.clone(),
            json!({ "store": part.store, "object_lock_enabled": part.object_lock }),
        );
    }
    let text = serde_json::to_vec_pretty(&Value::Object(accounts)).unwrap_or_default();
    bundle.put(OBJECT_LOCK, text).await
}

/// `calls.jsonl` (and `calls.dat` with `--load-file dat`).
pub async fn calls(
    request: &ExportRequest,
    parts: &[AccountPart],
    bundle: &mut Bundle,
) -> Result<(), ExportError> {
    let mut lines = Vec::new();
    for part in parts {
        for call in &part.calls {
            let c = &call.call;
            let record = serde_json::from_str(&c.raw_json)
                .unwrap_or_else(|_| Value::String(c.raw_json.clone()));
            lines.push(CallLine {
                account: part.account.clone(),
                uuid: c.uuid.to_string(),
                state: c.state.to_string(),
                record,
                object: call.object.clone(),
                holds: call
                    .holds
                    .iter()
                    .map(|h| HoldFact {
                        id: h.hold_id.clone(),
                        reason: h.reason.clone(),
                        placed_by: h.placed_by.clone(),
                        placed_at: to_ledger(h.placed_at),
                        released_at: h.released_at.map(to_ledger),
                    })
                    .collect(),
                leaves: call.leaves.clone(),
                recording: call
                    .object
                    .as_ref()
                    .filter(|_| request.with_recordings)
                    .map(|o| recording_path(&part.account, &o.key)),
            });
        }
    }
    bundle.put_lines(CALLS, &lines).await?;
    if request.load_file_dat {
        let dat = super::dat::load_file(parts, &lines, request.tz);
        bundle.put(format::LOAD_FILE_DAT, dat.into_bytes()).await?;
    }
    Ok(())
}
