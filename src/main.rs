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
    /// Inspect, salvage, drain or set aside a spool directory (no relay may hold it,
    /// except for `status` and `export`, which skip a held file).
    Spool {
        #[command(subcommand)]
        command: SpoolCommand,
        /// The spool directory (default: spool.dir of the configuration).
        #[arg(long, global = true)]
        dir: Option<PathBuf>,
    },
    /// Probe a running relay's /readyz; exit 0 when ready (for container healthchecks).
    Healthcheck {
        /// Full URL (default: http://<server.bind>/readyz).
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand, Clone, Copy)]
enum SpoolCommand {
    /// One JSON object: dir, depth, bytes, oldest, healthy, error. Exit 1 when damaged.
    Status,
    /// Read every stored event; exit 1 (details on stderr) if any is unreadable.
    Verify,
    /// Every readable event as CloudEvent JSON, one per line, in spool order (also from
    /// quarantined and damaged files); exit 1 if some were unreadable.
    Export,
    /// Publish the spool's events to the configured broker with confirms, delete what
    /// was confirmed, exit when empty.
    Drain,
    /// Rename the spool file to `<name>.damaged-<UTC time>` so a relay can start fresh.
    Quarantine,
}

/// The validated configuration, or the reason it is not usable, said plainly on stderr
/// (logging is not up yet) as the `Err` exit code every command returns then.
fn load(config: Option<&std::path::Path>) -> Result<Validated, ExitCode> {
    Settings::load(config)
        .and_then(Settings::validate)
        .map_err(|e| {
            eprintln!("invalid configuration: {e}");
            ExitCode::FAILURE
        })
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
        "configuration OK\n  server.bind = {}\n  amqp.exchange = {}\n  amqp.uri = {} node(s)\n  durability.ack = {}\n  spool.dir = {} ({})\n",
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
    let history = &v.raw.history;
    out.push_str(&if history.enabled {
        format!(
            "  history = {} (max_age {}, max_bytes {})\n",
            history.stream_name(&v.raw.amqp.exchange),
            history.max_age,
            history.max_bytes
        )
    } else {
        "  history = off\n".to_owned()
    });
    out.push_str("  sources:\n");
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
            Err(code) => code,
        },
        Command::Send { source, file, url } => {
            let v = match load(config) {
                Ok(v) => v,
                Err(code) => return code,
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
                Err(code) => return code,
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
        Command::Spool { command, dir } => {
            // Parsed, not validated: inspecting or draining a spool needs only the broker
            // and spool keys, not (say) a retired relay's source credentials.
            let v = match Settings::load(config) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("invalid configuration: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let dir = dir.unwrap_or_else(|| v.spool.dir.clone());
            use hookrelay::spool_cli;
            let code = match command {
                SpoolCommand::Status => spool_cli::status(&dir),
                SpoolCommand::Verify => spool_cli::verify(&dir),
                SpoolCommand::Export => spool_cli::export(&dir),
                SpoolCommand::Quarantine => spool_cli::quarantine(&dir),
                SpoolCommand::Drain => {
                    hookrelay_common::logging::init(&v.log);
                    spool_cli::drain(&v, &dir).await
                }
            };
            ExitCode::from(code as u8)
        }
        Command::Serve => {
            let v = match load(config) {
                Ok(v) => v,
                Err(code) => return code,
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
