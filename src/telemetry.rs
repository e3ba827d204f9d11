//! Logs through tracing on standard error: human-readable by default, JSON for collectors.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// PostgreSQL's notices ("relation … already exists, skipping" on every open) are kept
/// below warnings unless the filter names sqlx itself.
const QUIET_NOTICES: &str = "sqlx::postgres::notice=warn";

pub fn init(format: LogFormat, filter: &str) {
    let filter = if filter.contains("sqlx") {
        filter.to_owned()
    } else {
        format!("{filter},{QUIET_NOTICES}")
    };
    let filter = EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET_NOTICES}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Human => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
