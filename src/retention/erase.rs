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
use crate::ledger::{CallFacts, EraseRecorded, HoldId, Ledger, Tombstone};
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
    let reasons: std::collections::HashMap<HoldId, String> = ledger
        .holds(false)
        .await?
        .into_iter()
        .map(|h| (h.id, h.reason))
        .collect();
    let named = |holds: &[HoldId]| {
        holds
            .iter()
            .map(|h| (h.clone(), reasons.get(h).cloned().unwrap_or_default()))
            .collect::<Vec<_>>()
    };
    let mut report = EraseReport {
        dry_run: !yes,
        ..Default::default()
    };
    let mut pages = Pages::new(ledger, selection);
    while let Some(page) = pages.next().await? {
        for call in page {
            if let EraseMode::Expire { older_than } = mode {
                let due = call
                    .call_start
                    .and_then(|s| older_than.until(s))
                    .is_some_and(|until| until <= now);
                if !due {
                    report.not_due += 1;
                    continue;
                }
                if call.state == RecordState::Erased {
                    continue;
                }
            }
            let kept = |why| Kept {
                uuid: call.uuid.clone(),
                why,
            };
            let verdict = match ledger_verdict(&call) {
                Some(KeptReason::OnHold { .. }) => Err(KeptReason::OnHold {
                    holds: named(&call.holds),
                }),
                Some(why) => Err(why),
                None => Ok(()),
            };
            if let Err(why) = verdict {
                report.kept.push(kept(why));
                continue;
            }
            let Some(object) = call.object.clone() else {
                report.kept.push(kept(KeptReason::NotArchived {
                    state: Some(call.state),
                }));
                continue;
            };
            let plan = match plan(store, &object.key, now).await {
                Ok(plan) => plan,
                Err(Blocked::Locked { key, detail }) => {
                    report.kept.push(kept(KeptReason::Locked { key, detail }));
                    continue;
                }
                Err(Blocked::Store(e @ StoreError::Config(_))) => return Err(e.into()),
                Err(Blocked::Store(e)) => {
                    report.kept.push(kept(KeptReason::StoreFailed {
                        key: object.key.clone(),
                        detail: e.to_string(),
                    }));
                    continue;
                }
            };
            if !yes {
                report.erased.push(Erased {
                    uuid: call.uuid.clone(),
                    key: object.key.clone(),
                    size: object.size,
                    versions_deleted: 0,
                });
                continue;
            }
            let deleted = match execute(store, &plan).await {
                Ok(n) => n,
                Err((key, e)) => {
                    report.kept.push(kept(KeptReason::StoreFailed {
                        key,
                        detail: e.to_string(),
                    }));
                    continue;
                }
            };
            let tombstone = Tombstone {
                uuid: call.uuid.clone(),
                key: object.key.clone(),
                sidecar_key: store.sidecar_key(&object.key),
                sha256: object.sha256.clone(),
                size: object.size,
                archived_at: Some(object.archived_at),
                erased_at: now,
                reason: mode.reason(),
                erased_by: actor.to_string(),
                versions_deleted: deleted,
                manifest_seq: None,
            };
            match ledger.record_erasure(&tombstone).await? {
                EraseRecorded::Erased => report.erased.push(Erased {
                    uuid: call.uuid.clone(),
                    key: object.key.clone(),
                    size: object.size,
                    versions_deleted: deleted,
                }),
                // A hold (or a manifest claim) came while the objects were deleted: the
                // objects are gone (an S3 legal hold set meanwhile would have refused the
                // delete), so say so loudly; the ledger keeps the call as it was.
                EraseRecorded::OnHold { holds } => {
                    tracing::error!(uuid = %call.uuid, ?holds, "a hold was placed while the call's objects were being deleted; the ledger still lists it");
                    report.kept.push(kept(KeptReason::OnHold {
                        holds: named(&holds),
                    }));
                }
                EraseRecorded::NotArchived { state } => {
                    report.kept.push(kept(KeptReason::NotArchived { state }));
                }
                EraseRecorded::ManifestBeingWritten { seq } => {
                    report
                        .kept
                        .push(kept(KeptReason::ManifestBeingWritten { seq }));
                }
            }
        }
    }
    Ok(report)
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
