//! Legal holds and erasures as the ledger keeps them: which calls a hold (a case) keeps,
//! who placed and released it and why; and for each erased call a tombstone (what went,
//! when, why, by whom; none of the call's personal data), listed by the next manifest so
//! the chain stays whole. The ledger is where "on hold" is decided: a store without Object
//! Lock has no object-level hold, yet callvault never erases a held call.
//!
//! An erasure is recorded in a transaction that first takes the manifest chain head's lock
//! ([`ChainHead::begin_chain_head`]), which holds off manifest claims and other erasures,
//! so neither a hold, nor a manifest claim, nor a
//! second erasure slips between its checks and its writes. How that is held is the one
//! thing the backends do differently (SQLite's write lock; PostgreSQL's chain-head lock and
//! the call's row lock); every statement and row mapping is written once, here.

use std::collections::HashSet;
use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::manifests::ChainHead;
use super::sql::{Row, Stmt, Tx, params, pick, retry_conflicts};
use super::{ArchivedEntry, LedgerError};
use crate::domain::{CallUuid, RecordState};

/// The id of one legal hold: `hold-<UTC time>-<8 hex digits>`, sortable by placement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct HoldId(String);

impl HoldId {
    pub fn generate() -> Self {
        Self(format!(
            "hold-{}-{}",
            Utc::now().format("%Y%m%dT%H%M%SZ"),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ))
    }

    /// A hold id as an operator types it (`--hold`), or as the ledger holds it.
    pub fn parse(raw: &str) -> Option<Self> {
        let s = raw.trim();
        (s.starts_with("hold-") && s.len() <= 64 && s.chars().all(|c| c.is_ascii_graphic()))
            .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HoldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the store did with a held call's object-level legal hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectHold {
    /// S3 legal hold set on the recording and its sidecar.
    Set,
    /// The store has no Object Lock API (a local directory, s3s-fs): the ledger hold alone
    /// applies, which stops callvault, not someone with the bucket's credentials.
    Unsupported,
    /// The call has no object yet (not archived): the ledger hold alone applies.
    NotArchived,
    /// The store did not answer: the ledger hold applies; run `hold` again.
    Failed,
}

impl ObjectHold {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Set => "set",
            Self::Unsupported => "unsupported",
            Self::NotArchived => "not_archived",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Set,
            Self::Unsupported,
            Self::NotArchived,
            Self::Failed,
        ]
        .into_iter()
        .find(|h| h.as_str() == s)
    }
}

/// A chosen call with what hold, erase and expire decide on.
#[derive(Debug, Clone, Serialize)]
pub struct CallFacts {
    pub uuid: CallUuid,
    pub state: RecordState,
    pub company_code: String,
    pub call_start: Option<DateTime<Utc>>,
    /// The record as received; `{}` once erased.
    #[serde(skip)]
    pub raw_json: String,
    /// The archived object, when the call is archived.
    pub object: Option<ArchivedEntry>,
    /// The holds that keep it now.
    pub holds: Vec<HoldId>,
    /// The manifest that lists (or is being written to list) the call, if any; and whether
    /// that manifest is written.
    pub manifest_seq: Option<i64>,
    pub manifest_written: bool,
}

/// A hold being placed.
#[derive(Debug, Clone)]
pub struct NewHold<'a> {
    pub id: &'a HoldId,
    pub reason: &'a str,
    pub placed_by: &'a str,
    pub placed_at: DateTime<Utc>,
    /// The selection it was placed with (JSON), for the record.
    pub selection: &'a serde_json::Value,
}

/// One hold as `callvault holds` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct HoldSummary {
    pub id: HoldId,
    pub reason: String,
    pub placed_by: String,
    pub placed_at: DateTime<Utc>,
    pub selection: serde_json::Value,
    /// Calls it keeps now.
    pub calls_held: i64,
    /// Calls released from it.
    pub calls_released: i64,
    /// Held calls whose object-level hold could not be set (unsupported store, failed, no
    /// object yet): the ledger hold alone keeps them.
    pub ledger_only: i64,
}

/// A call released from a hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Released {
    pub uuid: CallUuid,
    pub hold: HoldId,
    /// Whether another hold still keeps the call (then its object-level hold stays).
    pub still_held: bool,
}

/// What stays of an erased call: what went, when, why and by whom; no personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tombstone {
    pub uuid: CallUuid,
    pub key: String,
    pub sidecar_key: String,
    pub sha256: String,
    pub size: u64,
    pub archived_at: Option<DateTime<Utc>>,
    pub erased_at: DateTime<Utc>,
    pub reason: String,
    pub erased_by: String,
    /// Object versions deleted (recording and sidecar, every version the bucket kept).
    pub versions_deleted: u64,
    /// The manifest that lists the erasure (`None` until the next one is written).
    pub manifest_seq: Option<i64>,
}

/// What recording an erasure in the ledger found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum EraseRecorded {
    Erased,
    /// A hold was placed meanwhile: the ledger row is left as it was.
    OnHold {
        holds: Vec<HoldId>,
    },
    /// Not archived (any more): nothing recorded.
    NotArchived {
        state: Option<RecordState>,
    },
    /// The manifest listing it is being written: try again once it is.
    ManifestBeingWritten {
        seq: i64,
    },
}

#[async_trait]
pub trait Holds: Send + Sync {
    /// What hold, erase and expire decide on for each of `uuids` (chosen by a
    /// [`super::CallQuery`]), by uuid; unknown uuids are left out.
    async fn call_facts(&self, uuids: &[CallUuid]) -> Result<Vec<CallFacts>, LedgerError>;

    /// Records a new hold (its calls are added by [`Holds::add_held_calls`]).
    async fn create_hold(&self, hold: &NewHold<'_>) -> Result<(), LedgerError>;

    /// Adds calls to a hold (a call already in it is left as it was).
    async fn add_held_calls(
        &self,
        hold: &HoldId,
        calls: &[(CallUuid, ObjectHold)],
    ) -> Result<(), LedgerError>;

    /// Releases `calls` from every hold that keeps them (or only from `hold`); says, for
    /// each released pair, whether another hold still keeps the call.
    async fn release_calls(
        &self,
        calls: &[CallUuid],
        hold: Option<&HoldId>,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Released>, LedgerError>;

    /// Holds, newest first: only those keeping a call now, or all.
    async fn holds(&self, include_released: bool) -> Result<Vec<HoldSummary>, LedgerError>;

    /// In one transaction: if the call is still archived, on no hold and in no manifest
    /// being written, writes its tombstone, blanks its personal fields and marks it erased.
    async fn record_erasure(&self, tombstone: &Tombstone) -> Result<EraseRecorded, LedgerError>;

    /// The tombstone of an erased call.
    async fn tombstone(&self, uuid: &CallUuid) -> Result<Option<Tombstone>, LedgerError>;

    /// Up to `limit` erasures manifest `seq` lists, after uuid `after`, by uuid.
    async fn manifest_erasures(
        &self,
        seq: i64,
        after: Option<&CallUuid>,
        limit: i64,
    ) -> Result<Vec<Tombstone>, LedgerError>;

    /// How many calls were erased, and how many erasures are in no manifest yet.
    async fn erasure_counts(&self) -> Result<(i64, i64), LedgerError>;
}

/// How many calls one statement reads, adds or releases (well under either engine's limit
/// on placeholders).
const CALLS_PER_STATEMENT: usize = 500;

const TOMBSTONE_COLUMNS: &str = "call_uuid, object_key, sidecar_key, sha256, size_bytes, \
     archived_at, erased_at, reason, erased_by, versions_deleted, manifest_seq";

/// The holds that keep call `c` now, as one text of hold ids separated by spaces.
macro_rules! holds_of_call {
    () => {
        "(SELECT string_agg(h.hold_id, ' ') FROM held_calls h
          WHERE h.account = c.account AND h.call_uuid = c.uuid
            AND h.released_at IS NULL) AS holds"
    };
}

/// What an erasure checks, for call `$1`; PostgreSQL locks the call's row as it reads it
/// (the manifest's state is read by a subquery: a row lock cannot reach into the nullable
/// side of an outer join), SQLite already holds its write lock.
macro_rules! erasure_check {
    ($lock:literal) => {
        concat!(
            "SELECT c.state, c.manifest_seq,
                    (SELECT m.state FROM manifests m
                     WHERE m.account = c.account AND m.seq = c.manifest_seq) AS manifest_state, ",
            holds_of_call!(),
            " FROM calls c WHERE c.account = $2 AND c.uuid = $1",
            $lock
        )
    };
}
const ERASURE_CHECK_SQLITE: &str = erasure_check!("");
const ERASURE_CHECK_POSTGRES: &str = erasure_check!(" FOR UPDATE");

/// The personal fields of an erased call blanked ($1 now, $2 uuid): the record as received
/// (numbers, names, agent ids), the file name, the provider's bill id, notes and errors that
/// may quote them. Kept: uuid, company, call start and billed seconds (counts and the
/// completeness report), and what was archived (key, size, SHA-256), as the tombstone keeps.
const BLANK_ERASED: &str =
    "UPDATE calls SET state = 'erased', raw_json = '{}', record_file = '', bill_id = NULL,
            notes = NULL, last_error = NULL, last_error_code = NULL, media_note = NULL,
            lease_owner = NULL, lease_until = NULL, updated_at = $1
     WHERE account = $3 AND uuid = $2";

#[async_trait]
impl<D: ChainHead> Holds for D {
    async fn call_facts(&self, uuids: &[CallUuid]) -> Result<Vec<CallFacts>, LedgerError> {
        // Sorted and without repeats, so that the chunks' rows come out by uuid, once each.
        let mut uuids: Vec<&CallUuid> = uuids.iter().collect();
        uuids.sort_unstable();
        uuids.dedup();
        let mut facts = Vec::with_capacity(uuids.len());
        for chunk in uuids.chunks(CALLS_PER_STATEMENT) {
            let sql = format!(
                concat!(
                    "SELECT c.uuid, c.state, c.company_code, c.call_start, c.raw_json,
                            c.object_key, c.size_bytes, c.sha256, c.archived_at, c.manifest_seq,
                            m.state AS manifest_state, ",
                    holds_of_call!(),
                    " FROM calls c
                     LEFT JOIN manifests m ON m.account = c.account AND m.seq = c.manifest_seq
                     WHERE c.account = $1 AND c.uuid IN ({}) ORDER BY c.uuid"
                ),
                params(2, chunk.len())
            );
            let stmt = Stmt::new(sql, "reading chosen calls").bind(self.account());
            let stmt = chunk.iter().fold(stmt, |s, u| s.bind(*u));
            for row in self.fetch_all(stmt).await? {
                facts.push(facts_from_row(&row)?);
            }
        }
        Ok(facts)
    }

    async fn create_hold(&self, hold: &NewHold<'_>) -> Result<(), LedgerError> {
        self.execute(
            Stmt::new(
                "INSERT INTO holds (id, reason, placed_by, placed_at, selection, account)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                "recording a hold",
            )
            .bind(hold.id.as_str())
            .bind(hold.reason)
            .bind(hold.placed_by)
            .bind(hold.placed_at)
            .bind(hold.selection.to_string())
            .bind(self.account()),
        )
        .await?;
        Ok(())
    }

    async fn add_held_calls(
        &self,
        hold: &HoldId,
        calls: &[(CallUuid, ObjectHold)],
    ) -> Result<(), LedgerError> {
        const CONTEXT: &str = "recording held calls";
        let mut tx = self.begin(CONTEXT).await?;
        for chunk in calls.chunks(CALLS_PER_STATEMENT) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, $1, ${}, ${}, $2)", 3 * i + 3, 3 * i + 4, 3 * i + 5))
                .collect();
            let sql = format!(
                "INSERT INTO held_calls (id, hold_id, call_uuid, object_hold, account) VALUES {}
                 ON CONFLICT (hold_id, call_uuid) DO NOTHING",
                values.join(", ")
            );
            let stmt = chunk.iter().fold(
                Stmt::new(sql, CONTEXT)
                    .bind(hold.as_str())
                    .bind(self.account()),
                |s, (uuid, object_hold)| {
                    s.bind(format!("{hold}:{uuid}"))
                        .bind(uuid)
                        .bind(object_hold.as_str())
                },
            );
            tx.execute(stmt).await?;
        }
        tx.commit().await
    }

    async fn release_calls(
        &self,
        calls: &[CallUuid],
        hold: Option<&HoldId>,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Released>, LedgerError> {
        let release = Release {
            hold,
            by,
            reason,
            now,
        };
        retry_conflicts(|| async {
            let mut tx = self.begin_write("releasing held calls").await?;
            let mut released = Vec::new();
            for chunk in calls.chunks(CALLS_PER_STATEMENT) {
                released.extend(release.chunk(&mut tx, chunk).await?);
            }
            tx.commit().await?;
            released.sort_by(|a, b| (&a.uuid, &a.hold).cmp(&(&b.uuid, &b.hold)));
            Ok(released)
        })
        .await
    }

    async fn holds(&self, include_released: bool) -> Result<Vec<HoldSummary>, LedgerError> {
        let rows = self
            .fetch_all(
                Stmt::new(
                    "SELECT h.id, h.reason, h.placed_by, h.placed_at, h.selection,
                            count(hc.id) FILTER (WHERE hc.released_at IS NULL) AS held,
                            count(hc.id) FILTER (WHERE hc.released_at IS NOT NULL) AS released,
                            count(hc.id) FILTER (WHERE hc.released_at IS NULL
                                                   AND hc.object_hold <> 'set') AS ledger_only
                     FROM holds h LEFT JOIN held_calls hc ON hc.hold_id = h.id
                     WHERE h.account = $2
                     GROUP BY h.id, h.reason, h.placed_by, h.placed_at, h.selection
                     HAVING $1 = 1 OR count(hc.id) FILTER (WHERE hc.released_at IS NULL) > 0
                     ORDER BY h.placed_at DESC, h.id DESC",
                    "listing holds",
                )
                .bind(i64::from(include_released))
                .bind(self.account()),
            )
            .await?;
        rows.iter().map(summary_from_row).collect()
    }

    async fn record_erasure(&self, t: &Tombstone) -> Result<EraseRecorded, LedgerError> {
        retry_conflicts(|| async {
            let mut tx = self.begin_chain_head().await?;
            let check = pick(self.dialect(), ERASURE_CHECK_SQLITE, ERASURE_CHECK_POSTGRES);
            let row = tx
                .fetch_optional(
                    Stmt::new(check, "reading a call to erase")
                        .bind(&t.uuid)
                        .bind(self.account()),
                )
                .await?;
            if let Some(refused) = erasure_refused(row.as_ref())? {
                return Ok(refused);
            }
            write_erasure(&mut tx, t).await?;
            tx.commit().await?;
            Ok(EraseRecorded::Erased)
        })
        .await
    }

    async fn tombstone(&self, uuid: &CallUuid) -> Result<Option<Tombstone>, LedgerError> {
        let row = self
            .fetch_optional(
                Stmt::new(
                    format!(
                        "SELECT {TOMBSTONE_COLUMNS} FROM tombstones
                         WHERE account = $2 AND call_uuid = $1"
                    ),
                    "reading a tombstone",
                )
                .bind(uuid)
                .bind(self.account()),
            )
            .await?;
        row.as_ref().map(tombstone_from_row).transpose()
    }

    async fn manifest_erasures(
        &self,
        seq: i64,
        after: Option<&CallUuid>,
        limit: i64,
    ) -> Result<Vec<Tombstone>, LedgerError> {
        let rows = self
            .fetch_all(
                Stmt::new(
                    format!(
                        "SELECT {TOMBSTONE_COLUMNS} FROM tombstones
                         WHERE account = $4 AND manifest_seq = $1
                           AND ($2 IS NULL OR call_uuid > $2)
                         ORDER BY call_uuid LIMIT $3"
                    ),
                    "listing a manifest's erasures",
                )
                .bind(seq)
                .bind(after.map(CallUuid::as_str))
                .bind(limit.max(0))
                .bind(self.account()),
            )
            .await?;
        rows.iter().map(tombstone_from_row).collect()
    }

    async fn erasure_counts(&self) -> Result<(i64, i64), LedgerError> {
        let row = self
            .fetch_one(
                Stmt::new(
                    "SELECT count(*) AS erased,
                            count(*) FILTER (WHERE manifest_seq IS NULL) AS unlisted
                     FROM tombstones WHERE account = $1",
                    "counting erasures",
                )
                .bind(self.account()),
            )
            .await?;
        Ok((row.int("erased")?, row.int("unlisted")?))
    }
}

/// A release being recorded: from which hold (or all), by whom, why, when.
struct Release<'a> {
    hold: Option<&'a HoldId>,
    by: &'a str,
    reason: &'a str,
    now: DateTime<Utc>,
}

impl Release<'_> {
    /// Releases `calls` in `tx`; says for each released pair whether another hold still
    /// keeps the call.
    async fn chunk<T: Tx>(
        &self,
        tx: &mut T,
        calls: &[CallUuid],
    ) -> Result<Vec<Released>, LedgerError> {
        const CONTEXT: &str = "releasing held calls";
        let sql = format!(
            "UPDATE held_calls SET released_at = $1, released_by = $2, release_reason = $3
             WHERE account = $5 AND call_uuid IN ({}) AND released_at IS NULL
               AND ($4 IS NULL OR hold_id = $4)
             RETURNING call_uuid, hold_id",
            params(6, calls.len())
        );
        let account = tx.account().to_owned();
        let stmt = Stmt::new(sql, CONTEXT)
            .bind(self.now)
            .bind(self.by)
            .bind(self.reason)
            .bind(self.hold.map(HoldId::as_str))
            .bind(&account);
        let rows = tx.fetch_all(calls.iter().fold(stmt, Stmt::bind)).await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT DISTINCT call_uuid FROM held_calls
             WHERE account = $1 AND call_uuid IN ({}) AND released_at IS NULL",
            params(2, calls.len())
        );
        let stmt = Stmt::new(sql, CONTEXT).bind(&account);
        let still = tx
            .fetch_all(calls.iter().fold(stmt, Stmt::bind))
            .await?
            .iter()
            .map(|row| row.text("call_uuid"))
            .collect::<Result<HashSet<_>, _>>()?;
        rows.iter()
            .map(|row| {
                let uuid = row.text("call_uuid")?;
                Ok(Released {
                    still_held: still.contains(&uuid),
                    uuid: row.uuid("call_uuid")?,
                    hold: hold_id(&row.text("hold_id")?)?,
                })
            })
            .collect()
    }
}

/// Why the erasure the check's `row` (of the call, if it has one) reads may not be
/// recorded, if it may not.
fn erasure_refused(row: Option<&impl Row>) -> Result<Option<EraseRecorded>, LedgerError> {
    let Some(row) = row else {
        return Ok(Some(EraseRecorded::NotArchived { state: None }));
    };
    let state = row.state("state")?;
    if state != RecordState::Archived {
        return Ok(Some(EraseRecorded::NotArchived { state: Some(state) }));
    }
    let holds = hold_list(row.opt_text("holds")?)?;
    if !holds.is_empty() {
        return Ok(Some(EraseRecorded::OnHold { holds }));
    }
    if row.opt_text("manifest_state")?.as_deref() == Some("writing") {
        return Ok(Some(EraseRecorded::ManifestBeingWritten {
            seq: row.opt_int("manifest_seq")?.unwrap_or_default(),
        }));
    }
    Ok(None)
}

/// Writes the tombstone and blanks the call's personal fields.
async fn write_erasure<T: Tx>(tx: &mut T, t: &Tombstone) -> Result<(), LedgerError> {
    tx.execute(
        Stmt::new(
            format!(
                "INSERT INTO tombstones ({TOMBSTONE_COLUMNS}, account)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, $11)"
            ),
            "writing a tombstone",
        )
        .bind(&t.uuid)
        .bind(&t.key)
        .bind(&t.sidecar_key)
        .bind(&t.sha256)
        .bind(t.size)
        .bind(t.archived_at)
        .bind(t.erased_at)
        .bind(&t.reason)
        .bind(&t.erased_by)
        .bind(t.versions_deleted)
        .bind(tx.account().to_owned()),
    )
    .await?;
    tx.execute(
        Stmt::new(BLANK_ERASED, "blanking an erased call")
            .bind(t.erased_at)
            .bind(&t.uuid)
            .bind(tx.account().to_owned()),
    )
    .await?;
    Ok(())
}

fn hold_id(raw: &str) -> Result<HoldId, LedgerError> {
    HoldId::parse(raw).ok_or_else(|| LedgerError::Corrupt(format!("hold id {raw:?}")))
}

/// The hold ids in `raw` (separated by spaces), sorted.
fn hold_list(raw: Option<String>) -> Result<Vec<HoldId>, LedgerError> {
    let mut holds = raw
        .unwrap_or_default()
        .split_whitespace()
        .map(hold_id)
        .collect::<Result<Vec<_>, _>>()?;
    holds.sort();
    Ok(holds)
}

fn summary_from_row(row: &impl Row) -> Result<HoldSummary, LedgerError> {
    let selection = row.text("selection")?;
    Ok(HoldSummary {
        id: hold_id(&row.text("id")?)?,
        reason: row.text("reason")?,
        placed_by: row.text("placed_by")?,
        placed_at: row.time("placed_at")?,
        selection: serde_json::from_str(&selection).unwrap_or(serde_json::Value::String(selection)),
        calls_held: row.int("held")?,
        calls_released: row.int("released")?,
        ledger_only: row.int("ledger_only")?,
    })
}

fn facts_from_row(row: &impl Row) -> Result<CallFacts, LedgerError> {
    let uuid = row.uuid("uuid")?;
    let state = row.state("state")?;
    let object = match (
        row.opt_text("object_key")?,
        row.opt_int("size_bytes")?,
        row.opt_text("sha256")?,
        row.opt_time("archived_at")?,
    ) {
        (Some(key), Some(size), Some(sha256), Some(archived_at))
            if state == RecordState::Archived =>
        {
            Some(ArchivedEntry {
                uuid: uuid.clone(),
                key,
                size: u64::try_from(size).unwrap_or(0),
                sha256,
                archived_at,
            })
        }
        _ => None,
    };
    Ok(CallFacts {
        state,
        company_code: row.text("company_code")?,
        call_start: row.opt_time("call_start")?,
        raw_json: row.text("raw_json")?,
        object,
        holds: hold_list(row.opt_text("holds")?)?,
        manifest_seq: row.opt_int("manifest_seq")?,
        manifest_written: row.opt_text("manifest_state")?.as_deref() == Some("written"),
        uuid,
    })
}

fn tombstone_from_row(row: &impl Row) -> Result<Tombstone, LedgerError> {
    Ok(Tombstone {
        uuid: row.uuid("call_uuid")?,
        key: row.text("object_key")?,
        sidecar_key: row.text("sidecar_key")?,
        sha256: row.text("sha256")?,
        size: u64::try_from(row.int("size_bytes")?).unwrap_or(0),
        archived_at: row.opt_time("archived_at")?,
        erased_at: row.time("erased_at")?,
        reason: row.text("reason")?,
        erased_by: row.text("erased_by")?,
        versions_deleted: u64::try_from(row.int("versions_deleted")?).unwrap_or(0),
        manifest_seq: row.opt_int("manifest_seq")?,
    })
}
