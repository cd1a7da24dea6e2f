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
use hookrelay_common::topology::{history_name, unrouted_name, QueueType};
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
    /// Also run the load against the floor relay (see [`crate::floor`]) in every round.
    pub floor: bool,
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
    launch("bench", "relay", opts.keep, |port, exchange, dir| {
        // The relay refuses a missing spool.dir.
        std::fs::create_dir_all(dir.join("spool"))?;
        let mut cmd = Command::new(&opts.relay_bin);
        cmd.env("HOOKRELAY__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("HOOKRELAY__AMQP__EXCHANGE", exchange)
            .env("HOOKRELAY__SPOOL__DIR", dir.join("spool"))
            .env("HOOKRELAY__DURABILITY__ACK", &opts.ack);
        for (k, v) in &opts.relay_env {
            cmd.env(k, v);
        }
        Ok(cmd)
    })
    .await
}

/// Start `hookrelay-bench floor` (this binary) on a free port with its own exchange, and
/// wait for its `/readyz`.
pub async fn start_floor(opts: &CompareOpts) -> Result<RelayProcess> {
    launch("floor", "floor relay", opts.keep, |port, exchange, _| {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["floor", "--port", &port.to_string(), "--exchange", exchange])
            .args(["--size", &opts.size.to_string()]);
        Ok(cmd)
    })
    .await
}

/// Give a server its own free port, exchange `hookrelay.<kind>.<id>` and temp directory
/// (its log goes to `relay.log` there), start the command `build` makes for them, and
/// wait for its `/readyz`.
async fn launch(
    kind: &str,
    what: &str,
    keep: bool,
    build: impl FnOnce(u16, &str, &std::path::Path) -> Result<Command>,
) -> Result<RelayProcess> {
    let id = crate::short_id();
    let port = free_port()?;
    let exchange = format!("hookrelay.{kind}.{id}");
    let dir = std::env::temp_dir().join(format!("hookrelay-{kind}-{id}"));
    std::fs::create_dir_all(&dir)?;
    let log = std::fs::File::create(dir.join("relay.log"))?;
    let mut cmd = build(port, &exchange, &dir)?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start the {what} ({:?}): {e}", cmd.get_program()))?;
    let relay = RelayProcess {
        child,
        port,
        exchange,
        dir,
        keep,
    };
    wait_ready(relay, what).await
}

async fn wait_ready(mut relay: RelayProcess, what: &str) -> Result<RelayProcess> {
    let http = reqwest::Client::new();
    let ready = format!("{}/readyz", relay.base_url());
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = relay.child.try_wait() {
            let log = std::fs::read_to_string(relay.log_path()).unwrap_or_default();
            return Err(format!("the {what} exited ({status}) before it was ready:\n{log}").into());
        }
        if let Ok(r) = http.get(&ready).send().await {
            if r.status().is_success() {
                return Ok(relay);
            }
        }
        if Instant::now() > until {
            return Err(format!("the {what} did not become ready within 30 s").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Remove the relay's exchange, its alternate exchange, the unrouted queue and the
/// history stream (a stream keeps its disk until deleted).
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
    ch.queue_delete(
        ShortString::from(history_name(exchange).as_str()),
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
    /// The same load against the floor relay (`--floor`).
    pub floor: Option<LoadResult>,
}

pub struct Report {
    pub opts: CompareOpts,
    /// CPUs of this machine (the budget's denominator).
    pub cores: usize,
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
    let mut floor = match opts.floor {
        true => Some(start_floor(opts).await?),
        false => None,
    };
    let outcome = rounds(opts, &relay, floor.as_ref()).await;
    let final_hwm = proc.hwm();
    let status = relay.stop();
    if let Some(f) = floor.as_mut() {
        f.stop();
        if let Err(e) = delete_relay_topology(&opts.amqp, &f.exchange).await {
            eprintln!("cleanup of {}: {e}", f.exchange);
        }
    }
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
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        idle_rss,
        final_hwm,
        rounds,
    })
}

async fn rounds(
    opts: &CompareOpts,
    relay: &RelayProcess,
    floor: Option<&RelayProcess>,
) -> Result<Vec<Round>> {
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
        let floor = match floor {
            Some(f) => {
                let fl = load::run(&LoadOpts {
                    url: f.base_url(),
                    pid: Some(f.pid()),
                    exchange: f.exchange.clone(),
                    ..load_opts.clone()
                })
                .await?;
                eprintln!(
                    "round {r}: floor relay {:.0} req/s (p99 {} ms, errors {})",
                    fl.rate(),
                    ms(fl.p99_us),
                    fl.error_count(),
                );
                Some(fl)
            }
            None => None,
        };
        out.push(Round {
            ceiling,
            no_confirms,
            load,
            floor,
        });
    }
    Ok(out)
}

/// CPU µs per event left for a relay at `rate` events/s on `cores` fully busy cores, when
/// the broker spends `broker_us` and the load generator `generator_us` per event.
pub fn cpu_left_us(
    cores: f64,
    rate: f64,
    broker_us: Option<f64>,
    generator_us: Option<f64>,
) -> Option<f64> {
    if rate <= 0.0 {
        return None;
    }
    Some(cores / rate * 1e6 - broker_us? - generator_us?)
}

/// The exactly-once check's missing and duplicate counts as table cells.
fn check_cells(l: &LoadResult) -> (String, String) {
    match &l.check {
        Some(c) => (c.missing.to_string(), c.duplicates.to_string()),
        None => ("-".into(), "-".into()),
    }
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
            let (missing, dup) = check_cells(l);
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
        if self.rounds.iter().any(|r| r.floor.is_some()) {
            s.push_str(
                "The floor relay (`hookrelay-bench floor`: the relay's stack, actix-web workers and \
                 one lapin connection with confirms, with none of the relay's own work) under the \
                 same load generator, same round. floor/ceiling is what any relay on this stack \
                 reaches on this machine; relay/floor is what hookrelay's work costs on top:\n\n\
                 | round | floor req/s | floor p99 ms | floor/ceiling | relay/floor | floor CPU µs/event \
                 | relay CPU µs/event | floor: broker cores | errors | missing | dup |\n\
                 |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            );
            let mut floor_ratios = Vec::new();
            let mut relay_floor = Vec::new();
            for (i, r) in self.rounds.iter().enumerate() {
                let Some(f) = &r.floor else { continue };
                let fr = f.rate() / r.ceiling.rate().max(1e-9);
                let rf = r.load.rate() / f.rate().max(1e-9);
                floor_ratios.push(fr);
                relay_floor.push(rf);
                let (missing, dup) = check_cells(f);
                s.push_str(&format!(
                    "| {} | {:.0} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |\n",
                    i + 1,
                    f.rate(),
                    ms(f.p99_us),
                    fr,
                    rf,
                    opt_f(f.cpu_us_per_event, 1),
                    opt_f(r.load.cpu_us_per_event, 1),
                    opt_f(f.usage.and_then(|u| u.broker), 2),
                    f.error_count(),
                    missing,
                    dup,
                ));
            }
            s.push_str(&format!(
                "| **median** | | | **{}** | **{}** | | | | | | |\n\n",
                opt_f(median(&floor_ratios), 2),
                opt_f(median(&relay_floor), 2),
            ));
        }
        s.push_str(&format!(
            "The CPU arithmetic of a 0.8 × ceiling target on this machine ({cores} cores): at \
             that rate the broker needs its CPU per message (as measured in the ceiling run, \
             its most efficient; the load's own figure beside it) and the load generator its \
             CPU per request; what is left of {cores} fully busy cores, per event, is the most \
             a relay may spend. A relay above it cannot reach the target here however it is \
             scheduled (and a closed loop never keeps every core busy).\n\n\
             | round | 0.8 × ceiling /s | broker µs/msg: ceiling / relay's load | load generator µs/req \
             | left for the relay µs/event | relay spends |\n|---:|---:|---:|---:|---:|---:|\n",
            cores = self.cores,
        ));
        for (i, r) in self.rounds.iter().enumerate() {
            let target = 0.8 * r.ceiling.rate();
            let per = |cores: Option<f64>, rate: f64| cores.map(|c| c / rate.max(1e-9) * 1e6);
            let broker_ceiling = per(r.ceiling.usage.broker, r.ceiling.rate());
            let broker_load = per(r.load.usage.and_then(|u| u.broker), r.load.rate());
            let gen = per(r.load.usage.map(|u| u.bench), r.load.rate());
            let left = cpu_left_us(self.cores as f64, target, broker_ceiling, gen);
            s.push_str(&format!(
                "| {} | {:.0} | {} / {} | {} | {} | {} |\n",
                i + 1,
                target,
                opt_f(broker_ceiling, 1),
                opt_f(broker_load, 1),
                opt_f(gen, 1),
                opt_f(left, 1),
                opt_f(r.load.cpu_us_per_event, 1),
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

#[cfg(test)]
mod tests {
    use super::cpu_left_us;

    #[test]
    fn the_cpu_left_for_a_relay_is_what_the_cores_give_minus_broker_and_generator() {
        // 2 cores at 20,000/s give 100 µs per event; 55 + 20 are taken.
        let left = cpu_left_us(2.0, 20_000.0, Some(55.0), Some(20.0)).unwrap();
        assert!((left - 25.0).abs() < 1e-9, "{left}");
        // Negative: not even a relay that costs nothing fits.
        assert!(cpu_left_us(2.0, 40_000.0, Some(55.0), Some(20.0)).unwrap() < 0.0);
        assert_eq!(cpu_left_us(2.0, 20_000.0, None, Some(20.0)), None);
        assert_eq!(cpu_left_us(2.0, 0.0, Some(1.0), Some(1.0)), None);
    }
}
