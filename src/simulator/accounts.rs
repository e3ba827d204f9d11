//! The provider accounts one simulator serves, as a BPO's provider serves its clients: each
//! with its own `appid` and `accesskey`, company, recordings, calls and bill list. A token
//! belongs to the account that logged in, and every service answers from that account's
//! records only: another account's recording is, to it, a file that does not exist (the
//! provider's `1002`), and its bill list never names another account's calls.
//!
//! The account the simulator starts with ([`super::SimulatorConfig`]) is the default one,
//! which the [`Simulator`]'s own recording and call methods work on; more are added with
//! [`Simulator::add_account`].

use std::collections::HashMap;

use super::bills::SimCall;
use super::{Simulator, callbacks, recordings};

/// One provider account: what its customer logs in with, and its company.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountConfig {
    pub appid: String,
    pub accesskey: String,
    pub company_code: String,
}

/// What the provider keeps for one account.
#[derive(Debug)]
pub(super) struct AccountState {
    pub config: AccountConfig,
    /// filename -> size in bytes
    pub recordings: HashMap<String, u64>,
    /// Every call the account's company made, as its bill.
    pub calls: Vec<SimCall>,
    pub next_call_id: u64,
}

impl AccountState {
    pub fn new(config: AccountConfig) -> Self {
        Self {
            config,
            recordings: HashMap::new(),
            calls: Vec::new(),
            next_call_id: 1,
        }
    }
}

/// Which account of the simulator: an index into its accounts, the default one first.
pub(super) type AccountIndex = usize;

/// One account of a running simulator; clones share it.
#[derive(Debug, Clone)]
pub struct ProviderAccount {
    sim: Simulator,
    index: AccountIndex,
}

impl Simulator {
    /// Serves another provider account, with its own credentials, recordings and bill list.
    /// An `appid` already served is refused (`None`): the provider tells accounts apart by it.
    pub fn add_account(&self, config: AccountConfig) -> Option<ProviderAccount> {
        let mut state = self.shared.lock();
        if state
            .accounts
            .iter()
            .any(|a| a.config.appid == config.appid)
        {
            return None;
        }
        state.accounts.push(AccountState::new(config));
        Some(ProviderAccount {
            sim: self.clone(),
            index: state.accounts.len() - 1,
        })
    }

    /// The account the simulator started with (its [`super::SimulatorConfig`]'s).
    pub fn default_account(&self) -> ProviderAccount {
        ProviderAccount {
            sim: self.clone(),
            index: 0,
        }
    }
}

impl ProviderAccount {
    pub fn config(&self) -> AccountConfig {
        self.with(|a| a.config.clone())
    }

    pub fn appid(&self) -> String {
        self.with(|a| a.config.appid.clone())
    }

    pub fn accesskey(&self) -> String {
        self.with(|a| a.config.accesskey.clone())
    }

    fn with<T>(&self, f: impl FnOnce(&mut AccountState) -> T) -> T {
        f(&mut self.sim.shared.lock().accounts[self.index])
    }

    /// Makes `filename` downloadable by this account with `size` bytes of deterministic
    /// content.
    pub fn add_recording(&self, filename: &str, size: u64) {
        self.with(|a| a.recordings.insert(filename.to_owned(), size));
    }

    /// Later `GetRecodeFile` answers "file does not exist"; existing links answer 404.
    pub fn remove_recording(&self, filename: &str) {
        self.with(|a| a.recordings.remove(filename));
    }

    /// Hex SHA-256 of a registered recording (generated on the spot: slow for huge files).
    pub fn expected_sha256(&self, filename: &str) -> Option<String> {
        let size = self.with(|a| a.recordings.get(filename).copied())?;
        Some(recordings::expected_sha256(filename, size))
    }

    /// Registers `n` sample recordings of this account and returns their call-record
    /// callbacks (see `callbacks::sample_calls`); every 5th call is unanswered and has no
    /// recording. The calls are in the account's bill list too.
    pub fn sample_callbacks(
        &self,
        n: usize,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<serde_json::Value> {
        self.with(|a| {
            let calls = callbacks::sample_calls(&a.config.company_code, n, now, a.next_call_id);
            a.next_call_id += n as u64;
            calls
                .into_iter()
                .map(|call| {
                    if let Some((name, size)) = call.recording {
                        a.recordings.insert(name, size);
                    }
                    if let Some(bill) = SimCall::from_callback(&call.callback, now) {
                        a.calls.push(bill);
                    }
                    call.callback
                })
                .collect()
        })
    }

    /// Puts the call `callback` describes (it needs an `id`) into the account's bill list,
    /// listed as having started at `started` when its own `starttime` is empty or
    /// unreadable. Returns whether it was added.
    pub fn add_call(
        &self,
        callback: &serde_json::Value,
        started: chrono::DateTime<chrono::Utc>,
    ) -> bool {
        let Some(call) = SimCall::from_callback(callback, started) else {
            return false;
        };
        self.with(|a| {
            a.next_call_id = a.next_call_id.max(call.id + 1);
            a.calls.push(call);
        });
        true
    }

    /// Changes the bill of call `id` as the provider would show it (a field missing, a
    /// number as a string, an empty time).
    pub fn edit_bill(
        &self,
        id: u64,
        edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
    ) {
        self.with(|a| {
            if let Some(call) = a.calls.iter_mut().find(|c| c.id == id) {
                edit(&mut call.bill);
            }
        });
    }

    /// A fresh call id of this account, for tests that write their own callbacks.
    pub fn next_call_id(&self) -> u64 {
        self.with(|a| {
            let id = a.next_call_id;
            a.next_call_id += 1;
            id
        })
    }
}
