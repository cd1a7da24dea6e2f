//! Relay against ceiling, on the same broker and queue type, in alternation: start the
//! (already built) relay binary on a free port with its own exchange and spool, then per
//! round run the confirmed ceiling (W = the load's concurrency), the no-confirms ceiling,
//! and the load, and print one Markdown table.

use crate::ceiling::{self, CeilingOpts, CeilingResult};
use crate::config::Source;
use crate::load::{self, LoadOpts, LoadResult};
use crate::procstat::{mib, Proc};
use crate::stats::{median, ms};
use crate::Result;
use hookrelay_common::amqp::{self, AmqpSettings};
use hookrelay_common::topology::{unrouted_name, QueueType};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::types::ShortString;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct CompareOpts {
    pub relay_bin: PathBuf,
    pub amqp: AmqpSettings,
    pub source: Source,
    pub concurrency: usize,
    pub queue_type: QueueType,
    pub rounds: usize,
    pub duration: Duration,
    /// `broker` or `spool` (HOOKRELAY__DURABILITY__ACK).
    pub ack: String,
    pub size: usize,
    pub channels: usize,
    /// Extra `KEY=VALUE` environment for the relay.
    pub relay_env: Vec<(String, String)>,
    pub keep: bool,
}

/// A relay process the bench started, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct RelayProcess {
    pub child: Child,
    pub port: u16,
    pub exchange: String,
    pub dir: PathBuf,
    keep: bool,
}

impl RelayProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("relay.log")
    }

    /// SIGTERM (graceful), up to 20 s, then SIGKILL.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(s)) = self.child.try_wait() {
            return Some(s);
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.stop();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Start the relay with its own port, exchange and spool directory, and wait for
/// `/readyz`.
pub async fn start_relay(opts: &CompareOpts) -> Result<RelayProcess> {
    let id = crate::short_id();
    let port = free_port()?;
    let exchange = format!("hookrelay.bench.{id}");
    let dir = std::env::temp_dir().join(format!("hookrelay-bench-{id}"));
    std::fs::create_dir_all(&dir)?;
    let log = std::fs::File::create(dir.join("relay.log"))?;
    let mut cmd = Command::new(&opts.relay_bin);
    cmd.env("HOOKRELAY__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("HOOKRELAY__AMQP__EXCHANGE", &exchange)
        .env("HOOKRELAY__SPOOL__DIR", dir.join("spool"))
        .env("HOOKRELAY__DURABILITY__ACK", &opts.ack)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    for (k, v) in &opts.relay_env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", opts.relay_bin.display()))?;
    let mut relay = RelayProcess {
        child,
        port,
        exchange,
        dir,
        keep: opts.keep,
    };
    let http = reqwest::Client::new();
    let ready = format!("{}/readyz", relay.base_url());
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = relay.child.try_wait() {
            let log = std::fs::read_to_string(relay.log_path()).unwrap_or_default();
            return Err(format!("the relay exited ({status}) before it was ready:\n{log}").into());
        }
        if let Ok(r) = http.get(&ready).send().await {
            if r.status().is_success() {
                return Ok(relay);
            }
        }
        if Instant::now() > until {
            return Err("the relay did not become ready within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Remove the relay's exchange, its alternate exchange and the unrouted queue.
pub async fn delete_relay_topology(amqp_settings: &AmqpSettings, exchange: &str) -> Result<()> {
    let conn = amqp::connect(amqp_settings, "hookrelay-bench cleanup").await?;
    let ch = conn.create_channel().await?;
    let unrouted = unrouted_name(exchange);
    ch.exchange_delete(
        ShortString::from(exchange),
        ExchangeDeleteOptions::default(),
    )
    .await?;
    ch.exchange_delete(
        ShortString::from(unrouted.as_str()),
        ExchangeDeleteOptions::default(),
    )
    .await?;
    ch.queue_delete(
        ShortString::from(unrouted.as_str()),
        QueueDeleteOptions::default(),
    )
    .await?;
    let _ = conn.close(200, ShortString::from("bye")).await;
    Ok(())
}

pub struct Round {
    pub ceiling: CeilingResult,
    pub no_confirms: CeilingResult,
    pub load: LoadResult,
}

pub struct Report {
    pub opts: CompareOpts,
    pub idle_rss: Option<u64>,
    pub final_hwm: Option<u64>,
    pub rounds: Vec<Round>,
}

pub async fn run(opts: &CompareOpts) -> Result<Report> {
    let mut relay = start_relay(opts).await?;
    let proc = Proc::new(relay.pid());
    // Let start-up allocations settle before taking the idle figure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = proc.rss();
    eprintln!(
        "relay pid {} on {} (exchange {}, ack {}), idle RSS {} MiB",
        relay.pid(),
        relay.base_url(),
        relay.exchange,
        opts.ack,
        mib(idle_rss)
    );
    let outcome = rounds(opts, &relay).await;
    let final_hwm = proc.hwm();
    let status = relay.stop();
    if let Err(e) = delete_relay_topology(&opts.amqp, &relay.exchange).await {
        eprintln!("cleanup of {}: {e}", relay.exchange);
    }
    let rounds = outcome.map_err(|e| {
        let log = std::fs::read_to_string(relay.log_path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        format!(
            "{e}\nrelay exit: {status:?}; last relay log lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    })?;
    Ok(Report {
        opts: opts.clone(),
        idle_rss,
        final_hwm,
        rounds,
    })
}

async fn rounds(opts: &CompareOpts, relay: &RelayProcess) -> Result<Vec<Round>> {
    let ceiling_opts = |confirms| CeilingOpts {
        amqp: opts.amqp.clone(),
        inflight: opts.concurrency,
        queue_type: opts.queue_type,
        confirms,
        duration: opts.duration,
        size: opts.size,
        channels: opts.channels,
    };
    let load_opts = LoadOpts {
        url: relay.base_url(),
        source: opts.source.clone(),
        concurrency: opts.concurrency,
        duration: opts.duration,
        pid: Some(relay.pid()),
        amqp: opts.amqp.clone(),
        exchange: relay.exchange.clone(),
        queue_type: opts.queue_type,
        no_check: false,
        drain_idle: Duration::from_secs(5),
    };
    let mut out = Vec::with_capacity(opts.rounds);
    for r in 1..=opts.rounds {
        let ceiling = ceiling::run(&ceiling_opts(true)).await?;
        eprintln!("round {r}: ceiling {:.0} msgs/s", ceiling.rate());
        let no_confirms = ceiling::run(&ceiling_opts(false)).await?;
        eprintln!(
            "round {r}: no-confirms ceiling {:.0} msgs/s",
            no_confirms.rate()
        );
        let load = load::run(&load_opts).await?;
        eprintln!(
            "round {r}: relay {:.0} req/s (p99 {} ms, errors {})",
            load.rate(),
            ms(load.p99_us),
            load.error_count()
        );
        out.push(Round {
            ceiling,
            no_confirms,
            load,
        });
    }
    Ok(out)
}

fn opt_f(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) => format!("{v:.digits$}"),
        None => "-".to_owned(),
    }
}

impl Report {
    pub fn ratios(&self) -> (Vec<f64>, Vec<f64>) {
        self.rounds
            .iter()
            .map(|r| {
                (
                    r.load.rate() / r.ceiling.rate().max(1e-9),
                    r.load.rate() / r.no_confirms.rate().max(1e-9),
                )
            })
            .unzip()
    }

    /// The Markdown table and summary lines.
    pub fn markdown(&self) -> String {
        let o = &self.opts;
        let mut s = String::new();
        s.push_str(&format!(
            "ack={} queue={} concurrency=W={} rounds={} duration={}s vendor={} ceiling size={} B channels={}\n\n",
            o.ack,
            o.queue_type.as_str(),
            o.concurrency,
            o.rounds,
            o.duration.as_secs_f64(),
            o.source.vendor.name(),
            o.size,
            o.channels
        ));
        s.push_str(
            "| round | relay req/s | p50 ms | p99 ms | p99.9 ms | ceiling msgs/s | ceiling p99 ms \
             | relay/ceiling | no-confirms msgs/s | relay/no-confirms | relay CPU µs/event \
             | peak RSS MiB | errors | missing | dup |\n",
        );
        s.push_str(
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let (ratios, nc_ratios) = self.ratios();
        for (i, r) in self.rounds.iter().enumerate() {
            let l = &r.load;
            let (missing, dup) = match &l.check {
                Some(c) => (c.missing.to_string(), c.duplicates.to_string()),
                None => ("-".into(), "-".into()),
            };
            s.push_str(&format!(
                "| {} | {:.0} | {} | {} | {} | {:.0} | {} | {:.2} | {:.0} | {:.2} | {} | {} | {} | {} | {} |\n",
                i + 1,
                l.rate(),
                ms(l.p50_us),
                ms(l.p99_us),
                ms(l.p999_us),
                r.ceiling.rate(),
                ms(r.ceiling.p99_us),
                ratios[i],
                r.no_confirms.rate(),
                nc_ratios[i],
                opt_f(l.cpu_us_per_event, 1),
                mib(l.peak_rss),
                l.error_count(),
                missing,
                dup,
            ));
        }
        let rates: Vec<f64> = self.rounds.iter().map(|r| r.load.rate()).collect();
        let ceilings: Vec<f64> = self.rounds.iter().map(|r| r.ceiling.rate()).collect();
        let ncs: Vec<f64> = self.rounds.iter().map(|r| r.no_confirms.rate()).collect();
        let cpus: Vec<f64> = self
            .rounds
            .iter()
            .filter_map(|r| r.load.cpu_us_per_event)
            .collect();
        let p99s: Vec<f64> = self
            .rounds
            .iter()
            .filter_map(|r| r.load.p99_us.map(f64::from))
            .collect();
        s.push_str(&format!(
            "| **median** | **{}** | | **{}** | | **{}** | | **{}** | **{}** | **{}** | **{}** | | | | |\n\n",
            opt_f(median(&rates), 0),
            opt_f(median(&p99s).map(|u| u / 1000.0), 2),
            opt_f(median(&ceilings), 0),
            opt_f(median(&ratios), 2),
            opt_f(median(&ncs), 0),
            opt_f(median(&nc_ratios), 2),
            opt_f(median(&cpus), 1),
        ));
        s.push_str(
            "CPU during each run, in cores of the machine's 2 (others = processes outside \
             this benchmark; above ~0.1 the run was disturbed):\n\n\
             | round | load: relay | load: broker | load: bench | load: others \
             | ceiling: broker | ceiling: bench | ceiling: others | no-confirms: others |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let c = |v: Option<f64>| opt_f(v, 2);
        for (i, r) in self.rounds.iter().enumerate() {
            let u = r.load.usage.unwrap_or_default();
            s.push_str(&format!(
                "| {} | {} | {} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {:.2} |\n",
                i + 1,
                c(u.relay),
                c(u.broker),
                u.bench,
                u.others,
                c(r.ceiling.usage.broker),
                r.ceiling.usage.bench,
                r.ceiling.usage.others,
                r.no_confirms.usage.others,
            ));
        }
        s.push('\n');
        if o.ack == "spool" {
            s.push_str(
                "Spool mode answers after the local fsync; the broker gets the events from the \
                 spool's publisher. What the broker had confirmed by the end of each load:\n\n\
                 | round | accepted req/s | spool backlog at the end | confirmed by the broker /s |\n\
                 |---:|---:|---:|---:|\n",
            );
            for (i, r) in self.rounds.iter().enumerate() {
                s.push_str(&format!(
                    "| {} | {:.0} | {} | {} |\n",
                    i + 1,
                    r.load.rate(),
                    r.load
                        .spool_backlog
                        .map_or("-".to_owned(), |b| b.to_string()),
                    opt_f(r.load.published_rate(), 0),
                ));
            }
            s.push('\n');
        }
        s.push_str(
            "Where a request's time goes (means over each load, ms): the relay's own wait \
             for the broker's confirm (its publish_latency histogram) against the whole \
             request as the client saw it; the rest is HTTP, parsing, signing checks, \
             scheduling on the shared cores, and the client itself.\n\n\
             | round | mean request | relay's mean confirm wait | rest |\n|---:|---:|---:|---:|\n",
        );
        for (i, r) in self.rounds.iter().enumerate() {
            let mean = r.load.mean_us.map(|u| u / 1000.0);
            let confirm = r.load.relay_confirm_mean_us.map(|u| u / 1000.0);
            let rest = match (mean, confirm) {
                (Some(m), Some(c)) if o.ack == "broker" => Some(m - c),
                _ => None,
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                i + 1,
                opt_f(mean, 2),
                opt_f(confirm, 2),
                opt_f(rest, 2)
            ));
        }
        s.push('\n');
        let peak = self.rounds.iter().filter_map(|r| r.load.peak_rss).max();
        let mean_event = self
            .rounds
            .iter()
            .filter_map(|r| r.load.check.as_ref().map(|c| c.mean_event_bytes))
            .fold(0.0_f64, f64::max);
        let errors: Vec<String> = self
            .rounds
            .iter()
            .flat_map(|r| r.load.errors.iter().map(|(k, v)| format!("{k}: {v}")))
            .collect();
        s.push_str(&format!(
            "Relay RSS: idle {} MiB (after /readyz, before any load), peak sampled under load {} MiB, \
             VmHWM at the end {} MiB. Relay event size on the wire: {:.0} B. Errors: {}.\n",
            mib(self.idle_rss),
            mib(peak),
            mib(self.final_hwm),
            mean_event,
            if errors.is_empty() {
                "none".to_owned()
            } else {
                errors.join(", ")
            }
        ));
        s
    }
}
