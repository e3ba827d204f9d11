//! Settlements from every worker of a pass share ledger commits (group commit): a worker
//! hands its settlement over and waits for the commit that carries it, and each commit takes
//! every settlement queued at that moment. No timer: when the ledger is idle a lone
//! settlement is committed at once; while a commit is being written the next ones queue up
//! and go together into the following one. Durability is unchanged: a settlement is
//! handed over only after its object and sidecar are stored, and a worker counts a record
//! done only once the commit is written (a crash before it leaves the record claimed, and the
//! next run archives it again under the same key, idempotently).
//!
//! The loop that owns the queue runs in `archive/mod.rs` (concurrency lives there); this
//! module holds what travels through it and how one group is committed.

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::domain::{ArchivedObject, AttemptId, AttemptOutcome, CallUuid, RunId};
use crate::ledger::{AttemptEnd, Ledger, LedgerError, MediaNote, SettleItem, Settlement};

/// A settlement that owns its text, so it can wait in the queue for its commit.
#[derive(Debug, Clone)]
pub(super) enum Owned {
    Archived(Box<ArchivedObject>, MediaNote),
    Retry {
        next_attempt_at: DateTime<Utc>,
        code: String,
        message: String,
    },
    Failed {
        code: String,
        message: String,
    },
    Expired {
        code: String,
        message: String,
    },
    Released {
        message: String,
    },
    Returned {
        code: String,
        message: String,
        attempts_before: i64,
    },
}

impl Owned {
    pub(super) fn of(settlement: &Settlement<'_>) -> Self {
        match *settlement {
            Settlement::Archived(object, note) => {
                Owned::Archived(Box::new(object.clone()), note.clone())
            }
            Settlement::Retry {
                next_attempt_at,
                code,
                message,
            } => Owned::Retry {
                next_attempt_at,
                code: code.into(),
                message: message.into(),
            },
            Settlement::Failed { code, message } => Owned::Failed {
                code: code.into(),
                message: message.into(),
            },
            Settlement::Expired { code, message } => Owned::Expired {
                code: code.into(),
                message: message.into(),
            },
            Settlement::Released { message } => Owned::Released {
                message: message.into(),
            },
            Settlement::Returned {
                code,
                message,
                attempts_before,
            } => Owned::Returned {
                code: code.into(),
                message: message.into(),
                attempts_before,
            },
        }
    }

    fn settlement(&self) -> Settlement<'_> {
        match self {
            Owned::Archived(object, note) => Settlement::Archived(object, note),
            Owned::Retry {
                next_attempt_at,
                code,
                message,
            } => Settlement::Retry {
                next_attempt_at: *next_attempt_at,
                code,
                message,
            },
            Owned::Failed { code, message } => Settlement::Failed { code, message },
            Owned::Expired { code, message } => Settlement::Expired { code, message },
            Owned::Released { message } => Settlement::Released { message },
            Owned::Returned {
                code,
                message,
                attempts_before,
            } => Settlement::Returned {
                code,
                message,
                attempts_before: *attempts_before,
            },
        }
    }
}

/// An attempt's end that owns its text.
#[derive(Debug, Clone)]
pub(super) struct OwnedEnd {
    id: AttemptId,
    outcome: AttemptOutcome,
    error_code: Option<String>,
    message: Option<String>,
    bytes: u64,
}

impl OwnedEnd {
    pub(super) fn of(end: &AttemptEnd<'_>) -> Self {
        Self {
            id: end.id,
            outcome: end.outcome,
            error_code: end.error_code.map(str::to_owned),
            message: end.message.map(str::to_owned),
            bytes: end.bytes,
        }
    }

    fn end(&self) -> AttemptEnd<'_> {
        AttemptEnd {
            id: self.id,
            outcome: self.outcome,
            error_code: self.error_code.as_deref(),
            message: self.message.as_deref(),
            bytes: self.bytes,
        }
    }
}

/// One settlement waiting for its commit, and where to say whether the lease still held.
#[derive(Debug)]
pub(super) struct Request {
    pub uuid: CallUuid,
    pub settlement: Owned,
    pub end: Option<OwnedEnd>,
    pub reply: oneshot::Sender<Result<bool, LedgerError>>,
}

/// Where workers hand their settlements over.
pub(super) type Queue = mpsc::UnboundedSender<Request>;

/// Hands a settlement over and waits for the commit that carries it: `true` when written
/// under our lease, `false` when another run holds the record now.
pub(super) async fn settle(
    queue: &Queue,
    ledger: &Ledger,
    owner: &RunId,
    uuid: &CallUuid,
    settlement: &Settlement<'_>,
    end: Option<&AttemptEnd<'_>>,
    now: DateTime<Utc>,
) -> Result<bool, LedgerError> {
    let (reply, answer) = oneshot::channel();
    let request = Request {
        uuid: uuid.clone(),
        settlement: Owned::of(settlement),
        end: end.map(OwnedEnd::of),
        reply,
    };
    if queue.send(request).is_ok()
        && let Ok(held) = answer.await
    {
        return held;
    }
    // The queue has closed (the pass is ending): settle alone.
    ledger.settle(uuid, owner, settlement, end, now).await
}

/// Commits one group and answers each waiting worker. A group whose commit fails is written
/// again one settlement at a time (nothing of it was written), so each worker learns its
/// own record's fate and error. `now` is when the commit is made.
pub(super) async fn commit(
    ledger: &Ledger,
    owner: &RunId,
    group: Vec<Request>,
    now: DateTime<Utc>,
) {
    let items: Vec<SettleItem<'_>> = group
        .iter()
        .map(|r| SettleItem {
            uuid: &r.uuid,
            owner,
            settlement: r.settlement.settlement(),
            last_attempt: r.end.as_ref().map(OwnedEnd::end),
        })
        .collect();
    let written = ledger.settle_many(&items, now).await;
    drop(items);
    match written {
        Ok(held) => {
            for (request, held) in group.into_iter().zip(held) {
                let _ = request.reply.send(Ok(held));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, settlements = group.len(), "grouped settlement failed; settling one by one");
            for request in group {
                let end = request.end.as_ref().map(OwnedEnd::end);
                let held = ledger
                    .settle(
                        &request.uuid,
                        owner,
                        &request.settlement.settlement(),
                        end.as_ref(),
                        now,
                    )
                    .await;
                let _ = request.reply.send(held);
            }
        }
    }
}
