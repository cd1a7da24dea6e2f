//! `crash`: crash consistency of the spool, measured. Clients post unique webhooks while
//! the relay spools heavily; the relay is SIGKILLed at a random moment and started
//! again on the same spool, many times; at the end every event answered 200 must have
//! reached the exchange, and nothing may have been published that was never posted.

use crate::Result;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct CrashOpts {
    pub relay_bin: PathBuf,
    pub amqp_uri: String,
    pub runs: u32,
    pub concurrency: usize,
    /// SIGKILL after a random time in this range (ms) of load.
    pub min_ms: u64,
    pub max_ms: u64,
    /// Bytes of padding per webhook (bigger events: more pages per commit).
    pub pad: usize,
    pub seed: u64,
}

/// What happened to one posted webhook.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    /// No answer: the relay died with it in flight (may or may not be published).
    NoAnswer,
    Accepted,
    Refused(u16),
}

#[derive(Default, Debug)]
pub struct CrashReport {
    pub runs: u32,
    pub posted: u64,
    pub accepted: u64,
    pub refused: u64,
    pub in_flight_at_kill: u64,
    pub published_unique: u64,
    pub duplicates: u64,
    /// Answered 200 and never published: must be 0.
    pub lost: u64,
    /// Published but never posted: must be 0.
    pub phantom: u64,
    /// Published although answered with an error: must be 0.
    pub published_after_refusal: u64,
    /// In flight at a kill (no answer) and published anyway: allowed (the event was
    /// durable, the answer did not make it out).
    pub published_without_answer: u64,
    /// Start (spawn) to answering /healthz after each SIGKILL, ms.
    pub restart_ms: Vec<u64>,
}

impl CrashReport {
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.phantom == 0 && self.published_after_refusal == 0
    }

    pub fn print(&self) {
        let mut r = self.restart_ms.clone();
        r.sort_unstable();
        let pct = |p: f64| {
            r.get(((r.len() as f64 - 1.0) * p).round() as usize)
                .copied()
        };
        println!("crash consistency: {} SIGKILL runs", self.runs);
        println!(
            "  posted {}, answered 200: {}, refused: {}, no answer (in flight at a kill): {}",
            self.posted, self.accepted, self.refused, self.in_flight_at_kill
        );
        println!(
            "  published: {} distinct, {} duplicate deliveries (same id, at least once)",
            self.published_unique, self.duplicates
        );
        println!(
            "  lost (200, never published): {}   phantom (published, never posted): {}   published after a refusal: {}",
            self.lost, self.phantom, self.published_after_refusal
        );
        println!(
            "  in flight at a kill and published anyway: {}",
            self.published_without_answer
        );
        println!(
            "  restart after SIGKILL to /healthz: min {:?} ms, median {:?} ms, max {:?} ms",
            pct(0.0),
            pct(0.5),
            pct(1.0)
        );
        println!("  verdict: {}", if self.ok() { "OK" } else { "FAILED" });
    }
}

/// A small xorshift: the kill moments and modes come from `--seed`, so a failing run
/// can be repeated.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Relay {
    child: Child,
    base: String,
}

async fn spawn_relay(
    opts: &CrashOpts,
    dir: &Path,
    exchange: &str,
    ack: &str,
    uri: &str,
) -> Result<(Relay, Duration)> {
    let port = free_port()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("relay.log"))?;
    let started = Instant::now();
    let child = Command::new(&opts.relay_bin)
        .arg("serve")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env_remove("HOOKRELAY_CONFIG")
        .env("HOOKRELAY__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("HOOKRELAY__SPOOL__DIR", dir.join("spool"))
        .env("HOOKRELAY__AMQP__EXCHANGE", exchange)
        .env("HOOKRELAY__AMQP__URI", uri)
        .env("HOOKRELAY__AMQP__CONNECT_TIMEOUT_MS", "300")
        .env("HOOKRELAY__DURABILITY__ACK", ack)
        .env("HOOKRELAY__LOG__LEVEL", "warn")
        // No history stream: it would keep its disk on the broker after the run.
        .env("HOOKRELAY__HISTORY__ENABLED", "false")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let mut relay = Relay { child, base };
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client.get(format!("{}/healthz", relay.base)).send().await {
            if r.status().is_success() {
                return Ok((relay, started.elapsed()));
            }
        }
        if let Some(status) = relay.child.try_wait()? {
            return Err(format!(
                "the relay exited with {status} (see {})",
                dir.join("relay.log").display()
            )
            .into());
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = relay.child.kill();
            return Err("the relay did not answer /healthz within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn body(tag: &str, n: u64, pad: usize) -> Vec<u8> {
    format!(
        r#"{{"key":"{tag}-{n}","from":"user-{n}","groupId":42,"message":"{}","timeStamp":1791969697000}}"#,
        "x".repeat(pad)
    )
    .into_bytes()
}

/// The posted key an event carries (its raw payload is inside the CloudEvent).
fn key_of(event: &[u8], tag: &str) -> Option<String> {
    let text = std::str::from_utf8(event).ok()?;
    let at = text.find(&format!("\"key\":\"{tag}-"))? + 7;
    let end = text[at..].find('"')? + at;
    Some(text[at..end].to_owned())
}

async fn spool_depth(base: &str) -> Option<u64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix("hookrelay_spool_depth ")?
            .trim()
            .parse()
            .ok()
    })
}

pub async fn run(opts: &CrashOpts) -> Result<CrashReport> {
    let id = crate::short_id();
    let tag = format!("crash{id}");
    let exchange = format!("hookrelay.crash.{id}");
    let dir = std::env::temp_dir().join(format!("hookrelay-crash-{id}"));
    std::fs::create_dir_all(dir.join("spool"))?;
    let dead = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port()?);

    // The consumer: every delivery's key, counted, for the whole experiment.
    let conn = Connection::connect(&opts.amqp_uri, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    hookrelay_common::topology::declare_events(&ch, &exchange).await?;
    let queue = format!("{exchange}.check");
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        queue.as_str().into(),
        exchange.as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "crash-check".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let published: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let received = Arc::new(AtomicU64::new(0));
    {
        let (published, received, tag) = (published.clone(), received.clone(), tag.clone());
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let key = key_of(&d.data, &tag).unwrap_or_else(|| "<no key>".into());
                *published.lock().unwrap().entry(key).or_default() += 1;
                received.fetch_add(1, Ordering::Relaxed);
                let _ = d.ack(BasicAckOptions::default()).await;
            }
        });
    }

    let outcomes: Arc<Mutex<HashMap<String, Outcome>>> = Arc::default();
    let counter = Arc::new(AtomicU64::new(0));
    let mut rng = Rng(opts.seed.max(1));
    let mut report = CrashReport {
        runs: opts.runs,
        ..Default::default()
    };
    for run in 0..opts.runs {
        // Heavy spool writes three ways: everything spooled (broker away, either mode),
        // and spool mode with the broker up (appends and deletions interleaved).
        let (ack, uri) = match run % 3 {
            0 => ("broker", dead.as_str()),
            1 => ("spool", opts.amqp_uri.as_str()),
            _ => ("spool", dead.as_str()),
        };
        let (mut relay, took) = spawn_relay(opts, &dir, &exchange, ack, uri).await?;
        if run > 0 {
            report.restart_ms.push(took.as_millis() as u64);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for _ in 0..opts.concurrency {
            let (stop, counter, outcomes, base, tag, pad) = (
                stop.clone(),
                counter.clone(),
                outcomes.clone(),
                relay.base.clone(),
                tag.clone(),
                opts.pad,
            );
            clients.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let key = format!("{tag}-{n}");
                    outcomes
                        .lock()
                        .unwrap()
                        .insert(key.clone(), Outcome::NoAnswer);
                    let r = client
                        .post(format!("{base}/webhooks/kommunicate"))
                        .header("content-type", "application/json")
                        .header("authentication", "Basic YWJjZGVm")
                        .body(body(&tag, n, pad))
                        .send()
                        .await;
                    match r {
                        Ok(r) => {
                            let s = r.status().as_u16();
                            // The answer counts once it is fully read: a 200 whose
                            // body was cut by the kill is "no answer".
                            if r.bytes().await.is_ok() {
                                let o = if s == 200 {
                                    Outcome::Accepted
                                } else {
                                    Outcome::Refused(s)
                                };
                                outcomes.lock().unwrap().insert(key, o);
                            }
                        }
                        Err(_) => break,
                    }
                }
            }));
        }
        let wait = rng.range(opts.min_ms, opts.max_ms);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        relay.child.kill()?; // SIGKILL
        relay.child.wait()?;
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            let _ = c.await;
        }
        eprintln!(
            "run {}/{}: {ack} mode, broker {}, killed after {wait} ms, {} posted so far",
            run + 1,
            opts.runs,
            if uri == dead { "away" } else { "up" },
            counter.load(Ordering::Relaxed)
        );
    }
    // The last start: broker up, drain everything, stop cleanly.
    let (mut relay, took) = spawn_relay(opts, &dir, &exchange, "broker", &opts.amqp_uri).await?;
    report.restart_ms.push(took.as_millis() as u64);
    let accepted: HashSet<String> = outcomes
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, o)| **o == Outcome::Accepted)
        .map(|(k, _)| k.clone())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let depth = spool_depth(&relay.base).await;
        let all = {
            let p = published.lock().unwrap();
            accepted.iter().all(|k| p.contains_key(k))
        };
        if depth == Some(0) && all {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("gave up waiting: spool depth {depth:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Late duplicates still on their way.
    let mut last = received.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let now = received.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &relay.child.id().to_string()])
        .status();
    let _ = relay.child.wait();

    {
        let outcomes = outcomes.lock().unwrap();
        let published = published.lock().unwrap();
        report.posted = outcomes.len() as u64;
        report.accepted = accepted.len() as u64;
        for (key, o) in outcomes.iter() {
            match o {
                Outcome::Refused(_) => report.refused += 1,
                Outcome::NoAnswer => report.in_flight_at_kill += 1,
                Outcome::Accepted => {}
            }
            match (o, published.contains_key(key)) {
                (Outcome::Accepted, false) => report.lost += 1,
                (Outcome::Refused(_), true) => report.published_after_refusal += 1,
                (Outcome::NoAnswer, true) => report.published_without_answer += 1,
                _ => {}
            }
        }
        for (key, n) in published.iter() {
            if !outcomes.contains_key(key) {
                report.phantom += 1;
            }
            report.duplicates += n.saturating_sub(1);
        }
        report.published_unique = published.len() as u64;
    }

    let _ = ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let history = hookrelay_common::topology::history_name(&exchange);
    let _ = ch
        .queue_delete(history.as_str().into(), QueueDeleteOptions::default())
        .await;
    let unrouted = hookrelay_common::topology::unrouted_name(&exchange);
    let _ = ch
        .queue_delete(unrouted.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = ch
        .exchange_delete(unrouted.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    let _ = ch
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    let _ = conn.close(200, "bye".into()).await;
    if report.ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("kept {} for inspection", dir.display());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_found_in_the_event() {
        let ev = br#"{"id":"x","data":{"raw":{"key":"crashab-17","from":"u"}}}"#;
        assert_eq!(key_of(ev, "crashab").as_deref(), Some("crashab-17"));
        assert_eq!(key_of(ev, "other"), None);
    }
}
