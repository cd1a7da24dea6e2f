//! `hookrelay-bench`: see BENCHMARKS.md for what each command measures and how.

use clap::{Parser, Subcommand, ValueEnum};
use hookrelay_bench::ceiling::{self, CeilingOpts};
use hookrelay_bench::compare::{self, CompareOpts};
use hookrelay_bench::config::RelayConfig;
use hookrelay_bench::flood::{self, FloodOpts};
use hookrelay_bench::floor;
use hookrelay_bench::load::{self, LoadOpts};
use hookrelay_bench::Result;
use hookrelay_common::topology::QueueType;
use hookrelay_vendors::Vendor;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "hookrelay-bench",
    version,
    about = "hookrelay's benchmark instrument"
)]
struct Cli {
    /// The relay's configuration file (layered like the relay's: config/default.toml,
    /// this file, HOOKRELAY__* env): broker URI, exchange, source credentials.
    #[arg(long, env = "HOOKRELAY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Tokio worker threads of the bench itself (it shares the machine with the relay
    /// and the broker).
    #[arg(long, default_value_t = 2, global = true)]
    threads: usize,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Qt {
    Classic,
    Quorum,
}

impl From<Qt> for QueueType {
    fn from(q: Qt) -> Self {
        match q {
            Qt::Classic => QueueType::Classic,
            Qt::Quorum => QueueType::Quorum,
        }
    }
}

/// `--vendor`: any vendor of the registry (by its configuration name).
#[derive(Clone, Copy)]
struct VendorArg(Vendor);

impl From<VendorArg> for Vendor {
    fn from(v: VendorArg) -> Self {
        v.0
    }
}

fn parse_vendor(name: &str) -> std::result::Result<VendorArg, String> {
    Vendor::from_name(name).map(VendorArg).ok_or_else(|| {
        let known: Vec<&str> = Vendor::ALL.iter().map(|v| v.name()).collect();
        format!("unknown vendor {name:?} (known: {})", known.join(", "))
    })
}

#[derive(Clone, Copy, ValueEnum)]
enum Ack {
    Broker,
    Spool,
}

fn seconds(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim().trim_end_matches('s');
    t.parse::<f64>()
        .ok()
        .filter(|v| *v > 0.0 && v.is_finite())
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?} is not a duration in seconds (e.g. 10 or 2.5s)"))
}

#[derive(Subcommand)]
enum Cmd {
    /// Crash consistency: SIGKILL the relay at random moments during heavy spool writes,
    /// restart it on the same spool, RUNS times; then check that every 200 reached the
    /// exchange and nothing was published that was never posted. Exit 1 otherwise.
    Crash {
        /// The relay binary (a release build for realistic timing).
        #[arg(long, default_value = "target/release/hookrelay")]
        relay_bin: PathBuf,
        #[arg(long, default_value_t = 50)]
        runs: u32,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// The kill comes after a random time between these (ms) of load.
        #[arg(long, default_value_t = 100)]
        min_ms: u64,
        #[arg(long, default_value_t = 1500)]
        max_ms: u64,
        /// Padding bytes per webhook.
        #[arg(long, default_value_t = 2000)]
        pad: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// The broker's ceiling: a raw lapin publisher of persistent messages with at most W
    /// unconfirmed (or fire and forget with --no-confirms).
    Ceiling {
        /// Most messages unconfirmed at once (W).
        #[arg(long, default_value_t = 64)]
        inflight: usize,
        #[arg(long, value_enum, default_value = "classic")]
        queue_type: Qt,
        /// Fire and forget: no publisher confirms.
        #[arg(long)]
        no_confirms: bool,
        /// Seconds.
        #[arg(long, default_value = "10", value_parser = seconds)]
        duration: Duration,
        /// Message body size in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Publishing channels (the relay's amqp.publish_channels is 2).
        #[arg(long, default_value_t = 1)]
        channels: usize,
    },
    /// Authentic, unique webhooks against a running relay, with an exactly-once check.
    Load {
        /// The relay's base URL (or a full /webhooks/<source> URL).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[arg(long, value_parser = parse_vendor, default_value = "kommunicate")]
        vendor: VendorArg,
        /// The source name (URL segment) in the relay's config; default: the vendor's name.
        #[arg(long)]
        source: Option<String>,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Seconds.
        #[arg(long, default_value = "10", value_parser = seconds)]
        duration: Duration,
        /// The relay's pid: adds its CPU µs per event and its memory.
        #[arg(long)]
        pid: Option<u32>,
        /// The relay's exchange (default: amqp.exchange of the configuration).
        #[arg(long)]
        exchange: Option<String>,
        /// Type of the check queue bound to the exchange.
        #[arg(long, value_enum, default_value = "classic")]
        queue_type: Qt,
        /// No check queue, no read-back.
        #[arg(long)]
        no_check: bool,
        /// Stop reading back after this long without a message (seconds).
        #[arg(long, default_value = "5", value_parser = seconds)]
        drain_idle: Duration,
    },
    /// Start the relay binary and alternate ceiling and load; prints a Markdown table.
    Compare {
        /// The relay binary (default: `hookrelay` next to this binary).
        #[arg(long)]
        relay_bin: Option<PathBuf>,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, value_enum, default_value = "classic")]
        queue_type: Qt,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds per ceiling run and per load run.
        #[arg(long, default_value = "10", value_parser = seconds)]
        duration: Duration,
        /// durability.ack of the relay.
        #[arg(long, value_enum, default_value = "broker")]
        ack: Ack,
        #[arg(long, value_parser = parse_vendor, default_value = "kommunicate")]
        vendor: VendorArg,
        /// Ceiling message size in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Ceiling publishing channels.
        #[arg(long, default_value_t = 1)]
        channels: usize,
        /// Extra relay environment, KEY=VALUE (repeatable).
        #[arg(long = "relay-env", value_name = "KEY=VALUE")]
        relay_env: Vec<String>,
        /// Keep the relay's temp directory (log, spool).
        #[arg(long)]
        keep: bool,
        /// Also run the load against the floor relay (`floor`) in every round.
        #[arg(long)]
        floor: bool,
    },
    /// The floor relay: actix-web and lapin with confirms, none of the relay's own work
    /// (no auth, parsing, envelope, dedup or spool). Serves until stopped.
    Floor {
        #[arg(long, default_value_t = 18090)]
        port: u16,
        /// Its exchange (declared like the relay's).
        #[arg(long)]
        exchange: Option<String>,
        /// HTTP workers; 0 = one per core, like the relay.
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Publishing channels (the relay's default is 2).
        #[arg(long, default_value_t = 2)]
        channels: usize,
        /// Published size: the body padded with spaces to at least this many bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },
    /// `hookrelay-worker history` republishing a filled history stream, against the
    /// broker's own read rate of that stream, in the same run.
    History {
        /// The worker binary (default: `hookrelay-worker` next to this binary).
        #[arg(long)]
        worker_bin: Option<PathBuf>,
        /// Events put in the stream.
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        /// Event size in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Prefetch of both readers (`history --prefetch`).
        #[arg(long, default_value_t = 256)]
        prefetch: u16,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Hostile connections without credentials, each holding all but the last byte of a
    /// large body, against each vendor's route of a relay it starts (a fresh one per
    /// route); genuine webhooks of every vendor alongside. Prints the relay's peak RSS,
    /// the hostile answers and the genuine statuses and latencies.
    Flood {
        /// The relay binary (default: `hookrelay` next to this binary).
        #[arg(long)]
        relay_bin: Option<PathBuf>,
        /// Routes to flood (repeatable; default: the three vendors of the default config).
        #[arg(long = "target", value_parser = parse_vendor)]
        targets: Vec<VendorArg>,
        #[arg(long, default_value_t = 5000)]
        connections: usize,
        /// Declared body length of each hostile request, in bytes.
        #[arg(long, default_value_t = 2 * 1024 * 1024)]
        body: usize,
        /// Distinct hostile source addresses (127.1.x.y).
        #[arg(long, default_value_t = 1)]
        spread: usize,
        /// Seconds per route (the flood starts 2 s in).
        #[arg(long, default_value = "20", value_parser = seconds)]
        duration: Duration,
        /// Milliseconds between two genuine webhooks of one vendor.
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        /// Extra relay environment, KEY=VALUE (repeatable).
        #[arg(long = "relay-env", value_name = "KEY=VALUE")]
        relay_env: Vec<String>,
        /// Keep the relay's temp directory (log, spool).
        #[arg(long)]
        keep: bool,
    },
    /// Delete a relay exchange a benchmark left behind (with its `.unrouted` exchange and
    /// queue and its `.history` stream), e.g. after profiling a relay started by hand.
    Cleanup {
        #[arg(long)]
        exchange: String,
    },
}

/// `KEY=VALUE` pairs of `--relay-env`.
fn parse_env(pairs: &[String]) -> std::result::Result<Vec<(String, String)>, String> {
    pairs
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("--relay-env {kv:?} is not KEY=VALUE"))
        })
        .collect()
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let cfg = RelayConfig::load(cli.config.as_deref())?;
    match cli.command {
        Cmd::Ceiling {
            inflight,
            queue_type,
            no_confirms,
            duration,
            size,
            channels,
        } => {
            let r = ceiling::run(&CeilingOpts {
                amqp: cfg.amqp.clone(),
                inflight,
                queue_type: queue_type.into(),
                confirms: !no_confirms,
                duration,
                size,
                channels,
            })
            .await?;
            r.print();
        }
        Cmd::Load {
            url,
            vendor,
            source,
            concurrency,
            duration,
            pid,
            exchange,
            queue_type,
            no_check,
            drain_idle,
        } => {
            let vendor: Vendor = vendor.into();
            let name = source.unwrap_or_else(|| vendor.name().to_owned());
            let source = cfg.source(&name, Some(vendor))?;
            let r = load::run(&LoadOpts {
                url,
                source,
                concurrency,
                duration,
                pid,
                amqp: cfg.amqp.clone(),
                exchange: exchange.unwrap_or_else(|| cfg.amqp.exchange.clone()),
                queue_type: queue_type.into(),
                no_check,
                drain_idle,
            })
            .await?;
            r.print();
            if let Some(c) = &r.check {
                if c.missing > 0 || c.duplicates > 0 {
                    return Err(format!(
                        "exactly-once check failed: {} missing, {} duplicates",
                        c.missing, c.duplicates
                    )
                    .into());
                }
            }
        }
        Cmd::Compare {
            relay_bin,
            concurrency,
            queue_type,
            rounds,
            duration,
            ack,
            vendor,
            size,
            channels,
            relay_env,
            keep,
            floor,
        } => {
            let relay_bin = match relay_bin {
                Some(p) => p,
                None => std::env::current_exe()?
                    .parent()
                    .ok_or("the bench binary has no directory")?
                    .join("hookrelay"),
            };
            let vendor: Vendor = vendor.into();
            let source = cfg.source(vendor.name(), Some(vendor))?;
            let relay_env = parse_env(&relay_env)?;
            let report = compare::run(&CompareOpts {
                relay_bin,
                amqp: cfg.amqp.clone(),
                source,
                concurrency,
                queue_type: queue_type.into(),
                rounds: rounds.max(1),
                duration,
                ack: match ack {
                    Ack::Broker => "broker",
                    Ack::Spool => "spool",
                }
                .to_owned(),
                size,
                channels,
                relay_env,
                keep,
                floor,
            })
            .await?;
            println!("{}", report.markdown());
        }
        Cmd::Floor {
            port,
            exchange,
            workers,
            channels,
            size,
        } => {
            floor::serve(&floor::FloorOpts {
                amqp: cfg.amqp.clone(),
                exchange: exchange
                    .unwrap_or_else(|| format!("hookrelay.floor.{}", hookrelay_bench::short_id())),
                port,
                workers,
                channels,
                size,
            })
            .await?;
        }
        Cmd::Crash {
            relay_bin,
            runs,
            concurrency,
            min_ms,
            max_ms,
            pad,
            seed,
        } => {
            let report = hookrelay_bench::crash::run(&hookrelay_bench::crash::CrashOpts {
                relay_bin,
                amqp_uri: hookrelay_bench::config::amqp_uri(&cfg),
                runs,
                concurrency,
                min_ms,
                max_ms: max_ms.max(min_ms),
                pad,
                seed,
            })
            .await?;
            report.print();
            if !report.ok() {
                std::process::exit(1);
            }
        }
        Cmd::History {
            worker_bin,
            events,
            size,
            prefetch,
            rounds,
        } => {
            let worker_bin = match worker_bin {
                Some(p) => p,
                None => std::env::current_exe()?
                    .parent()
                    .ok_or("the bench binary has no directory")?
                    .join("hookrelay-worker"),
            };
            let report = hookrelay_bench::history::run(&hookrelay_bench::history::HistoryOpts {
                amqp: cfg.amqp.clone(),
                worker_bin,
                events,
                size,
                prefetch: prefetch.max(1),
                rounds: rounds.max(1),
            })
            .await?;
            println!("{}", report.markdown());
        }
        Cmd::Flood {
            relay_bin,
            targets,
            connections,
            body,
            spread,
            duration,
            interval_ms,
            relay_env,
            keep,
        } => {
            let relay_bin = match relay_bin {
                Some(p) => p,
                None => std::env::current_exe()?
                    .parent()
                    .ok_or("the bench binary has no directory")?
                    .join("hookrelay"),
            };
            // The vendors the configuration has a source of, named after the vendor.
            let configured: Vec<Vendor> = Vendor::ALL
                .iter()
                .copied()
                .filter(|v| cfg.sources.contains_key(v.name()))
                .collect();
            let sources = configured
                .iter()
                .map(|v| cfg.source(v.name(), Some(*v)))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let targets = if targets.is_empty() {
                configured
            } else {
                targets.into_iter().map(Vendor::from).collect()
            };
            let relay_env = parse_env(&relay_env)?;
            let runs = flood::run(&FloodOpts {
                relay_bin,
                amqp: cfg.amqp.clone(),
                sources,
                targets,
                connections,
                body,
                spread: spread.max(1),
                duration,
                interval: Duration::from_millis(interval_ms),
                relay_env,
                keep,
            })
            .await?;
            for mut r in runs {
                println!("{}", r.markdown());
            }
        }
        Cmd::Cleanup { exchange } => {
            compare::delete_relay_topology(&cfg.amqp, &exchange).await?;
            println!(
                "deleted {exchange}, its alternate exchange, unrouted queue and history stream"
            );
        }
    }
    Ok(())
}
