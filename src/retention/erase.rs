//! Erasure: chosen calls (`erase`) or calls past their retention (`expire`) leave the store
//! for good (every version of the recording and its sidecar) and the ledger keeps a
//! tombstone in place of the call's personal data. A dry run (the default) reports the
//! same verdicts without deleting anything. See the module above for the order of the steps
//! and what a crash part way leaves.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::hold::object_keys;
use super::select::{Pages, Selection};
use super::{Actor, RetentionError};
use crate::domain::{CallUuid, RecordState};
use crate::ledger::{ArchivedEntry, CallFacts, EraseRecorded, HoldId, Ledger, Tombstone};
use crate::store::{RetainFor, Store, StoreError};

/// What is being erased, and why.
#[derive(Debug, Clone)]
pub enum EraseMode {
    /// The chosen calls (a person's request, a case closed).
    Chosen { reason: String },
    /// The chosen calls whose start is at least `older_than` ago.
    Expire { older_than: RetainFor },
}

impl EraseMode {
    fn reason(&self) -> String {
        match self {
            Self::Chosen { reason } => reason.clone(),
            Self::Expire { older_than } => format!("end of retention ({older_than})"),
        }
    }
}

/// Why a chosen call does not go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum KeptReason {
    /// Kept by legal holds (ids and reasons).
    OnHold {
        holds: Vec<(HoldId, String)>,
    },
    /// The bucket will not let an object go yet.
    Locked {
        key: String,
        detail: String,
    },
    NotArchived {
        state: Option<RecordState>,
    },
    AlreadyErased,
    /// The manifest that lists it is being written: run again once it is.
    ManifestBeingWritten {
        seq: i64,
    },
    /// The store refused or failed to delete; nothing recorded (run again).
    StoreFailed {
        key: String,
        detail: String,
    },
}

impl std::fmt::Display for KeptReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OnHold { holds } => {
                f.write_str("on hold: ")?;
                for (i, (id, reason)) in holds.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{id} ({reason})")?;
                }
                Ok(())
            }
            Self::Locked { key, detail } => write!(f, "{detail}: {key}"),
            Self::NotArchived { state: Some(s) } => write!(f, "not archived ({s})"),
            Self::NotArchived { state: None } => f.write_str("not in the ledger"),
            Self::AlreadyErased => f.write_str("already erased"),
            Self::ManifestBeingWritten { seq } => {
                write!(
                    f,
                    "manifest {seq}, which lists it, is being written: run again"
                )
            }
            Self::StoreFailed { key, detail } => {
                write!(f, "the store did not delete {key}: {detail}")
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Kept {
    pub uuid: CallUuid,
    #[serde(flatten)]
    pub why: KeptReason,
}

#[derive(Debug, Clone, Serialize)]
pub struct Erased {
    pub uuid: CallUuid,
    pub key: String,
    pub size: u64,
    /// Object versions deleted (0 in a dry run).
    pub versions_deleted: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EraseReport {
    /// Nothing was deleted: `erased` is what would go.
    pub dry_run: bool,
    pub erased: Vec<Erased>,
    pub kept: Vec<Kept>,
    /// Chosen calls not yet past retention (`expire` only; not listed one by one).
    pub not_due: u64,
}

impl EraseReport {
    /// Calls the store would not delete (an error, not a verdict).
    pub fn store_failures(&self) -> usize {
        self.kept
            .iter()
            .filter(|k| matches!(k.why, KeptReason::StoreFailed { .. }))
            .count()
    }
}

/// Erases the chosen calls (`yes`), or says what would go and what would not.
pub async fn erase(
    ledger: &Ledger,
    store: &Store,
    selection: &Selection,
    mode: &EraseMode,
    actor: &Actor,
    yes: bool,
    now: DateTime<Utc>,
) -> Result<EraseReport, RetentionError> {
    let eraser = Eraser {
        ledger,
        store,
        mode,
        actor,
        yes,
        now,
        reasons: ledger
            .holds(false)
            .await?
            .into_iter()
            .map(|h| (h.id, h.reason))
            .collect(),
    };
    let mut report = EraseReport {
        dry_run: !yes,
        ..Default::default()
    };
    let mut pages = Pages::new(ledger, selection);
    while let Some(page) = pages.next().await? {
        for call in page {
            match eraser.due(&call) {
                Due::Yes => {}
                Due::NotYet => {
                    report.not_due += 1;
                    continue;
                }
                Due::AlreadyErased => continue,
            }
            let outcome = match eraser.decide(&call).await? {
                Ok((object, plan)) => eraser.carry_out(&call, &object, &plan).await?,
                Err(why) => Err(why),
            };
            match outcome {
                Ok(erased) => report.erased.push(erased),
                Err(why) => report.kept.push(Kept {
                    uuid: call.uuid.clone(),
                    why,
                }),
            }
        }
    }
    Ok(report)
}

/// Whether `expire` takes a call now (`erase` takes every chosen call).
enum Due {
    Yes,
    NotYet,
    AlreadyErased,
}

/// One erasure's settings, shared by every call it chooses.
struct Eraser<'a> {
    ledger: &'a Ledger,
    store: &'a Store,
    mode: &'a EraseMode,
    actor: &'a Actor,
    yes: bool,
    now: DateTime<Utc>,
    /// The reasons of the holds in force, to name them to whoever asked.
    reasons: std::collections::HashMap<HoldId, String>,
}

impl Eraser<'_> {
    /// `expire`: the call's retention must have ended, and an erased call is passed over.
    fn due(&self, call: &CallFacts) -> Due {
        let EraseMode::Expire { older_than } = self.mode else {
            return Due::Yes;
        };
        let due = call
            .call_start
            .and_then(|s| older_than.until(s))
            .is_some_and(|until| until <= self.now);
        match (due, call.state) {
            (false, _) => Due::NotYet,
            (true, RecordState::Erased) => Due::AlreadyErased,
            (true, _) => Due::Yes,
        }
    }

    fn named(&self, holds: &[HoldId]) -> Vec<(HoldId, String)> {
        holds
            .iter()
            .map(|h| (h.clone(), self.reasons.get(h).cloned().unwrap_or_default()))
            .collect()
    }

    /// What would go (the call's object and the versions to delete), or why the call stays:
    /// the ledger's verdict first, then the bucket's (locks).
    async fn decide(
        &self,
        call: &CallFacts,
    ) -> Result<Result<(ArchivedEntry, Plan), KeptReason>, RetentionError> {
        match ledger_verdict(call) {
            Some(KeptReason::OnHold { .. }) => {
                return Ok(Err(KeptReason::OnHold {
                    holds: self.named(&call.holds),
                }));
            }
            Some(why) => return Ok(Err(why)),
            None => {}
        }
        let Some(object) = call.object.clone() else {
            return Ok(Err(KeptReason::NotArchived {
                state: Some(call.state),
            }));
        };
        match plan(self.store, &object.key, self.now).await {
            Ok(plan) => Ok(Ok((object, plan))),
            Err(Blocked::Locked { key, detail }) => Ok(Err(KeptReason::Locked { key, detail })),
            Err(Blocked::Store(e @ StoreError::Config(_))) => Err(e.into()),
            Err(Blocked::Store(e)) => Ok(Err(KeptReason::StoreFailed {
                key: object.key.clone(),
                detail: e.to_string(),
            })),
        }
    }

    /// Deletes the call's objects (`yes`; else only says they would go) and records the
    /// erasure with its tombstone.
    async fn carry_out(
        &self,
        call: &CallFacts,
        object: &ArchivedEntry,
        plan: &Plan,
    ) -> Result<Result<Erased, KeptReason>, RetentionError> {
        let erased = |versions_deleted| Erased {
            uuid: call.uuid.clone(),
            key: object.key.clone(),
            size: object.size,
            versions_deleted,
        };
        if !self.yes {
            return Ok(Ok(erased(0)));
        }
        let deleted = match execute(self.store, plan).await {
            Ok(n) => n,
            Err((key, e)) => {
                return Ok(Err(KeptReason::StoreFailed {
                    key,
                    detail: e.to_string(),
                }));
            }
        };
        let tombstone = Tombstone {
            uuid: call.uuid.clone(),
            key: object.key.clone(),
            sidecar_key: self.store.sidecar_key(&object.key),
            sha256: object.sha256.clone(),
            size: object.size,
            archived_at: Some(object.archived_at),
            erased_at: self.now,
            reason: self.mode.reason(),
            erased_by: self.actor.to_string(),
            versions_deleted: deleted,
            manifest_seq: None,
        };
        Ok(match self.ledger.record_erasure(&tombstone).await? {
            EraseRecorded::Erased => Ok(erased(deleted)),
            // A hold (or a manifest claim) came while the objects were deleted: the objects
            // are gone (an S3 legal hold set meanwhile would have refused the delete), so say
            // so loudly; the ledger keeps the call as it was.
            EraseRecorded::OnHold { holds } => {
                tracing::error!(uuid = %call.uuid, ?holds, "a hold was placed while the call's objects were being deleted; the ledger still lists it");
                Err(KeptReason::OnHold {
                    holds: self.named(&holds),
                })
            }
            EraseRecorded::NotArchived { state } => Err(KeptReason::NotArchived { state }),
            EraseRecorded::ManifestBeingWritten { seq } => {
                Err(KeptReason::ManifestBeingWritten { seq })
            }
        })
    }
}

/// What the ledger alone says against erasing the call.
fn ledger_verdict(call: &CallFacts) -> Option<KeptReason> {
    if !call.holds.is_empty() {
        return Some(KeptReason::OnHold { holds: Vec::new() });
    }
    match call.state {
        RecordState::Archived => {}
        RecordState::Erased => return Some(KeptReason::AlreadyErased),
        other => return Some(KeptReason::NotArchived { state: Some(other) }),
    }
    match call.manifest_seq {
        Some(seq) if !call.manifest_written => Some(KeptReason::ManifestBeingWritten { seq }),
        _ => None,
    }
}

/// Every (key, version) to delete, in order: the recording's versions oldest first, then
/// the sidecar's. `None` as version: a store without versions (one plain delete).
struct Plan(Vec<(String, Option<String>)>);

enum Blocked {
    Locked { key: String, detail: String },
    Store(StoreError),
}

impl From<StoreError> for Blocked {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Checks every version of the call's objects for a running lock or legal hold.
async fn plan(store: &Store, key: &str, now: DateTime<Utc>) -> Result<Plan, Blocked> {
    let mut steps = Vec::new();
    for key in object_keys(store, key) {
        match store.versions(&key).await? {
            Some(versions) => {
                for v in versions.iter().rev() {
                    if !v.delete_marker
                        && let Some(lock) = store.version_lock(&key, Some(&v.version_id)).await?
                        && let Some(detail) = lock.blocks(now)
                    {
                        return Err(Blocked::Locked {
                            key,
                            detail: format!("{detail} (version {})", v.version_id),
                        });
                    }
                    steps.push((key.clone(), Some(v.version_id.clone())));
                }
            }
            None => {
                if let Some(lock) = store.version_lock(&key, None).await?
                    && let Some(detail) = lock.blocks(now)
                {
                    return Err(Blocked::Locked { key, detail });
                }
                steps.push((key, None));
            }
        }
    }
    Ok(Plan(steps))
}

/// Deletes what the plan names, in order; stops at the first refusal.
async fn execute(store: &Store, plan: &Plan) -> Result<u64, (String, StoreError)> {
    let mut deleted = 0;
    for (key, version) in &plan.0 {
        store
            .delete_version(key, version.as_deref())
            .await
            .map_err(|e| (key.clone(), e))?;
        deleted += 1;
    }
    Ok(deleted)
}
