//! The `callvault` binary: parse, start telemetry, hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = callvault::cli::Cli::parse();
    callvault::telemetry::init(cli.log_format, &cli.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("callvault: cannot start the async runtime: {e}");
            return ExitCode::from(callvault::app::EXIT_INCOMPLETE);
        }
    };
    runtime.block_on(callvault::app::dispatch(cli))
}
