//! The load generator: C closed-loop clients post authentic, unique webhooks for D
//! seconds, then the events that reached the exchange are checked against the 200s.
//!
//! The check queue (durable, classic or quorum, bound with `#` to the relay's exchange)
//! is declared before the first request and read after the last one, so during the run
//! the broker does exactly what it does for the ceiling: take persistent messages into a
//! queue nobody is reading. In spool mode the relay is still publishing its backlog when
//! the clients stop; the reading waits for it (until everything expected arrived, or
//! nothing arrived for `drain_idle`).

use crate::bodies::{run_seed, Generator};
use crate::config::Source;
use crate::procstat::{CpuWindow, Proc, Usage};
use crate::stats::Samples;
use crate::Result;
use bytes::Bytes;
use futures_util::StreamExt;
use hookrelay_common::amqp::{self, AmqpSettings};
use hookrelay_common::topology::{self, work_queue_arguments, QueueType};
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use lapin::options::{
    BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::Connection;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct LoadOpts {
    /// The relay's base URL (`http://127.0.0.1:8080`) or a full `/webhooks/<source>` URL.
    pub url: String,
    pub source: Source,
    pub concurrency: usize,
    pub duration: Duration,
    /// The relay's pid, for CPU per event and memory.
    pub pid: Option<u32>,
    pub amqp: AmqpSettings,
    /// The relay's exchange, which the check queue is bound to.
    pub exchange: String,
    pub queue_type: QueueType,
    /// Skip the exactly-once check (no queue, nothing read back).
    pub no_check: bool,
    pub drain_idle: Duration,
}

/// What arrived at the exchange, against what the relay answered 200 for.
#[derive(Debug, Clone, Default)]
pub struct Check {
    /// Distinct event ids answered 200 (`"duplicate": false`).
    pub expected: u64,
    /// Messages read from the check queue.
    pub received: u64,
    /// Expected ids that never arrived.
    pub missing: u64,
    /// Extra copies of an id beyond the first.
    pub duplicates: u64,
    /// Ids that arrived without a 200 (a 5xx or a timeout may still have been published).
    pub unexpected: u64,
    /// Mean size of an event's body on the wire, in bytes.
    pub mean_event_bytes: f64,
    /// From the end of the load to the last expected event read.
    pub drain: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub concurrency: usize,
    pub sent: u64,
    /// 200 with `"duplicate": false`.
    pub ok: u64,
    /// 200 with `"duplicate": true` (never expected: every body is unique).
    pub answered_duplicate: u64,
    /// Non-200 answers by status, and transport errors.
    pub errors: BTreeMap<String, u64>,
    /// First request to last answer.
    pub elapsed: Duration,
    pub p50_us: Option<u32>,
    pub p99_us: Option<u32>,
    pub p999_us: Option<u32>,
    pub max_us: Option<u32>,
    pub mean_us: Option<f64>,
    /// The relay's own mean publish-to-confirm time during the load (from its
    /// `hookrelay_publish_latency_seconds` histogram), in microseconds: the part of a
    /// request's latency spent waiting for the broker (broker mode).
    pub relay_confirm_mean_us: Option<f64>,
    /// Relay CPU (user + system) per accepted event, over the load and the drain.
    pub cpu_us_per_event: Option<f64>,
    /// Highest VmRSS sampled (every 100 ms) during the load and the drain.
    pub peak_rss: Option<u64>,
    /// VmHWM at the end: the peak since the relay started.
    pub hwm: Option<u64>,
    pub check: Option<Check>,
    /// CPU use during the load (relay, broker, bench, everything else), in cores.
    pub usage: Option<Usage>,
    /// The relay's spool depth (from `/readyz`) when the clients stopped: accepted
    /// events not yet confirmed by the broker (spool mode's backlog).
    pub spool_backlog: Option<u64>,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Accepted events the broker had confirmed by the end of the load, per second (the
    /// accepted rate minus the spool's backlog; equal to [`LoadResult::rate`] in broker
    /// mode).
    pub fn published_rate(&self) -> Option<f64> {
        self.spool_backlog
            .map(|b| self.ok.saturating_sub(b) as f64 / self.elapsed.as_secs_f64().max(1e-9))
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn print(&self) {
        use crate::stats::ms;
        println!(
            "load: {} clients, {} requests in {:.2} s: {} accepted = {:.0} req/s",
            self.concurrency,
            self.sent,
            self.elapsed.as_secs_f64(),
            self.ok,
            self.rate()
        );
        println!(
            "latency: p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us)
        );
        if let (Some(mean), Some(confirm)) = (self.mean_us, self.relay_confirm_mean_us) {
            println!(
                "mean request latency {:.2} ms, of which the relay's mean wait for the \
                 broker's confirm {:.2} ms (during the load, incl. spool publishing)",
                mean / 1000.0,
                confirm / 1000.0
            );
        }
        if self.errors.is_empty() {
            println!("errors: none");
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            println!("errors: {}", list.join(", "));
        }
        if self.answered_duplicate > 0 {
            println!(
                "answered \"duplicate\": true: {} (unexpected: every body is unique)",
                self.answered_duplicate
            );
        }
        if let Some(c) = &self.check {
            println!(
                "exactly-once check: {} accepted, {} read back, missing {}, duplicates {}, \
                 unaccepted-but-published {}; mean event {:.0} B; drained {:.2} s after the load",
                c.expected,
                c.received,
                c.missing,
                c.duplicates,
                c.unexpected,
                c.mean_event_bytes,
                c.drain.as_secs_f64()
            );
        }
        if let (Some(b), Some(r)) = (self.spool_backlog, self.published_rate()) {
            println!(
                "relay spool backlog when the load stopped: {b} events \
                 (confirmed by the broker during the load: {r:.0}/s)"
            );
        }
        if let Some(u) = &self.usage {
            println!("{}", u.describe());
        }
        if let Some(cpu) = self.cpu_us_per_event {
            println!("relay CPU: {cpu:.1} µs/event");
        }
        if self.peak_rss.is_some() || self.hwm.is_some() {
            println!(
                "relay RSS: peak sampled {} MiB, VmHWM {} MiB",
                crate::procstat::mib(self.peak_rss),
                crate::procstat::mib(self.hwm)
            );
        }
    }
}

/// The relay's base URL, from a base or a full webhook URL.
pub fn base_url(url: &str) -> &str {
    match url.find("/webhooks/") {
        Some(i) => &url[..i],
        None => url.trim_end_matches('/'),
    }
}

/// `(sum, count)` of a Prometheus histogram in a text exposition.
pub fn histogram_sum_count(text: &str, name: &str) -> Option<(f64, f64)> {
    let value = |suffix: &str| {
        let key = format!("{name}{suffix}");
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(key.as_str())?;
            // Unlabelled series only: the next character is the separating space.
            let v = rest.strip_prefix(' ')?;
            v.split_whitespace().next()?.parse::<f64>().ok()
        })
    };
    Some((value("_sum")?, value("_count")?))
}

async fn publish_latency(http: &reqwest::Client, base: &str) -> Option<(f64, f64)> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    histogram_sum_count(&text, "hookrelay_publish_latency_seconds")
}

/// The spool depth reported by `/readyz`, if the relay answers.
async fn spool_depth(http: &reqwest::Client, base: &str) -> Option<u64> {
    let resp = http.get(format!("{base}/readyz")).send().await.ok()?;
    let v: serde_json::Value = resp.json().await.ok()?;
    v.get("spool")?.get("depth")?.as_u64()
}

pub fn webhook_url(url: &str, source: &str) -> String {
    if url.contains("/webhooks/") {
        url.to_owned()
    } else {
        format!("{}/webhooks/{source}", url.trim_end_matches('/'))
    }
}

#[derive(Deserialize)]
struct Answer {
    id: String,
    #[serde(default)]
    duplicate: bool,
}

#[derive(Default)]
struct ClientOut {
    samples: Samples,
    ids: Vec<String>,
    sent: u64,
    answered_duplicate: u64,
    errors: BTreeMap<String, u64>,
    last: Option<Instant>,
}

/// Where the clients post: the relay's address and the request target.
#[derive(Debug, Clone)]
struct Target {
    /// `host:port`, for the TCP connection and the Host header.
    authority: String,
    /// `/webhooks/<source>` (and any query).
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self> {
        let uri: hyper::Uri = url.parse()?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("load posts plain HTTP/1.1; not an http:// URL: {url}").into());
        }
        let authority = uri.authority().ok_or_else(|| format!("no host in {url}"))?;
        let port = authority.port_u16().unwrap_or(80);
        Ok(Self {
            authority: format!("{}:{port}", authority.host()),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }
}

/// A POST of `body` to the target with the webhook's own headers.
fn build_request(
    target: &Target,
    pairs: &[(String, String)],
    body: Vec<u8>,
) -> Result<hyper::Request<Full<Bytes>>> {
    let mut request = hyper::Request::post(target.path.as_str())
        .header(hyper::header::HOST, target.authority.as_str())
        .body(Full::new(Bytes::from(body)))?;
    let headers = request.headers_mut();
    for (k, v) in pairs {
        headers.append(
            HeaderName::from_bytes(k.as_bytes())?,
            HeaderValue::from_str(v)?,
        );
    }
    Ok(request)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
type Driver = hyper::client::conn::http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

async fn open(target: &Target) -> std::io::Result<(Sender, Driver)> {
    let stream = TcpStream::connect(&target.authority).await?;
    stream.set_nodelay(true)?;
    hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)
}

/// One HTTP exchange on `sender`, with the connection driven in the same task (no
/// hand-off to a connection task per request: the load generator shares the cores with
/// what it measures, so it should cost as little as it can).
async fn exchange(
    sender: &mut Sender,
    driver: &mut Pin<Box<Driver>>,
    request: hyper::Request<Full<Bytes>>,
) -> std::result::Result<(hyper::StatusCode, Bytes), &'static str> {
    let work = async {
        sender.ready().await.map_err(|_| "transport error")?;
        let resp = sender
            .send_request(request)
            .await
            .map_err(|_| "transport error")?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|_| "body cut")?
            .to_bytes();
        Ok((status, body))
    };
    let timed = tokio::time::timeout(Duration::from_secs(30), work);
    tokio::select! {
        r = timed => r.unwrap_or(Err("timeout")),
        // The connection ended (closed by the relay, or an error) before the answer.
        _ = driver.as_mut() => Err("transport error"),
    }
}

async fn client(
    target: Arc<Target>,
    generator: Arc<Generator>,
    counter: Arc<AtomicU64>,
    deadline: Instant,
) -> Result<ClientOut> {
    let mut out = ClientOut {
        samples: Samples::with_capacity(1 << 14),
        ..Default::default()
    };
    let mut conn: Option<(Sender, Pin<Box<Driver>>)> = None;
    while Instant::now() < deadline {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let hook = generator.make(n, OffsetDateTime::now_utc());
        let request = build_request(&target, &hook.headers, hook.body)?;
        let started = Instant::now();
        out.sent += 1;
        let outcome = match &mut conn {
            Some(_) => None,
            None => match open(&target).await {
                Ok((s, d)) => {
                    conn = Some((s, Box::pin(d)));
                    None
                }
                Err(_) => Some("connect error".to_owned()),
            },
        };
        let outcome = match (outcome, &mut conn) {
            (Some(e), _) => Some(e),
            (None, None) => Some("connect error".to_owned()),
            (None, Some((sender, driver))) => match exchange(sender, driver, request).await {
                Ok((status, body)) if status == hyper::StatusCode::OK => {
                    match serde_json::from_slice::<Answer>(&body) {
                        Ok(a) if a.duplicate => {
                            out.answered_duplicate += 1;
                            None
                        }
                        Ok(a) => {
                            out.ids.push(a.id);
                            None
                        }
                        Err(_) => Some("200 without an event id".to_owned()),
                    }
                }
                Ok((status, _)) => Some(status.as_u16().to_string()),
                Err(e) => {
                    // A broken or timed-out connection is not reused.
                    conn = None;
                    Some(e.to_owned())
                }
            },
        };
        let done = Instant::now();
        out.samples.record(done - started);
        out.last = Some(done);
        if let Some(e) = outcome {
            *out.errors.entry(e).or_default() += 1;
        }
    }
    Ok(out)
}

/// Memory sampler: the highest VmRSS seen until `stop`.
async fn sample_rss(p: Proc, stop: Arc<AtomicBool>) -> Option<u64> {
    let mut peak = p.rss();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(r) = p.rss() {
            peak = Some(peak.map_or(r, |p| p.max(r)));
        }
    }
    peak
}

async fn declare_check_queue(conn: &Connection, opts: &LoadOpts) -> Result<String> {
    let ch = conn.create_channel().await?;
    // The same declaration as the relay's (idempotent), so the binding cannot fail on a
    // relay that has not declared it yet.
    topology::declare_events(&ch, &opts.exchange).await?;
    let name = format!("hookrelay.bench.check.{}", crate::short_id());
    ch.queue_declare(
        ShortString::from(name.as_str()),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        work_queue_arguments(opts.queue_type),
    )
    .await?;
    ch.queue_bind(
        ShortString::from(name.as_str()),
        ShortString::from(opts.exchange.as_str()),
        ShortString::from("#"),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let _ = ch.close(200, ShortString::from("declared")).await;
    Ok(name)
}

/// Read the check queue until every expected id arrived (plus a short grace for late
/// duplicates) or nothing arrived for `idle`.
async fn read_back(
    conn: &Connection,
    queue: &str,
    expected: &HashSet<String>,
    idle: Duration,
) -> Result<Check> {
    let ch = conn.create_channel().await?;
    let mut consumer = ch
        .basic_consume(
            ShortString::from(queue),
            ShortString::from("hookrelay-bench-check"),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let started = Instant::now();
    let mut seen: HashMap<String, u32> = HashMap::with_capacity(expected.len());
    let mut received = 0_u64;
    let mut bytes = 0_u64;
    let mut found = 0_usize;
    let mut done_at: Option<Instant> = None;
    let grace = Duration::from_millis(300);
    loop {
        let wait = if found == expected.len() { grace } else { idle };
        let next = match tokio::time::timeout(wait, consumer.next()).await {
            Ok(Some(d)) => d?,
            Ok(None) | Err(_) => break,
        };
        received += 1;
        bytes += next.data.len() as u64;
        let id = match next.properties.message_id() {
            Some(id) => id.to_string(),
            None => serde_json::from_slice::<serde_json::Value>(&next.data)
                .ok()
                .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned))
                .unwrap_or_default(),
        };
        let fresh = expected.contains(&id);
        let count = seen.entry(id).or_default();
        *count += 1;
        if *count == 1 && fresh {
            found += 1;
            if found == expected.len() {
                done_at = Some(Instant::now());
            }
        }
    }
    let _ = ch.close(200, ShortString::from("checked")).await;
    let duplicates = seen.values().map(|&c| u64::from(c.saturating_sub(1))).sum();
    let unexpected = seen.keys().filter(|id| !expected.contains(*id)).count() as u64;
    Ok(Check {
        expected: expected.len() as u64,
        received,
        missing: (expected.len() - found) as u64,
        duplicates,
        unexpected,
        mean_event_bytes: if received > 0 {
            bytes as f64 / received as f64
        } else {
            0.0
        },
        drain: done_at.unwrap_or_else(Instant::now) - started,
    })
}

pub async fn run(opts: &LoadOpts) -> Result<LoadResult> {
    let target = Arc::new(Target::parse(&webhook_url(&opts.url, &opts.source.name))?);
    let generator = Arc::new(Generator::new(
        opts.source.vendor,
        opts.source.credentials.clone(),
        run_seed(),
    ));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;

    let conn = if opts.no_check {
        None
    } else {
        Some(amqp::connect(&opts.amqp, "hookrelay-bench load check").await?)
    };
    let queue = match &conn {
        Some(c) => Some(declare_check_queue(c, opts).await?),
        None => None,
    };

    let proc = opts.pid.map(Proc::new);
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let sampler = proc.map(|p| tokio::spawn(sample_rss(p, stop_sampler.clone())));
    let cpu_before = proc.and_then(|p| p.cpu());

    let latency_before = publish_latency(&http, base_url(&opts.url)).await;
    let window = CpuWindow::start(opts.pid);
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + opts.duration;
    let clients: Vec<_> = (0..opts.concurrency.max(1))
        .map(|_| {
            tokio::spawn(client(
                target.clone(),
                generator.clone(),
                counter.clone(),
                deadline,
            ))
        })
        .collect();
    let mut result = LoadResult {
        concurrency: opts.concurrency,
        ..Default::default()
    };
    let mut samples = Samples::new();
    let mut ids: Vec<String> = Vec::new();
    let mut last = start;
    for c in futures_util::future::join_all(clients).await {
        let c = c??;
        result.sent += c.sent;
        result.answered_duplicate += c.answered_duplicate;
        for (k, v) in c.errors {
            *result.errors.entry(k).or_default() += v;
        }
        samples.merge(c.samples);
        ids.extend(c.ids);
        if let Some(l) = c.last {
            last = last.max(l);
        }
    }
    result.usage = Some(window.finish());
    result.spool_backlog = spool_depth(&http, base_url(&opts.url)).await;
    if let (Some((s0, c0)), Some((s1, c1))) = (
        latency_before,
        publish_latency(&http, base_url(&opts.url)).await,
    ) {
        if c1 > c0 {
            result.relay_confirm_mean_us = Some((s1 - s0) / (c1 - c0) * 1e6);
        }
    }
    result.elapsed = last - start;
    result.ok = ids.len() as u64;
    result.p50_us = samples.percentile(50.0);
    result.p99_us = samples.percentile(99.0);
    result.p999_us = samples.percentile(99.9);
    result.max_us = samples.max();
    result.mean_us = samples.mean();

    if let (Some(conn), Some(queue)) = (&conn, &queue) {
        let expected: HashSet<String> = ids.iter().cloned().collect();
        let check = read_back(conn, queue, &expected, opts.drain_idle).await;
        let ch = conn.create_channel().await?;
        let _ = ch
            .queue_delete(
                ShortString::from(queue.as_str()),
                QueueDeleteOptions::default(),
            )
            .await;
        let _ = ch.close(200, ShortString::from("bye")).await;
        let mut check = check?;
        // Two 200s with the same id would also be a duplicate (the relay answered
        // "duplicate": false twice), so count those too.
        check.duplicates += (ids.len() - expected.len()) as u64;
        result.check = Some(check);
    }
    if let Some(c) = conn {
        let _ = c.close(200, ShortString::from("bye")).await;
    }

    if let Some(p) = proc {
        if let (Some(before), Some(after)) = (cpu_before, p.cpu()) {
            if result.ok > 0 {
                result.cpu_us_per_event =
                    Some((after - before).as_micros() as f64 / result.ok as f64);
            }
        }
        stop_sampler.store(true, Ordering::Relaxed);
        if let Some(s) = sampler {
            result.peak_rss = s.await.ok().flatten();
        }
        result.hwm = p.hwm();
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        assert_eq!(
            webhook_url("http://127.0.0.1:8080/", "kommunicate"),
            "http://127.0.0.1:8080/webhooks/kommunicate"
        );
        assert_eq!(
            webhook_url("http://h:1/webhooks/acme", "kommunicate"),
            "http://h:1/webhooks/acme"
        );
        assert_eq!(base_url("http://h:1/webhooks/acme"), "http://h:1");
        assert_eq!(base_url("http://h:1/"), "http://h:1");
    }

    #[test]
    fn histogram_from_metrics_text() {
        let text = "# TYPE hookrelay_publish_latency_seconds histogram\n\
                    hookrelay_publish_latency_seconds_sum 12.5\n\
                    hookrelay_publish_latency_seconds_count 2500\n\
                    hookrelay_publish_latency_seconds_bucket{le=\"0.001\"} 3\n";
        assert_eq!(
            histogram_sum_count(text, "hookrelay_publish_latency_seconds"),
            Some((12.5, 2500.0))
        );
        assert_eq!(histogram_sum_count(text, "other"), None);
    }

    #[test]
    fn requests_carry_the_target_and_the_signed_headers() {
        let target = Target::parse("http://127.0.0.1:8080/webhooks/chatwoot").unwrap();
        assert_eq!(target.authority, "127.0.0.1:8080");
        assert_eq!(target.path, "/webhooks/chatwoot");
        assert_eq!(
            Target::parse("http://h/webhooks/x").unwrap().authority,
            "h:80"
        );
        assert!(Target::parse("https://h/webhooks/x").is_err());
        let req = build_request(
            &target,
            &[
                ("Content-Type".into(), "application/json".into()),
                ("X-Chatwoot-Delivery".into(), "abc".into()),
            ],
            b"{}".to_vec(),
        )
        .unwrap();
        assert_eq!(req.method(), hyper::Method::POST);
        assert_eq!(req.uri(), "/webhooks/chatwoot");
        assert_eq!(req.headers()["host"], "127.0.0.1:8080");
        assert_eq!(req.headers()["x-chatwoot-delivery"], "abc");
        assert_eq!(req.headers().len(), 3);
    }
}
