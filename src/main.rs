//! `house-price-api` binary: read `.env`, parse the command line, install telemetry, run.

use std::process::ExitCode;

use clap::Parser;
use house_price_api::config::Cli;
use house_price_api::{run_cli, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    // `.env` (see `.env.example`) fills in what the environment does not already set.
    let dotenv = dotenvy::dotenv().err().filter(|err| !err.not_found());
    let cli = Cli::parse();
    telemetry::init_tracing(cli.telemetry.log_format);
    if let Some(err) = dotenv {
        tracing::warn!(error = %err, ".env was not read");
    }
    match run_cli(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "fatal");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
