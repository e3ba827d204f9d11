//! The `callvault` binary: parse, start telemetry, hand over to the library.

use std::process::ExitCode;

use callvault::app::CliError;

fn main() -> ExitCode {
    let invocation = match callvault::app::parse(std::env::args_os().collect()) {
        Ok(invocation) => invocation,
        Err(CliError::Usage(err)) => err.exit(),
        Err(CliError::Config(err)) => {
            eprintln!("callvault: {err}");
            return ExitCode::from(callvault::app::EXIT_CONFIG);
        }
    };
    callvault::telemetry::init(invocation.cli.log_format, &invocation.log_filter);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("callvault: cannot start the async runtime: {e}");
            return ExitCode::from(callvault::app::EXIT_INCOMPLETE);
        }
    };
    runtime.block_on(callvault::app::dispatch(invocation))
}
