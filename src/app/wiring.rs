//! Opening what the settings name: the ledger, the store, the provider client and the
//! downloader, put together as the dependencies of a pass. A command's ledger is opened
//! here and nowhere else (`demo` makes its own).

use std::sync::Arc;

use crate::archive::Deps;
use crate::config::{ConfigError, LedgerSettings, PassSettings};
use crate::ledger::{Ledger, LedgerOptions};
use crate::provider::{Downloader, ProviderClient};
use crate::store::{Store, StoreConfig};

/// Opens the ledger with the default pool.
pub async fn open_ledger(settings: &LedgerSettings) -> anyhow::Result<Ledger> {
    open_ledger_sized(settings, LedgerOptions::default().max_connections).await
}

/// Opens the ledger with at most `max_connections` PostgreSQL connections. A ledger that
/// cannot be reached is worth trying again later (exit 1); any other failure to open it
/// (a bad URL, refused credentials, a schema it cannot migrate) is a configuration error
/// (exit 2).
pub async fn open_ledger_sized(
    settings: &LedgerSettings,
    max_connections: u32,
) -> anyhow::Result<Ledger> {
    let options = LedgerOptions {
        busy_timeout: settings.busy_timeout,
        max_connections,
    };
    match Ledger::open_with(settings.location.expose(), &options).await {
        Ok(ledger) => Ok(ledger),
        // Named as it may be shown: the password hidden.
        Err(e) if e.is_unavailable() => Err(anyhow::Error::new(e).context(format!(
            "opening the ledger {} (try again once it is up)",
            settings.location
        ))),
        Err(e) => Err(ConfigError(e.to_string()).into()),
    }
}

pub fn open_store(config: &StoreConfig) -> Result<Store, ConfigError> {
    Store::open(config).map_err(|e| ConfigError(e.to_string()))
}

/// Opens everything a pass talks to, on `ledger` (scoped to the pass's account).
pub fn build_deps(
    ledger: Ledger,
    settings: PassSettings,
    prover: crate::proof::Prover,
) -> anyhow::Result<Deps> {
    let store = open_store(&settings.store)?;
    let downloader =
        Downloader::new(settings.downloader).map_err(|e| ConfigError(e.to_string()))?;
    let provider =
        Arc::new(ProviderClient::new(settings.provider).map_err(|e| ConfigError(e.to_string()))?);
    Ok(Deps {
        ledger,
        provider,
        downloader,
        store,
        keys: settings.keys,
        prover,
        clock: crate::clock::Clock::system(),
    })
}
