//! `house-price-api` binary: read `.env`, parse the command line, install telemetry, run.

use std::process::ExitCode;

use clap::Parser;
use house_price_api::config::{Cli, load_dotenv};
use house_price_api::{run_cli, telemetry};

/// Every request allocates many small, short-lived objects (parsed documents, JSON values,
/// response trees); mimalloc serves them faster than glibc's allocator (see bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Before the runtime starts its threads: loading `.env` sets environment variables.
    let dotenv = load_dotenv();
    let cli = Cli::parse();
    // Dropped last, after the runtime: flushes the spans not yet exported.
    let _traces = telemetry::init_tracing(&cli.telemetry);
    for (old, new) in cli.telemetry.deprecations() {
        tracing::warn!(setting = old, replacement = new, "{old} is deprecated and will be removed: set {new} instead");
    }
    if let Some(err) = dotenv {
        tracing::warn!(error = %err, ".env was not read");
    }
    let result =
        tokio::runtime::Runtime::new().map_err(anyhow::Error::from).and_then(|runtime| runtime.block_on(run_cli(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "fatal");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
