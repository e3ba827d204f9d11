//! Which account's call a page's address names, for the user asking. A user sees only the
//! calls of its accounts: a call of another account answers exactly as an unknown call
//! does (the page cannot be used to learn that a uuid exists elsewhere), and the attempt is
//! appended to the access log as `refused`, in the log of the account it aimed at (so that
//! account's officers see who tried), or in the user's own accounts' logs when the address
//! names no account served here.

use super::{Ui, User, uuid_from_path};
use crate::accounts::AccountName;
use crate::domain::CallUuid;
use crate::ledger::{AccessAction, LedgerError};

/// Why an address leads to no call the user may see.
pub(crate) enum Miss {
    /// Not a call id at all (path-like, blank).
    BadId,
    /// No such call among the user's accounts: unknown, another account's, or (an old
    /// link) in several of the user's accounts.
    NotFound,
    /// The ledger does not answer.
    Unavailable,
}

/// `/ui/calls/<account>/<uuid>…`: the call, when `account` is one of the user's. `what` is
/// what was asked (`call`, `audio`, `download`), for the access log.
pub(crate) async fn named(
    ui: &Ui,
    user: &User,
    raw_account: &str,
    raw_uuid: &str,
    what: &str,
) -> Result<(AccountName, CallUuid), Miss> {
    let uuid = uuid_from_path(raw_uuid).ok_or(Miss::BadId)?;
    let account = AccountName::parse(raw_account).ok();
    if let Some(mine) = account.as_ref().filter(|a| user.accounts.contains(a)) {
        return Ok((mine.clone(), uuid));
    }
    let aimed = account
        .filter(|a| ui.accounts.contains_key(a))
        .map_or_else(|| user.accounts.clone(), |a| vec![a]);
    let query = format!("{what} {raw_account}/{} (another account's)", uuid.as_str());
    refused(ui, user, &aimed, query, &uuid).await;
    Err(Miss::NotFound)
}

/// `/ui/calls/<uuid>…`, a link from before accounts: the call, when exactly one of the
/// user's accounts holds the uuid. When only other accounts hold it, the attempt is logged
/// in theirs.
pub(crate) async fn unnamed(
    ui: &Ui,
    user: &User,
    raw_uuid: &str,
    what: &str,
) -> Result<(AccountName, CallUuid), Miss> {
    let uuid = uuid_from_path(raw_uuid).ok_or(Miss::BadId)?;
    let holders = holders(ui, &uuid).await.map_err(|e| {
        tracing::error!(error = %e, "cannot look a call up for the web page");
        Miss::Unavailable
    })?;
    let (mine, others): (Vec<_>, Vec<_>) =
        holders.into_iter().partition(|a| user.accounts.contains(a));
    match mine.as_slice() {
        [one] => Ok((one.clone(), uuid)),
        [] if !others.is_empty() => {
            let query = format!("{what} {} (another account's)", uuid.as_str());
            refused(ui, user, &others, query, &uuid).await;
            Err(Miss::NotFound)
        }
        _ => Err(Miss::NotFound),
    }
}

/// The accounts served here whose ledger holds `uuid`.
async fn holders(ui: &Ui, uuid: &CallUuid) -> Result<Vec<AccountName>, LedgerError> {
    let served: Vec<AccountName> = ui.accounts.keys().cloned().collect();
    ui.sessions.accounts_holding(uuid, &served).await
}

/// Logs a refused attempt in each of `accounts`' logs. The answer does not wait on it
/// succeeding: a failure here must not answer differently from an unknown call.
async fn refused(ui: &Ui, user: &User, accounts: &[AccountName], query: String, uuid: &CallUuid) {
    tracing::warn!(user = %user.name, from = %user.from, %query, "refused a call of another account");
    for account in accounts {
        let logged = ui
            .log(
                account,
                user.name.as_str(),
                user.from,
                AccessAction::Refused,
                Some(query.clone()),
                vec![uuid.clone()],
            )
            .await;
        if let Err(e) = logged {
            tracing::error!(error = %e, "cannot log a refused attempt in the access log");
        }
    }
}
