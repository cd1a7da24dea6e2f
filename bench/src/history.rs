//! `hookrelay-bench history`: how fast `hookrelay-worker history` replays the history
//! stream, against how fast the broker itself serves that stream, in the same run.
//!
//! Fills a fresh history stream (declared by the relay's own code) with N events, then in
//! each round: (1) the broker's read rate: a raw lapin consumer reads the stream from its
//! first offset with the same prefetch, acking each delivery, and nothing else; (2)
//! `hookrelay-worker history --since 1h --to-queue Q` (the release binary), republishing
//! every event with a confirm to a fresh queue, timed from spawn to exit (connecting and
//! finding the window's ends included) with its peak memory; (3) the same printing to
//! /dev/null. Everything it declared is deleted at the end.

use crate::procstat::{mib, Proc};
use crate::stats::median;
use crate::Result;
use futures_util::StreamExt;
use hookrelay_common::amqp::{self, AmqpSettings};
use hookrelay_common::topology::{self, HistoryDeclared, HistorySettings};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Connection};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct HistoryOpts {
    pub amqp: AmqpSettings,
    pub worker_bin: PathBuf,
    pub events: usize,
    pub size: usize,
    pub prefetch: u16,
    pub rounds: usize,
}

pub struct HistoryRound {
    pub broker_rate: f64,
    pub republish_rate: f64,
    pub republish_hwm: Option<u64>,
    pub print_rate: f64,
}

pub struct HistoryReport {
    /// The stream's files on this machine's broker, when its data directory is readable.
    pub disk_bytes: Option<u64>,
    pub events: usize,
    pub size: usize,
    pub prefetch: u16,
    pub fill_rate: f64,
    pub rounds: Vec<HistoryRound>,
}

/// A CloudEvent-shaped body of about `size` bytes.
fn body(i: usize, size: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"specversion":"1.0","id":"bench-{i}","source":"/webhooks/kommunicate","type":"kommunicate.message.created","time":"2026-01-01T00:00:00Z","datacontenttype":"application/json","vendor":"kommunicate","data":{{"pad":""#
    );
    let tail = r#""}}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    let mut b = head.into_bytes();
    b.extend(std::iter::repeat_n(b'x', pad));
    b.extend_from_slice(tail.as_bytes());
    b
}

async fn fill(conn: &Connection, exchange: &str, n: usize, size: usize) -> Result<f64> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let keys = [
        "kommunicate.message.created",
        "chatwoot.message.created",
        "cometchat.message.deleted",
        "chatwoot.conversation.status_changed",
    ];
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        let props = BasicProperties::default()
            .with_content_type(ShortString::from("application/cloudevents+json"))
            .with_delivery_mode(2)
            .with_message_id(ShortString::from(format!("bench-{i}")))
            .with_type(ShortString::from(keys[i % keys.len()]))
            .with_app_id(ShortString::from("hookrelay"));
        let c = ch
            .basic_publish(
                ShortString::from(exchange),
                ShortString::from(keys[i % keys.len()]),
                BasicPublishOptions::default(),
                &body(i, size),
                props,
            )
            .await?;
        pending.push_back(c);
        while pending.len() >= 512 {
            let c = pending.pop_front().expect("non-empty").await?;
            if !c.is_ack() {
                return Err("the broker nacked a fill publish".into());
            }
        }
    }
    for c in pending {
        if !c.await?.is_ack() {
            return Err("the broker nacked a fill publish".into());
        }
    }
    let _ = ch.close(200, ShortString::from("filled")).await;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// The broker's own rate: read all `n` from the first offset, ack each, nothing else.
async fn broker_read(conn: &Connection, stream: &str, n: usize, prefetch: u16) -> Result<f64> {
    let ch = conn.create_channel().await?;
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-stream-offset"),
        AMQPValue::LongString(LongString::from("first")),
    );
    let started = Instant::now();
    let mut consumer = ch
        .basic_consume(
            ShortString::from(stream),
            ShortString::from(""),
            BasicConsumeOptions::default(),
            args,
        )
        .await?;
    let mut got = 0usize;
    while got < n {
        let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .map_err(|_| format!("the stream stalled after {got} of {n}"))?
            .ok_or("consumer cancelled")??;
        d.acker.ack(BasicAckOptions::default()).await?;
        got += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let _ = ch.close(200, ShortString::from("read")).await;
    Ok(rate)
}

/// Run the worker binary to its exit; (events/s over its whole run, peak RSS).
async fn run_worker(
    opts: &HistoryOpts,
    exchange: &str,
    args: &[&str],
) -> Result<(f64, Option<u64>)> {
    let started = Instant::now();
    let mut cmd = Command::new(&opts.worker_bin);
    cmd.args(args)
        .env("HOOKRELAY__AMQP__EXCHANGE", exchange)
        .env("HOOKRELAY__LOG__LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(uri) = opts.amqp.uri.first() {
        cmd.env("HOOKRELAY__AMQP__URI", uri.expose());
    }
    let mut child = cmd.spawn()?;
    let proc = Proc::new(child.id());
    let mut hwm = None;
    let status = loop {
        if let Some(h) = proc.hwm() {
            hwm = Some(h);
        }
        if let Some(s) = child.try_wait()? {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let elapsed = started.elapsed().as_secs_f64();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    if !status.success() {
        return Err(format!("hookrelay-worker {args:?} failed: {err}").into());
    }
    let expected = format!("history: {} events", opts.events);
    if !err.contains(&expected) {
        return Err(format!("hookrelay-worker {args:?}: expected `{expected}`, got: {err}").into());
    }
    Ok((opts.events as f64 / elapsed, hwm))
}

pub async fn run(opts: &HistoryOpts) -> Result<HistoryReport> {
    let exchange = format!("hookrelay.bench.history.{}", crate::short_id());
    let conn = amqp::connect(&opts.amqp, "hookrelay-bench history").await?;
    let ch = conn.create_channel().await?;
    topology::declare_events(&ch, &exchange).await?;
    let history = HistorySettings::default();
    let stream = match topology::declare_history(&conn, &exchange, &history).await? {
        HistoryDeclared::Ready { stream } => stream,
        other => return Err(format!("history stream not declared: {other:?}").into()),
    };
    let result = async {
        let fill_rate = fill(&conn, &exchange, opts.events, opts.size).await?;
        let disk_bytes = stream_disk_bytes(&exchange);
        let mut rounds = Vec::new();
        let prefetch = opts.prefetch.to_string();
        for r in 0..opts.rounds {
            let broker_rate = broker_read(&conn, &stream, opts.events, opts.prefetch).await?;
            let target = format!("{exchange}.replayed.{r}");
            ch.queue_declare(
                ShortString::from(target.as_str()),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await?;
            let republish = run_worker(
                opts,
                &exchange,
                &["history", "--since", "1h", "--to-queue", &target, "--prefetch", &prefetch],
            )
            .await;
            ch.queue_delete(ShortString::from(target.as_str()), QueueDeleteOptions::default())
                .await?;
            let (republish_rate, republish_hwm) = republish?;
            let (print_rate, _) =
                run_worker(opts, &exchange, &["history", "--since", "1h", "--prefetch", &prefetch])
                    .await?;
            eprintln!(
                "round {}: broker {broker_rate:.0}/s, republish {republish_rate:.0}/s, print {print_rate:.0}/s",
                r + 1
            );
            rounds.push(HistoryRound {
                broker_rate,
                republish_rate,
                republish_hwm,
                print_rate,
            });
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(HistoryReport {
            disk_bytes,
            events: opts.events,
            size: opts.size,
            prefetch: opts.prefetch,
            fill_rate,
            rounds,
        })
    }
    .await;
    let _ = ch
        .queue_delete(
            ShortString::from(stream.as_str()),
            QueueDeleteOptions::default(),
        )
        .await;
    let unrouted = topology::unrouted_name(&exchange);
    let _ = ch
        .queue_delete(
            ShortString::from(unrouted.as_str()),
            QueueDeleteOptions::default(),
        )
        .await;
    for x in [exchange.as_str(), unrouted.as_str()] {
        let _ = ch
            .exchange_delete(ShortString::from(x), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, ShortString::from("bye")).await;
    result
}

/// Bytes of the stream's segment and index files, found by the exchange's unique id in a
/// local broker's data directory (`/var/lib/rabbitmq/mnesia/<node>/stream/<dir>`); `None`
/// for a remote broker or an unreadable directory.
fn stream_disk_bytes(exchange: &str) -> Option<u64> {
    let id = exchange.rsplit('.').next()?;
    let nodes = std::fs::read_dir("/var/lib/rabbitmq/mnesia").ok()?;
    for node in nodes.flatten() {
        let Ok(dirs) = std::fs::read_dir(node.path().join("stream")) else {
            continue;
        };
        for d in dirs.flatten() {
            if d.file_name().to_string_lossy().contains(id) {
                let files = std::fs::read_dir(d.path()).ok()?;
                return Some(
                    files
                        .flatten()
                        .filter_map(|f| f.metadata().ok())
                        .map(|m| m.len())
                        .sum(),
                );
            }
        }
    }
    None
}

impl HistoryReport {
    pub fn markdown(&self) -> String {
        let col = |f: fn(&HistoryRound) -> f64| -> Vec<f64> { self.rounds.iter().map(f).collect() };
        let broker = col(|r| r.broker_rate);
        let republish = col(|r| r.republish_rate);
        let print = col(|r| r.print_rate);
        let mut out = format!(
            "{} events of {} B in the stream (filled at {:.0}/s), prefetch {}, {} rounds\n\n",
            self.events,
            self.size,
            self.fill_rate,
            self.prefetch,
            self.rounds.len()
        );
        if let Some(b) = self.disk_bytes {
            out.push_str(&format!(
                "stream on disk: {b} bytes, {:.0} B per event ({:.0} B over the body)\n\n",
                b as f64 / self.events as f64,
                b as f64 / self.events as f64 - self.size as f64
            ));
        }
        out.push_str("| round | broker stream read (events/s) | `history --to-queue` (events/s) | ratio | peak RSS (MiB) | `history` to /dev/null (events/s) |\n");
        out.push_str("| --- | --- | --- | --- | --- | --- |\n");
        for (i, r) in self.rounds.iter().enumerate() {
            out.push_str(&format!(
                "| {} | {:.0} | {:.0} | {:.2}× | {} | {:.0} |\n",
                i + 1,
                r.broker_rate,
                r.republish_rate,
                r.republish_rate / r.broker_rate,
                mib(r.republish_hwm),
                r.print_rate
            ));
        }
        let m = |v: &[f64]| median(v).unwrap_or(0.0);
        out.push_str(&format!(
            "| median | {:.0} | {:.0} | {:.2}× | | {:.0} |\n",
            m(&broker),
            m(&republish),
            m(&republish) / m(&broker).max(1e-9),
            m(&print)
        ));
        out
    }
}
