//! The flood: many hostile connections without credentials, each sending the head of a
//! webhook with a large declared body and all of that body but its last byte, then
//! holding the connection; meanwhile genuine, signed webhooks of every vendor arrive, one
//! at a time on fresh connections. Per targeted route it starts a fresh relay and reports
//! the relay's peak RSS, whether it stayed up, what the hostile connections were
//! answered, and the status and latency of every genuine webhook.
//!
//! The flood needs one file descriptor per connection on each side: the soft limit of
//! this process (and so of the relay it starts) is raised to what it needs, up to the hard
//! limit, here only.

use crate::bodies::{run_seed, Generator};
use crate::compare::{self, CompareOpts, RelayProcess};
use crate::config::Source;
use crate::procstat::{mib, Proc};
use crate::stats::{ms, Samples};
use crate::Result;
use hookrelay_common::amqp::AmqpSettings;
use hookrelay_common::topology::QueueType;
use hookrelay_vendors::Vendor;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;

#[derive(Debug, Clone)]
pub struct FloodOpts {
    pub relay_bin: PathBuf,
    pub amqp: AmqpSettings,
    /// The relay's three sources, by vendor (genuine senders sign with these).
    pub sources: Vec<Source>,
    /// Routes to flood, one fresh relay each.
    pub targets: Vec<Vendor>,
    pub connections: usize,
    /// Declared body length of each hostile request; all but the last byte is sent.
    pub body: usize,
    /// Distinct source addresses the hostile connections come from (127.1.x.y).
    pub spread: usize,
    /// How long each run lasts (the flood starts 2 s in).
    pub duration: Duration,
    /// Gap between two genuine webhooks of one vendor.
    pub interval: Duration,
    pub relay_env: Vec<(String, String)>,
    pub keep: bool,
}

/// Where genuine webhooks come from: not the hostile addresses.
const GENUINE_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// What one hostile connection ended with.
fn outcome_of(answer: &[u8]) -> String {
    let line = answer.split(|b| *b == b'\r').next().unwrap_or_default();
    let text = String::from_utf8_lossy(line);
    match text.split(' ').nth(1) {
        Some(code) if code.len() == 3 => code.to_owned(),
        _ => "no answer".to_owned(),
    }
}

/// The hostile address of connection `i` among `spread` addresses: 127.1.x.y.
fn hostile_addr(i: usize, spread: usize) -> Ipv4Addr {
    let k = i % spread.max(1);
    Ipv4Addr::new(127, 1, (k / 250) as u8, (k % 250 + 1) as u8)
}

/// The head of a hostile request to `vendor`'s route: for a vendor whose credentials are
/// headers alone, a wrong credential header; for one whose MAC covers the body, a
/// well-formed, fresh signature (with the demo credentials) over another body, which
/// matches nothing.
fn hostile_head(vendor: Vendor, port: u16, len: usize) -> String {
    let now = time::OffsetDateTime::now_utc();
    let wrong = vendor.contract().samples().credential_header;
    let auth: String = vendor
        .sign(&vendor.demo_credentials(), b"{\"not\":\"this body\"}", now)
        .into_iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("content-type"))
        .map(|(n, v)| {
            if !vendor.signs_body() && n.eq_ignore_ascii_case(wrong) {
                format!("{n}: Basic d3Jvbmc=\r\n")
            } else {
                format!("{n}: {v}\r\n")
            }
        })
        .collect();
    format!(
        "POST /webhooks/{} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         {auth}Content-Length: {len}\r\n\r\n",
        vendor.name()
    )
}

/// The soft and hard `Max open files` of this process, from `/proc/self/limits`.
fn fd_limits() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut nums = line["Max open files".len()..].split_whitespace().map(|v| {
        if v == "unlimited" {
            Some(u64::MAX)
        } else {
            v.parse().ok()
        }
    });
    Some((nums.next()??, nums.next()??))
}

/// Raise the soft file-descriptor limit of this process (and so of the relay it starts)
/// to `want`, at most the hard limit, with util-linux's `prlimit` (the workspace forbids
/// `unsafe`, so no `setrlimit` here); returns the soft limit now in force.
pub fn raise_fd_limit(want: u64) -> u64 {
    let Some((soft, hard)) = fd_limits() else {
        return 0;
    };
    if soft < want {
        let to = want.min(hard);
        let _ = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={to}:"))
            .status();
    }
    fd_limits().map_or(0, |(soft, _)| soft)
}

/// One genuine sender's results.
#[derive(Debug, Default)]
pub struct Genuine {
    pub statuses: BTreeMap<String, usize>,
    pub latency: Samples,
    /// During the flood only (from its start to the end of the run).
    pub during: Samples,
}

/// One flooded route's results.
#[derive(Debug)]
pub struct FloodRun {
    pub target: Vendor,
    pub connections: usize,
    pub spread: usize,
    pub rss_before: Option<u64>,
    pub rss_peak: Option<u64>,
    pub alive: bool,
    pub hostile: BTreeMap<String, usize>,
    /// Hostile connections closed by the relay, and how long after their head.
    pub hostile_closed: Samples,
    pub hostile_bytes: u64,
    pub genuine: Vec<(String, Genuine)>,
}

impl FloodRun {
    pub fn markdown(&mut self) -> String {
        let mut out = String::new();
        let hostile = self
            .hostile
            .iter()
            .map(|(k, v)| format!("{v}× {k}"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "### flood of `/webhooks/{}`: {} connections from {} address(es)\n\n",
            self.target.name(),
            self.connections,
            self.spread
        ));
        out.push_str(&format!(
            "- relay RSS before {} MiB, peak (VmHWM) {} MiB; relay {} at the end\n",
            mib(self.rss_before),
            mib(self.rss_peak),
            if self.alive { "up" } else { "DOWN" }
        ));
        out.push_str(&format!(
            "- hostile answers: {hostile}; closed by the relay: {} (p50 {} ms, max {} ms after the head); {} MiB of hostile body written\n\n",
            self.hostile_closed.len(),
            ms(self.hostile_closed.percentile(50.0)),
            ms(self.hostile_closed.max()),
            self.hostile_bytes >> 20,
        ));
        out.push_str("| genuine sender | statuses | p50 ms | p99 ms | max ms | during the flood: n, p50, max ms |\n");
        out.push_str("| --- | --- | --- | --- | --- | --- |\n");
        for (name, g) in &mut self.genuine {
            let statuses = g
                .statuses
                .iter()
                .map(|(k, v)| format!("{v}× {k}"))
                .collect::<Vec<_>>()
                .join(", ");
            out.push_str(&format!(
                "| {name} | {statuses} | {} | {} | {} | {}, {}, {} |\n",
                ms(g.latency.percentile(50.0)),
                ms(g.latency.percentile(99.0)),
                ms(g.latency.max()),
                g.during.len(),
                ms(g.during.percentile(50.0)),
                ms(g.during.max()),
            ));
        }
        out
    }
}

pub async fn run(opts: &FloodOpts) -> Result<Vec<FloodRun>> {
    // Both ends of every connection, the relay's own files and some slack.
    let limit = raise_fd_limit(2 * opts.connections as u64 + 1024);
    if limit < opts.connections as u64 + 256 {
        return Err(format!(
            "the file-descriptor limit is {limit}, too low for {} connections (raise the hard limit)",
            opts.connections
        )
        .into());
    }
    let mut runs = Vec::new();
    for target in &opts.targets {
        runs.push(run_one(opts, *target).await?);
    }
    Ok(runs)
}

async fn run_one(opts: &FloodOpts, target: Vendor) -> Result<FloodRun> {
    let source = opts
        .sources
        .first()
        .cloned()
        .ok_or("no sources configured")?;
    let relay = compare::start_relay(&CompareOpts {
        relay_bin: opts.relay_bin.clone(),
        amqp: opts.amqp.clone(),
        source,
        concurrency: 1,
        queue_type: QueueType::Classic,
        rounds: 1,
        duration: opts.duration,
        ack: "broker".to_owned(),
        size: 0,
        channels: 1,
        relay_env: opts.relay_env.clone(),
        keep: opts.keep,
        floor: false,
    })
    .await?;
    let result = flood_relay(opts, target, &relay).await;
    let exchange = relay.exchange.clone();
    drop(relay);
    let _ = compare::delete_relay_topology(&opts.amqp, &exchange).await;
    result
}

async fn flood_relay(opts: &FloodOpts, target: Vendor, relay: &RelayProcess) -> Result<FloodRun> {
    let proc = Proc::new(relay.pid());
    let addr = SocketAddr::from(([127, 0, 0, 1], relay.port));
    let started = Instant::now();
    let end = started + opts.duration;
    let flood_at = started + Duration::from_secs(2);
    let stop = Arc::new(AtomicBool::new(false));

    // Genuine senders: each vendor from the genuine address, and the flooded vendor also
    // from a hostile address (a genuine sender that shares its address with an attacker,
    // as behind one NAT).
    let mut senders = Vec::new();
    for s in &opts.sources {
        senders.push((
            s.clone(),
            IpAddr::V4(GENUINE_ADDR),
            s.vendor.name().to_owned(),
        ));
    }
    if let Some(s) = opts.sources.iter().find(|s| s.vendor == target) {
        senders.push((
            s.clone(),
            IpAddr::V4(hostile_addr(0, opts.spread)),
            format!("{} (from a hostile address)", s.vendor.name()),
        ));
    }
    let mut genuine_tasks = Vec::new();
    for (source, local, label) in senders {
        let url = format!("{}/webhooks/{}", relay.base_url(), source.name);
        let interval = opts.interval;
        genuine_tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .local_address(local)
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client");
            let generator = Generator::new(source.vendor, source.credentials.clone(), run_seed());
            let mut g = Genuine::default();
            let mut n = 0_u64;
            while Instant::now() < end {
                let w = generator.make(n, time::OffsetDateTime::now_utc());
                n += 1;
                let mut req = http.post(&url).body(w.body);
                for (k, v) in w.headers {
                    req = req.header(k, v);
                }
                let sent = Instant::now();
                let status = match req.send().await {
                    Ok(r) => {
                        let s = r.status().as_u16().to_string();
                        let _ = r.bytes().await;
                        s
                    }
                    Err(e) if e.is_timeout() => "timeout".to_owned(),
                    Err(_) => "error".to_owned(),
                };
                let took = sent.elapsed();
                g.latency.record(took);
                if sent >= flood_at {
                    g.during.record(took);
                }
                *g.statuses.entry(status).or_default() += 1;
                tokio::time::sleep(interval).await;
            }
            (label, g)
        }));
    }

    // RSS sampler.
    let peak_seen = Arc::new(AtomicU64::new(0));
    let sampler = {
        let stop = stop.clone();
        let peak = peak_seen.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(rss) = proc.rss() {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    tokio::time::sleep_until(flood_at.into()).await;
    let rss_before = proc.rss();
    let body: Arc<[u8]> = vec![b' '; opts.body.saturating_sub(1)].into();
    let head: Arc<str> = hostile_head(target, relay.port, opts.body).into();
    let connecting = Arc::new(Semaphore::new(256));
    let written = Arc::new(AtomicU64::new(0));
    let mut hostile_tasks = Vec::with_capacity(opts.connections);
    for i in 0..opts.connections {
        let (body, head, connecting) = (body.clone(), head.clone(), connecting.clone());
        let written = written.clone();
        let local = SocketAddr::new(IpAddr::V4(hostile_addr(i, opts.spread)), 0);
        hostile_tasks.push(tokio::spawn(async move {
            let permit = connecting.acquire_owned().await.ok()?;
            let sock = TcpSocket::new_v4().ok()?;
            sock.bind(local).ok()?;
            let stream = sock.connect(addr).await.ok()?;
            drop(permit);
            let t0 = Instant::now();
            let (mut rd, mut wr) = stream.into_split();
            let writer = tokio::spawn(async move {
                if wr.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for part in body.chunks(64 * 1024) {
                    if wr.write_all(part).await.is_err() {
                        return;
                    }
                    written.fetch_add(part.len() as u64, Ordering::Relaxed);
                }
                // Hold: the last byte never comes. Keep the write half open.
                std::future::pending::<()>().await;
            });
            let mut answer = Vec::new();
            let mut buf = [0_u8; 1024];
            let closed = loop {
                match tokio::time::timeout_at(end.into(), rd.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break Some(t0.elapsed()),
                    Ok(Ok(n)) => {
                        if answer.len() < 4096 {
                            answer.extend_from_slice(&buf[..n]);
                        }
                    }
                    Err(_) => break None,
                }
            };
            writer.abort();
            Some((outcome_of(&answer), closed))
        }));
    }

    let mut hostile = BTreeMap::<String, usize>::new();
    let mut hostile_closed = Samples::new();
    for t in hostile_tasks {
        match t.await.ok().flatten() {
            Some((outcome, closed)) => {
                let label = match closed {
                    Some(_) => outcome,
                    None => format!("{outcome} (still open at the end)"),
                };
                *hostile.entry(label).or_default() += 1;
                if let Some(c) = closed {
                    hostile_closed.record(c);
                }
            }
            None => *hostile.entry("could not connect".to_owned()).or_default() += 1,
        }
    }
    let mut genuine = Vec::new();
    for t in genuine_tasks {
        genuine.push(t.await?);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let alive = reqwest::get(format!("{}/healthz", relay.base_url()))
        .await
        .is_ok_and(|r| r.status().is_success());
    let rss_peak = proc
        .hwm()
        .or(Some(peak_seen.load(Ordering::Relaxed)).filter(|p| *p > 0));
    Ok(FloodRun {
        target,
        connections: opts.connections,
        spread: opts.spread,
        rss_before,
        rss_peak,
        alive,
        hostile,
        hostile_closed,
        hostile_bytes: written.load(Ordering::Relaxed),
        genuine,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_addresses() {
        assert_eq!(outcome_of(b"HTTP/1.1 401 Unauthorized\r\n\r\n"), "401");
        assert_eq!(outcome_of(b""), "no answer");
        assert_eq!(hostile_addr(0, 1), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(hostile_addr(7, 1), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(hostile_addr(251, 300), Ipv4Addr::new(127, 1, 1, 2));
        let h = hostile_head(hookrelay_vendors::chatwoot::VENDOR, 8080, 2_097_152);
        assert!(h.contains("Content-Length: 2097152\r\n\r\n"));
        assert!(h.contains("X-Chatwoot-Signature: sha256="));
    }
}
