//! The `hookrelay` binary: only wiring. Everything else is library code.

use clap::{Parser, Subcommand};
use hookrelay::settings::{AckMode, Settings, Validated};
use hookrelay::startup::Application;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "hookrelay",
    version,
    about = "Chat-platform webhooks in, CloudEvents on RabbitMQ out"
)]
struct Cli {
    /// Configuration file layered over config/default.toml (env HOOKRELAY_CONFIG).
    #[arg(long, global = true, env = "HOOKRELAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (the default).
    Serve,
    /// Validate the configuration; exit 0 when it is usable, 1 with the reason otherwise.
    CheckConfig,
    /// POST a JSON file to a running relay, authenticated as SOURCE's vendor would.
    Send {
        source: String,
        file: PathBuf,
        /// Full URL (default: http://<server.bind>/webhooks/SOURCE).
        #[arg(long)]
        url: Option<String>,
    },
    /// Probe a running relay's /readyz; exit 0 when ready (for container healthchecks).
    Healthcheck {
        /// Full URL (default: http://<server.bind>/readyz).
        #[arg(long)]
        url: Option<String>,
    },
}

fn load(config: Option<&std::path::Path>) -> Result<Validated, String> {
    Settings::load(config)
        .and_then(Settings::validate)
        .map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn describe(v: &Validated) -> String {
    let mut out = format!(
        "configuration OK\n  server.bind = {}\n  amqp.exchange = {}\n  amqp.uri = {} node(s)\n  durability.ack = {}\n  spool.dir = {} ({})\n  sources:\n",
        v.bind,
        v.raw.amqp.exchange,
        v.raw.amqp.uri.len(),
        match v.raw.durability.ack {
            AckMode::Broker => "broker",
            AckMode::Spool => "spool",
        },
        v.raw.spool.dir.display(),
        if v.raw.spool.enabled { "enabled" } else { "disabled" },
    );
    for (name, s) in &v.sources {
        let creds = if s.credentials.is_none() {
            "unauthenticated"
        } else {
            "credentials [redacted]"
        };
        out.push_str(&format!(
            "    {name}: vendor {}, {creds}, POST /webhooks/{name}\n",
            s.vendor.name()
        ));
    }
    out
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config.as_deref();
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => match load(config) {
            Ok(v) => {
                print!("{}", describe(&v));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("invalid configuration: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Send { source, file, url } => {
            let v = match load(config) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("invalid configuration: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match hookrelay::cli::send(&v, &source, &file, url.as_deref()).await {
                Ok((status, body)) => {
                    println!("{status} {body}");
                    if (200..300).contains(&status) {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Healthcheck { url } => {
            let v = match load(config) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("invalid configuration: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match hookrelay::cli::healthcheck(&v, url.as_deref()).await {
                Ok(body) => {
                    println!("{body}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve => {
            let v = match load(config) {
                Ok(v) => v,
                Err(e) => {
                    // Logging is not up yet: say it plainly and stop.
                    eprintln!("invalid configuration: {e}");
                    return ExitCode::FAILURE;
                }
            };
            hookrelay_common::logging::init(&v.raw.log);
            let app = match Application::build(v).await {
                Ok(app) => app,
                Err(e) => {
                    tracing::error!(error = %e, "start-up failed");
                    return ExitCode::FAILURE;
                }
            };
            match app.run_until_stopped(shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "server failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
