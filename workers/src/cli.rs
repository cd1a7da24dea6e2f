//! The command line: `hookrelay-worker [--config PATH] <tail|archive|forward|replay> ...`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "hookrelay-worker",
    version,
    about = "hookrelay's consumers: watch, archive or forward events, replay parked ones"
)]
pub struct Cli {
    /// Configuration file layered over config/default.toml (env HOOKRELAY__* wins over both).
    #[arg(long, env = "HOOKRELAY_CONFIG", value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print matching events live, one line each (a throw-away queue; declares nothing durable).
    Tail(TailArgs),
    /// Append every event as one JSON line to <dir>/<YYYY-MM-DD>.jsonl, fsync'd before the ack.
    Archive(ArchiveArgs),
    /// POST every event to a downstream URL, signed per Standard Webhooks.
    Forward(ForwardArgs),
    /// Move messages from <queue>.parked back to <queue>.
    Replay(ReplayArgs),
    /// Read the history stream from a time on: print the events as JSON lines, or
    /// republish them (confirmed) to a queue or an exchange.
    History(HistoryArgs),
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Binding key (repeatable), e.g. `chatwoot.#` or `*.message.created`. Default `#`.
    #[arg(long = "bind", value_name = "KEY")]
    pub bind: Vec<String>,
    /// Print each whole event as one JSON line instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Start with the history from WHEN (RFC 3339, or a duration back: 90s, 15m, 2h, 7d),
    /// then go on live: read from the history stream, no event missed or repeated.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Start: RFC 3339 (2026-05-01T09:00:00Z) or a duration back from now (90s, 15m, 2h, 7d).
    #[arg(long, value_name = "WHEN")]
    pub since: String,
    /// Stop before this time (same forms); default: the stream's end when the run starts.
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Only events whose routing key matches (repeatable; RabbitMQ topic rules: `*` one
    /// word, `#` zero or more). Default `#`.
    #[arg(long = "bind", value_name = "KEY")]
    pub bind: Vec<String>,
    /// Republish each matching event to this queue (through the default exchange).
    #[arg(long, value_name = "QUEUE", conflicts_with = "to_exchange")]
    pub to_queue: Option<String>,
    /// Republish each matching event to this exchange, with its own routing key.
    #[arg(long, value_name = "EXCHANGE")]
    pub to_exchange: Option<String>,
    /// Deliveries (and unconfirmed republishes) held at once; default worker.prefetch.
    #[arg(long, value_name = "N")]
    pub prefetch: Option<u16>,
}

#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// Archive directory (default: archive.dir).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The durable queue to consume (default: worker.queue, else hookrelay.archive).
    #[arg(long, value_name = "QUEUE")]
    pub queue: Option<String>,
    /// Binding key (repeatable); replaces worker.bind.
    #[arg(long = "bind", value_name = "KEY")]
    pub bind: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ForwardArgs {
    /// Downstream URL (default: forward.url).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// The durable queue to consume (default: worker.queue, else hookrelay.forward).
    #[arg(long, value_name = "QUEUE")]
    pub queue: Option<String>,
    /// Binding key (repeatable); replaces worker.bind.
    #[arg(long = "bind", value_name = "KEY")]
    pub bind: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The worker queue whose parked messages go back (default: worker.queue).
    #[arg(long, value_name = "QUEUE")]
    pub queue: Option<String>,
    /// Move at most this many messages.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repeated_binds_and_global_config() {
        let cli = Cli::try_parse_from([
            "hookrelay-worker",
            "forward",
            "--url",
            "http://127.0.0.1:9/x",
            "--bind",
            "a.#",
            "--bind",
            "b.#",
            "--config",
            "/tmp/c.toml",
        ])
        .unwrap();
        assert_eq!(
            cli.config.as_deref(),
            Some(std::path::Path::new("/tmp/c.toml"))
        );
        match cli.command {
            Command::Forward(f) => {
                assert_eq!(f.bind, vec!["a.#", "b.#"]);
                assert_eq!(f.url.as_deref(), Some("http://127.0.0.1:9/x"));
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn replay_takes_a_limit() {
        let cli =
            Cli::try_parse_from(["hookrelay-worker", "replay", "--queue", "q", "--limit", "3"])
                .unwrap();
        match cli.command {
            Command::Replay(r) => {
                assert_eq!(r.queue.as_deref(), Some("q"));
                assert_eq!(r.limit, Some(3));
            }
            other => panic!("parsed as {other:?}"),
        }
    }
}
