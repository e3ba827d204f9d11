//! Legal holds: `hold` records the hold and the calls it keeps in the ledger, and sets the
//! S3 legal hold on each call's recording and sidecar; `release` ends it for chosen calls and
//! clears the S3 legal hold of those no other hold keeps. The ledger records only what the
//! bucket did: the S3 hold is set before the ledger records the call, and cleared before the
//! ledger records the release. A crash between leaves, for `hold`, an object held that the
//! ledger does not name (the safe side); for `release`, a call the ledger still holds whose
//! bucket hold is gone (callvault still keeps it; running `release` again finishes it).
//!
//! A store that refuses the request (403, a configuration error) stops the command there:
//! the calls before the refusal are recorded, the refused call and those after it are not
//! (`stopped` says why; the command exits 2). A store that fails in passing is one call's
//! problem: `hold` records the ledger hold anyway (`failed` at the bucket), `release` leaves
//! the call held until it is run again.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::select::{Pages, Selection};
use super::{Actor, RetentionError};
use crate::domain::CallUuid;
use crate::failure::Action;
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
    /// The store refused us: the hold stopped at this call, which (like every call after
    /// it) is not recorded.
    pub stopped: Option<Refusal>,
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
    /// Calls whose bucket hold could not be cleared: still held in the ledger too.
    pub problems: Vec<(CallUuid, String)>,
    /// The store refused us: the release stopped at this call, which (like every call after
    /// it) is still held.
    pub stopped: Option<Refusal>,
}

/// A store's refusal that stopped `hold` or `release`, and the call it stopped at.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub call: CallUuid,
    pub error: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped at {}: {}", self.call, self.error)
    }
}

/// How a call's bucket hold went: done (how), failed in passing, or refused (stop).
enum BucketHold {
    Done(ObjectHold),
    Failed(String),
    Refused(Refusal),
}

impl BucketHold {
    fn of(call: &CallFacts, result: Result<ObjectHold, StoreError>) -> Self {
        match result {
            Ok(outcome) => Self::Done(outcome),
            Err(e) if e.action() == Action::StopRun => Self::Refused(Refusal {
                call: call.uuid.clone(),
                error: e.to_string(),
            }),
            Err(e) => Self::Failed(e.to_string()),
        }
    }
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
    let describe = selection.describe();
    let new_hold = NewHold {
        id: &id,
        reason,
        placed_by: actor.as_str(),
        placed_at: now,
        selection: &describe,
    };
    let mut report = HoldReport {
        hold: None,
        calls: Vec::new(),
        problems: Vec::new(),
        stopped: None,
    };
    let mut pages = Pages::new(ledger, selection);
    while let Some(page) = pages.next().await? {
        let held = hold_objects(store, &page, &mut report).await;
        // The hold itself is recorded with its first call, so that a refusal before any
        // leaves no hold behind.
        if !held.is_empty() {
            if report.hold.is_none() {
                ledger.create_hold(&new_hold).await?;
                report.hold = Some(id.clone());
            }
            ledger.add_held_calls(&id, &held).await?;
            report.calls.extend(held);
        }
        if report.stopped.is_some() {
            break;
        }
    }
    Ok(report)
}

/// Sets the bucket hold of a page's calls, in order, until the store refuses one; returns
/// the calls to record (with how their bucket hold went), notes problems and the refusal.
async fn hold_objects(
    store: &Store,
    page: &[CallFacts],
    report: &mut HoldReport,
) -> Vec<(CallUuid, ObjectHold)> {
    let mut held = Vec::with_capacity(page.len());
    for call in page {
        let outcome = match BucketHold::of(call, set_object_hold(store, call, true).await) {
            BucketHold::Done(outcome) => outcome,
            BucketHold::Failed(problem) => {
                report.problems.push((call.uuid.clone(), problem));
                ObjectHold::Failed
            }
            BucketHold::Refused(refusal) => {
                report.stopped = Some(refusal);
                break;
            }
        };
        held.push((call.uuid.clone(), outcome));
    }
    held
}

/// What `release` does with one chosen call, decided from the holds that keep it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// No hold it is released from keeps it.
    NotHeld,
    /// Another hold keeps it: the ledger records the release, the bucket hold stays.
    StillHeld,
    /// Nothing will keep it: the bucket hold is cleared first, then the ledger records it.
    Clear,
}

fn plan(call: &CallFacts, hold: Option<&HoldId>) -> Plan {
    let released = match hold {
        Some(h) => call.holds.contains(h),
        None => !call.holds.is_empty(),
    };
    let others = call.holds.iter().any(|h| Some(h) != hold);
    match (released, hold.is_some() && others) {
        (false, _) => Plan::NotHeld,
        (true, true) => Plan::StillHeld,
        (true, false) => Plan::Clear,
    }
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
        let (to_record, cleared) = clear_objects(store, &page, hold, &mut report).await;
        if !to_record.is_empty() {
            let released = ledger
                .release_calls(&to_record, hold, actor.as_str(), reason, now)
                .await?;
            record_released(store, &page, &to_record, &cleared, &released, &mut report).await;
        }
        if report.stopped.is_some() {
            break;
        }
    }
    Ok(report)
}

/// Clears the bucket hold of a page's calls that nothing will keep, in order, until the
/// store refuses one. Returns the calls whose release the ledger may record (still held by
/// another hold, or no bucket hold left) and those whose bucket hold this cleared.
async fn clear_objects(
    store: &Store,
    page: &[CallFacts],
    hold: Option<&HoldId>,
    report: &mut ReleaseReport,
) -> (Vec<CallUuid>, Vec<CallUuid>) {
    let (mut to_record, mut cleared) = (Vec::new(), Vec::new());
    for call in page {
        match plan(call, hold) {
            Plan::NotHeld => report.not_held += 1,
            Plan::StillHeld => to_record.push(call.uuid.clone()),
            Plan::Clear => match BucketHold::of(call, set_object_hold(store, call, false).await) {
                BucketHold::Done(outcome) => {
                    if outcome == ObjectHold::Set {
                        cleared.push(call.uuid.clone());
                    }
                    to_record.push(call.uuid.clone());
                }
                BucketHold::Failed(problem) => report.problems.push((call.uuid.clone(), problem)),
                BucketHold::Refused(refusal) => {
                    report.stopped = Some(refusal);
                    break;
                }
            },
        }
    }
    (to_record, cleared)
}

/// Adds what the ledger released to the report. A hold placed on a call since its page was
/// read keeps it after all: its bucket hold, cleared a moment ago, is set again.
async fn record_released(
    store: &Store,
    page: &[CallFacts],
    recorded: &[CallUuid],
    cleared: &[CallUuid],
    released: &[crate::ledger::Released],
    report: &mut ReleaseReport,
) {
    for call in page.iter().filter(|c| recorded.contains(&c.uuid)) {
        let mine: Vec<_> = released.iter().filter(|r| r.uuid == call.uuid).collect();
        let kept = mine.iter().any(|r| r.still_held);
        if cleared.contains(&call.uuid) {
            if kept {
                if let Err(e) = set_object_hold(store, call, true).await {
                    report.problems.push((
                        call.uuid.clone(),
                        format!(
                            "held again meanwhile; its bucket hold could not be set again: {e}"
                        ),
                    ));
                }
            } else {
                report.objects_cleared += 1;
            }
        }
        if mine.is_empty() {
            // Released by someone else since the page was read.
            report.not_held += 1;
            continue;
        }
        report
            .released
            .extend(mine.iter().map(|r| (r.uuid.clone(), r.hold.clone())));
        if kept {
            report.still_held.push(call.uuid.clone());
        }
    }
}
