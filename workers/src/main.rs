//! `hookrelay-worker`: parse the command line, load settings, wire the shutdown signal, run.

use clap::Parser;
use hookrelay_worker::cli::Cli;
use hookrelay_worker::settings::Settings;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hookrelay-worker: {e}");
            return ExitCode::from(2);
        }
    };
    hookrelay_common::logging::init(&settings.log);
    let shutdown = match hookrelay_worker::shutdown_signal() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hookrelay-worker: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    match hookrelay_worker::run(cli.command, settings, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "hookrelay-worker failed");
            eprintln!("hookrelay-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
