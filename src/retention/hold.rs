//! Legal holds: `hold` records the hold and the calls it keeps in the ledger, and sets the
//! S3 legal hold on each call's recording and sidecar; `release` ends it for chosen calls and
//! clears the S3 legal hold of those no other hold keeps. The S3 hold is set before the
//! ledger records the call (a crash between leaves an object held that the ledger does not
//! name: the safe side), and cleared after the ledger has released it (likewise).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::select::{Pages, Selection};
use super::{Actor, RetentionError};
use crate::domain::CallUuid;
use crate::ledger::{CallFacts, HoldId, Ledger, NewHold, ObjectHold};
use crate::store::{LegalHoldOutcome, Store, StoreError};

/// What `hold` did.
#[derive(Debug, Clone, Serialize)]
pub struct HoldReport {
    /// `None` when no call matched (nothing recorded).
    pub hold: Option<HoldId>,
    pub calls: Vec<(CallUuid, ObjectHold)>,
    /// Calls whose object-level hold could not be set, with why.
    pub problems: Vec<(CallUuid, String)>,
}

impl HoldReport {
    pub fn count(&self, kind: ObjectHold) -> usize {
        self.calls.iter().filter(|(_, h)| *h == kind).count()
    }
}

/// What `release` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReleaseReport {
    /// (call, hold) pairs released.
    pub released: Vec<(CallUuid, HoldId)>,
    /// Calls released from a hold but still kept by another: their S3 hold stays.
    pub still_held: Vec<CallUuid>,
    /// Calls whose S3 legal hold was cleared.
    pub objects_cleared: usize,
    /// Chosen calls no hold kept.
    pub not_held: usize,
    pub problems: Vec<(CallUuid, String)>,
}

/// The keys of a call's objects: the recording and, when the store writes them, its sidecar.
pub(super) fn object_keys(store: &Store, key: &str) -> Vec<String> {
    let mut keys = vec![key.to_owned()];
    if store.sidecars() {
        keys.push(store.sidecar_key(key));
    }
    keys
}

/// Sets or clears the S3 legal hold on a call's objects.
async fn set_object_hold(
    store: &Store,
    call: &CallFacts,
    on: bool,
) -> Result<ObjectHold, StoreError> {
    let Some(object) = &call.object else {
        return Ok(ObjectHold::NotArchived);
    };
    let mut outcome = ObjectHold::Set;
    for key in object_keys(store, &object.key) {
        if store.set_legal_hold(&key, on).await? == LegalHoldOutcome::Unsupported {
            outcome = ObjectHold::Unsupported;
        }
    }
    Ok(outcome)
}

/// Places a hold on the chosen calls.
pub async fn place_hold(
    ledger: &Ledger,
    store: &Store,
    selection: &Selection,
    reason: &str,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<HoldReport, RetentionError> {
    let id = HoldId::generate();
    let mut report = HoldReport {
        hold: None,
        calls: Vec::new(),
        problems: Vec::new(),
    };
    let describe = selection.describe();
    let mut pages = Pages::new(ledger, selection);
    while let Some(page) = pages.next().await? {
        if report.hold.is_none() {
            ledger
                .create_hold(&NewHold {
                    id: &id,
                    reason,
                    placed_by: actor.as_str(),
                    placed_at: now,
                    selection: &describe,
                })
                .await?;
            report.hold = Some(id.clone());
        }
        let mut held = Vec::with_capacity(page.len());
        for call in &page {
            let outcome = match set_object_hold(store, call, true).await {
                Ok(outcome) => outcome,
                Err(e @ StoreError::Config(_)) => return Err(e.into()),
                Err(e) => {
                    report.problems.push((call.uuid.clone(), e.to_string()));
                    ObjectHold::Failed
                }
            };
            held.push((call.uuid.clone(), outcome));
        }
        ledger.add_held_calls(&id, &held).await?;
        report.calls.extend(held);
    }
    Ok(report)
}

/// Releases the chosen calls from every hold (or only `hold`); clears the S3 legal hold of
/// those no other hold keeps.
pub async fn release(
    ledger: &Ledger,
    store: &Store,
    selection: &Selection,
    hold: Option<&HoldId>,
    reason: &str,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<ReleaseReport, RetentionError> {
    let mut report = ReleaseReport::default();
    let mut pages = Pages::new(ledger, selection);
    while let Some(page) = pages.next().await? {
        let uuids: Vec<CallUuid> = page.iter().map(|c| c.uuid.clone()).collect();
        let released = ledger
            .release_calls(&uuids, hold, actor.as_str(), reason, now)
            .await?;
        for call in &page {
            let mine: Vec<_> = released.iter().filter(|r| r.uuid == call.uuid).collect();
            let Some(first) = mine.first() else {
                report.not_held += 1;
                continue;
            };
            report
                .released
                .extend(mine.iter().map(|r| (r.uuid.clone(), r.hold.clone())));
            if first.still_held {
                report.still_held.push(call.uuid.clone());
                continue;
            }
            match set_object_hold(store, call, false).await {
                Ok(ObjectHold::Set) => report.objects_cleared += 1,
                Ok(_) => {}
                Err(e @ StoreError::Config(_)) => return Err(e.into()),
                Err(e) => report.problems.push((call.uuid.clone(), e.to_string())),
            }
        }
    }
    Ok(report)
}
