//! `house-price-api` binary: parse the command line, install telemetry, run.

use std::process::ExitCode;

use clap::Parser;
use house_price_api::config::Cli;
use house_price_api::{run_cli, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_tracing(cli.telemetry.log_format);
    match run_cli(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "fatal");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
