//! hookrelay's consumer workers: each kind is a [`Handler`](consume::Handler) run by the
//! shared consume loop in [`consume`].
//!
//! # Layout
//!
//! - [`consume`]: the consume loop every durable kind runs (prefetch, ack after the work,
//!   retry with delay, park after `max_attempts`, reconnect, drain on shutdown).
//! - [`cli`]: the command line (clap derive).
//! - [`settings`]: `[amqp]`, `[log]`, `[worker]`, `[archive]`, `[forward]` of the shared config.
//! - [`tail`]: print events live from a throw-away queue.
//! - [`archive`]: one JSON line per event in a file per UTC day, fsync'd before the ack,
//!   never the same event id twice.
//! - [`forward`]: POST each event downstream, signed per Standard Webhooks ([`signing`]).
//! - [`replay`]: move parked messages back to their work queue.
//! - [`history`]: read the history stream over a time window (print or republish), and
//!   `tail --since` (history, then live).
//! - [`topic`]: RabbitMQ topic-pattern matching, for filters applied to the stream.
//!
//! `main.rs` only wires these: parse, load settings, install the signal handlers, [`run`].

pub mod archive;
pub mod cli;
pub mod consume;
pub mod forward;
pub mod history;
pub mod replay;
pub mod settings;
pub mod signing;
pub mod tail;
pub mod topic;

use cli::Command;
use hookrelay_common::settings::SettingsError;
use settings::Settings;
use std::future::Future;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0}")]
    Settings(#[from] SettingsError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("replay: {0}")]
    Replay(#[from] replay::ReplayError),
    #[error("history: {0}")]
    History(#[from] history::HistoryError),
}

/// Run one subcommand until it finishes (replay) or `shutdown` resolves (the consumers).
pub async fn run<S>(command: Command, settings: Settings, shutdown: S) -> Result<(), WorkerError>
where
    S: Future<Output = ()> + Send,
{
    match command {
        Command::Tail(args) => tail::run(&settings, args, shutdown).await,
        Command::Archive(args) => archive::run(&settings, args, shutdown).await,
        Command::Forward(args) => forward::run(&settings, args, shutdown).await,
        Command::History(args) => {
            let summary = history::run(&settings, args, shutdown).await?;
            eprintln!("{}", summary.line());
            Ok(())
        }
        Command::Replay(args) => {
            let queue = settings.worker.queue_name(args.queue.as_deref(), "");
            if queue.is_empty() {
                return Err(SettingsError::key(
                    "worker.queue",
                    "is missing: give --queue QUEUE (the worker queue whose parked messages go back)",
                )
                .into());
            }
            let moved = replay::run(&settings.amqp, &queue, args.limit, shutdown).await?;
            println!(
                "moved {moved} message{} from {} to {queue}",
                if moved == 1 { "" } else { "s" },
                hookrelay_common::topology::parked_queue(&queue)
            );
            Ok(())
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed now, before any
/// connecting, so a signal that arrives early still means "stop" rather than "die".
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested");
    })
}
