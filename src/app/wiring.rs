//! Opening what the settings name: the ledger, the store, the provider client and the
//! downloader, put together as the dependencies of a pass. A command's ledger is opened
//! here and nowhere else (`demo` makes its own).

use std::sync::Arc;

use crate::archive::Deps;
use crate::config::{ConfigError, LedgerSettings, PassSettings};
use crate::ledger::Ledger;
use crate::provider::{Downloader, ProviderClient};
use crate::store::{Store, StoreConfig};

/// Opens the ledger; a ledger that cannot be opened is a configuration error.
pub async fn open_ledger(settings: &LedgerSettings) -> Result<Ledger, ConfigError> {
    Ledger::open_with(&settings.url, settings.busy_timeout)
        .await
        .map_err(|e| ConfigError(e.to_string()))
}

pub fn open_store(config: &StoreConfig) -> Result<Store, ConfigError> {
    Store::open(config).map_err(|e| ConfigError(e.to_string()))
}

/// Opens everything a run talks to.
pub async fn build_deps(
    ledger: &LedgerSettings,
    settings: PassSettings,
) -> Result<Deps, ConfigError> {
    let store = open_store(&settings.store)?;
    let downloader =
        Downloader::new(settings.downloader).map_err(|e| ConfigError(e.to_string()))?;
    let provider =
        Arc::new(ProviderClient::new(settings.provider).map_err(|e| ConfigError(e.to_string()))?);
    let ledger = open_ledger(ledger).await?;
    Ok(Deps {
        ledger,
        provider,
        downloader,
        store,
        keys: settings.keys,
    })
}
