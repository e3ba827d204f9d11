//! The `callvault` binary: parse, start telemetry, hand over to the library.

use std::process::ExitCode;

use callvault::cli::CliError;

fn main() -> ExitCode {
    let cli = match callvault::cli::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(CliError::Usage(err)) => err.exit(),
        Err(CliError::Config(err)) => {
            eprintln!("callvault: {err}");
            return ExitCode::from(callvault::app::EXIT_CONFIG);
        }
    };
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
