//! The accounts that have rows in the ledger, whatever the settings declare, and moving one
//! account's rows to another name (`callvault accounts rename`, for instance when a
//! deployment that ran as the one account `default` starts naming its accounts).
//!
//! These are the ledger's only operations not scoped to the handle's account: they read or
//! change the account column itself. A rename is one transaction over every table that
//! carries the column; the references between them (a call's attempts, holds, tombstones,
//! search terms) are checked at its commit, when both ends carry the new name (SQLite:
//! `defer_foreign_keys`; PostgreSQL: the constraints are deferrable, see the migration
//! `20261207030000_account_rename`).

use async_trait::async_trait;
use serde::Serialize;

use super::LedgerError;
use super::sql::{Db, Row, Stmt, Tx, params, pick};
use crate::accounts::AccountName;
use crate::domain::CallUuid;

/// Every table with an `account` column, parents before children.
const TABLES: [&str; 16] = [
    "calls",
    "attempts",
    "call_terms",
    "call_terms_stale",
    "call_takeovers",
    "held_calls",
    "tombstones",
    "access_log",
    "access_log_calls",
    "runs",
    "syncs",
    "verifications",
    "holds",
    "manifests",
    "log_nodes",
    "checkpoint_stamps",
];

/// What a rename did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Renamed {
    /// The rows moved: this many calls (and everything about them).
    Moved { calls: u64, rows: u64 },
    /// The new name already has calls or manifests: nothing moved (two accounts' calls are
    /// never merged).
    TargetInUse,
    /// The old name has no rows.
    NothingToMove,
}

#[async_trait]
pub trait AccountRows: Send + Sync {
    /// Every account with calls in the ledger, with how many, by name.
    async fn accounts_with_calls(&self) -> Result<Vec<(String, u64)>, LedgerError>;

    /// Which of `among` hold the call `uuid` (a uuid is unique within an account only), in
    /// `among`'s order: one statement, an index probe per account.
    async fn accounts_holding(
        &self,
        uuid: &CallUuid,
        among: &[AccountName],
    ) -> Result<Vec<AccountName>, LedgerError>;

    /// Moves every row of account `from` to `to`, in one transaction.
    async fn rename_account(
        &self,
        from: &AccountName,
        to: &AccountName,
    ) -> Result<Renamed, LedgerError>;
}

#[async_trait]
impl<D: Db> AccountRows for D {
    async fn accounts_with_calls(&self) -> Result<Vec<(String, u64)>, LedgerError> {
        // The per-state counts the triggers keep: no walk over the calls.
        let counts = pick(self.dialect(), "state_counts", "state_count_deltas");
        let rows = self
            .fetch_all(Stmt::new(
                format!(
                    "SELECT account, CAST(sum(n) AS bigint) AS n FROM {counts}
                     GROUP BY account HAVING sum(n) > 0 ORDER BY account"
                ),
                "listing the accounts with calls",
            ))
            .await?;
        rows.iter()
            .map(|r| Ok((r.text("account")?, r.count("n")?)))
            .collect()
    }

    async fn accounts_holding(
        &self,
        uuid: &CallUuid,
        among: &[AccountName],
    ) -> Result<Vec<AccountName>, LedgerError> {
        if among.is_empty() {
            return Ok(Vec::new());
        }
        let mut stmt = Stmt::new(
            format!(
                "SELECT account FROM calls WHERE uuid = $1 AND account IN ({})",
                params(2, among.len())
            ),
            "finding the accounts that hold a call",
        )
        .bind(uuid);
        for account in among {
            stmt = stmt.bind(account.as_str());
        }
        let found: Vec<String> = self
            .fetch_all(stmt)
            .await?
            .iter()
            .map(|r| r.text("account"))
            .collect::<Result<_, _>>()?;
        Ok(among
            .iter()
            .filter(|a| found.iter().any(|f| f == a.as_str()))
            .cloned()
            .collect())
    }

    async fn rename_account(
        &self,
        from: &AccountName,
        to: &AccountName,
    ) -> Result<Renamed, LedgerError> {
        let mut tx = self.begin_write("renaming an account").await?;
        let defer = pick(
            self.dialect(),
            "PRAGMA defer_foreign_keys = ON",
            "SET CONSTRAINTS ALL DEFERRED",
        );
        tx.execute(Stmt::new(defer, "deferring the reference checks"))
            .await?;
        if !has_rows(&mut tx, from).await? {
            return Ok(Renamed::NothingToMove);
        }
        if has_rows(&mut tx, to).await? {
            return Ok(Renamed::TargetInUse);
        }
        let counts = pick(self.dialect(), "state_counts", "state_count_deltas");
        let (mut calls, mut rows) = (0, 0);
        for table in TABLES.iter().copied().chain([counts]) {
            let moved = tx
                .execute(
                    Stmt::new(
                        format!("UPDATE {table} SET account = $1 WHERE account = $2"),
                        "moving an account's rows",
                    )
                    .bind(to.as_str())
                    .bind(from.as_str()),
                )
                .await?;
            if table == "calls" {
                calls = moved;
            }
            rows += moved;
        }
        tx.commit().await?;
        Ok(Renamed::Moved { calls, rows })
    }
}

/// Whether `account` has calls or manifests: what two accounts cannot share (a uuid, a
/// chain's sequence). Its runs and syncs alone (a run that found nothing) do not count.
async fn has_rows(tx: &mut impl Tx, account: &AccountName) -> Result<bool, LedgerError> {
    let row = tx
        .fetch_one(
            Stmt::new(
                "SELECT CAST(CASE WHEN EXISTS (SELECT 1 FROM calls WHERE account = $1)
                          OR EXISTS (SELECT 1 FROM manifests WHERE account = $1)
                        THEN 1 ELSE 0 END AS bigint) AS used",
                "looking for an account's rows",
            )
            .bind(account.as_str()),
        )
        .await?;
    Ok(row.int("used")? == 1)
}
