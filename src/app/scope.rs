//! Which accounts a command over calls works on (`find`, `get`, `hold`, `erase`, `verify`,
//! …), each with its own view of the ledger and, for the commands that read or change
//! objects, its own store; and, for a call named by a bare uuid, which account it is in.
//!
//! A command works on the accounts named with `--account`, else on every declared one. A
//! uuid is only unique within an account: when one named on the command line is in several
//! of the accounts at hand, the command does nothing and asks for `--account` (exit 2,
//! naming them), because acting on the wrong client's call (erasing it, giving it out) is
//! worse than asking.

use serde::Serialize;

use super::accounts::{Account, TopLevel, accounts};
use super::wiring::{open_ledger, open_store};
use crate::accounts::AccountName;
use crate::cli::{AccountArgs, ArchiveStoreArgs};
use crate::config::{CommonSettings, ConfigError};
use crate::domain::CallUuid;
use crate::ledger::Ledger;
use crate::store::Store;

/// One account a command works on.
pub struct Scope {
    pub account: Account,
    /// The ledger as this account's rows.
    pub ledger: Ledger,
}

impl Scope {
    pub fn name(&self) -> &AccountName {
        &self.account.name
    }

    /// This account's store, opened (not yet asked whether it answers).
    pub fn store(&self) -> Result<Store, ConfigError> {
        open_store(&self.account.store_config()?)
    }
}

/// The accounts a command works on, in the settings file's order.
pub struct Scopes {
    /// The ledger itself (closed when the command is done).
    ledger: Ledger,
    pub all: Vec<Scope>,
}

impl Scopes {
    /// Opens the ledger for the accounts `chosen` names (all when it names none); `store`
    /// is the command's store settings, for the commands that have a store.
    pub async fn open(
        common: &CommonSettings,
        chosen: &AccountArgs,
        store: Option<&ArchiveStoreArgs>,
    ) -> anyhow::Result<Self> {
        let top = TopLevel {
            provider: None,
            store,
            callback: None,
        };
        let chosen = accounts(common, &top, chosen)?;
        let ledger = open_ledger(&common.ledger).await?;
        let all = chosen
            .into_iter()
            .map(|account| Scope {
                ledger: ledger.scoped(&account.name),
                account,
            })
            .collect();
        Ok(Self { ledger, all })
    }

    /// More than one account is at hand (the output then names each one's part).
    pub fn several(&self) -> bool {
        self.all.len() > 1
    }

    /// Which account holds each of `uuids`: each account at hand with the uuids found in
    /// it, in the accounts' order; uuids in none go with the first account (which reports
    /// them unknown, as a single-account ledger always has). A uuid in several accounts is
    /// a configuration error naming them.
    pub async fn owners<'a>(
        &'a self,
        uuids: &[CallUuid],
    ) -> anyhow::Result<Vec<(&'a Scope, Vec<CallUuid>)>> {
        let names: Vec<AccountName> = self.all.iter().map(|s| s.name().clone()).collect();
        let mut owned: Vec<(&Scope, Vec<CallUuid>)> =
            self.all.iter().map(|s| (s, vec![])).collect();
        for uuid in uuids {
            let holders = self.ledger.accounts_holding(uuid, &names).await?;
            let at = |name: &AccountName| names.iter().position(|n| n == name).unwrap_or(0);
            match holders.as_slice() {
                [] => owned[0].1.push(uuid.clone()),
                [one] => owned[at(one)].1.push(uuid.clone()),
                several => return Err(ambiguous(uuid, several).into()),
            }
        }
        Ok(owned.into_iter().filter(|(_, u)| !u.is_empty()).collect())
    }

    /// The accounts a command acting on the calls `uuids` works in: those holding them
    /// (see [`Scopes::owners`]), or every one when it names none.
    pub async fn acting(&self, uuids: &[CallUuid]) -> anyhow::Result<Vec<&Scope>> {
        if uuids.is_empty() {
            return Ok(self.all.iter().collect());
        }
        Ok(self
            .owners(uuids)
            .await?
            .into_iter()
            .map(|(s, _)| s)
            .collect())
    }

    pub async fn close(self) {
        self.ledger.close().await;
    }
}

fn ambiguous(uuid: &CallUuid, holders: &[AccountName]) -> ConfigError {
    let names: Vec<&str> = holders.iter().map(AccountName::as_str).collect();
    ConfigError(format!(
        "call {uuid} is in {} accounts ({}): name the one you mean with --account",
        names.len(),
        names.join(", ")
    ))
}

/// `value` as JSON with its account named: `{"account": …, …}` for an object, else
/// `{"account": …, "value": …}`.
pub fn with_account(value: &impl Serialize, account: &AccountName) -> serde_json::Value {
    let mut named = serde_json::json!({ "account": account });
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(fields)) => {
            if let Some(map) = named.as_object_mut() {
                map.extend(fields);
            }
        }
        Ok(other) => named["value"] = other,
        Err(e) => named["error"] = e.to_string().into(),
    }
    named
}
