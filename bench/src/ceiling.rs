//! The broker's ceiling: a raw lapin publisher doing what the relay does on the wire
//! (persistent ~1 KB messages, `mandatory`, the relay's properties, to a durable topic
//! exchange with one bound durable queue), with at most W messages unconfirmed. It has no
//! HTTP, no parsing and no signing, so the relay can at best approach its rate.
//!
//! With confirms, W closed-loop publishers each publish and wait for their confirm (as
//! W concurrent webhook requests do in the relay). Without confirms (`--no-confirms`), W
//! publishers fire and forget; at the end a confirmed marker on every channel proves the
//! broker took everything, and the rate counts up to that marker's confirm, so it is the
//! rate the broker absorbed, not the rate bytes left the client.

use crate::procstat::{CpuWindow, Usage};
use crate::stats::Samples;
use crate::Result;
use futures_util::future::join_all;
use hookrelay_common::amqp::{self, AmqpSettings};
use hookrelay_common::topology::{work_queue_arguments, QueueType};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct CeilingOpts {
    pub amqp: AmqpSettings,
    pub inflight: usize,
    pub queue_type: QueueType,
    pub confirms: bool,
    pub duration: Duration,
    pub size: usize,
    /// Publishing channels (the relay uses `amqp.publish_channels`, 2 by default).
    pub channels: usize,
}

#[derive(Debug, Clone)]
pub struct CeilingResult {
    pub confirms: bool,
    pub queue_type: QueueType,
    pub inflight: usize,
    /// Messages acked by the broker (with confirms) or published (without).
    pub messages: u64,
    pub nacked: u64,
    pub elapsed: Duration,
    /// Confirm latency, publish to confirm (empty without confirms).
    pub p50_us: Option<u32>,
    pub p99_us: Option<u32>,
    /// CPU use during the run, in cores.
    pub usage: Usage,
}

impl CeilingResult {
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn print(&self) {
        let mode = if self.confirms {
            "confirmed"
        } else {
            "no confirms (fire and forget)"
        };
        println!(
            "ceiling: {} queue, W={}, {mode}: {} msgs in {:.2} s = {:.0} msgs/s",
            self.queue_type.as_str(),
            self.inflight,
            self.messages,
            self.elapsed.as_secs_f64(),
            self.rate()
        );
        if self.confirms {
            println!(
                "confirm latency: p50 {} ms, p99 {} ms; nacked/returned: {}",
                crate::stats::ms(self.p50_us),
                crate::stats::ms(self.p99_us),
                self.nacked
            );
        }
        println!("{}", self.usage.describe());
    }
}

/// Properties like the relay's (content type, persistent, message id, type, timestamp,
/// app id, three headers), so the broker does the same work per message.
pub fn relay_like_properties(message_id: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (k, v) in [
        ("vendor", "kommunicate"),
        ("source", "kommunicate"),
        ("event", "message.created"),
    ] {
        headers.insert(
            ShortString::from(k),
            AMQPValue::LongString(LongString::from(v)),
        );
    }
    BasicProperties::default()
        .with_content_type(ShortString::from("application/cloudevents+json"))
        .with_delivery_mode(2)
        .with_message_id(ShortString::from(message_id))
        .with_type(ShortString::from("kommunicate.message.created"))
        .with_timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        )
        .with_app_id(ShortString::from("hookrelay-bench"))
        .with_headers(headers)
}

/// A JSON body of exactly `size` bytes (at least the 10 bytes of `{"pad":""}`).
pub fn payload(size: usize) -> Vec<u8> {
    let fill = size.saturating_sub(10);
    let mut v = Vec::with_capacity(fill + 10);
    v.extend_from_slice(b"{\"pad\":\"");
    v.extend(std::iter::repeat_n(b'x', fill));
    v.extend_from_slice(b"\"}");
    v
}

const ROUTING_KEY: &str = "kommunicate.message.created";

/// A durable topic exchange with one durable queue bound with `#`, both named `name`.
pub async fn declare_target(ch: &Channel, name: &str, queue_type: QueueType) -> Result<()> {
    ch.exchange_declare(
        ShortString::from(name),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(
        ShortString::from(name),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        work_queue_arguments(queue_type),
    )
    .await?;
    ch.queue_bind(
        ShortString::from(name),
        ShortString::from(name),
        ShortString::from("#"),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

async fn cleanup(conn: &Connection, name: &str) -> Result<u32> {
    let ch = conn.create_channel().await?;
    // Deleting the queue drops its messages (the purge) and the queue itself.
    let left = ch
        .queue_delete(ShortString::from(name), QueueDeleteOptions::default())
        .await?;
    ch.exchange_delete(ShortString::from(name), ExchangeDeleteOptions::default())
        .await?;
    let _ = ch.close(200, ShortString::from("done")).await;
    Ok(left)
}

struct Worker {
    samples: Samples,
    acked: u64,
    nacked: u64,
    last: Instant,
}

async fn publisher(
    ch: Channel,
    exchange: Arc<str>,
    body: Arc<Vec<u8>>,
    prefix: Arc<str>,
    confirms: bool,
    stop: Arc<AtomicBool>,
) -> Result<Worker> {
    let mut w = Worker {
        samples: Samples::with_capacity(if confirms { 1 << 16 } else { 0 }),
        acked: 0,
        nacked: 0,
        last: Instant::now(),
    };
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let id = format!("{prefix}-{n}");
        let started = Instant::now();
        let confirm = ch
            .basic_publish(
                ShortString::from(&*exchange),
                ShortString::from(ROUTING_KEY),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                relay_like_properties(&id),
            )
            .await?;
        if confirms {
            match confirm.await? {
                Confirmation::Ack(None) => {
                    w.acked += 1;
                    w.samples.record(started.elapsed());
                }
                _ => w.nacked += 1,
            }
        } else {
            w.acked += 1;
        }
        w.last = Instant::now();
    }
    Ok(w)
}

pub async fn run(opts: &CeilingOpts) -> Result<CeilingResult> {
    let conn = amqp::connect(&opts.amqp, "hookrelay-bench ceiling").await?;
    let name = format!("hookrelay.bench.ceiling.{}", crate::short_id());
    let setup = conn.create_channel().await?;
    declare_target(&setup, &name, opts.queue_type).await?;
    let result = measure(&conn, &name, opts).await;
    let cleaned = cleanup(&conn, &name).await;
    let _ = conn.close(200, ShortString::from("bye")).await;
    let result = result?;
    cleaned?;
    Ok(result)
}

async fn measure(conn: &Connection, name: &str, opts: &CeilingOpts) -> Result<CeilingResult> {
    let channels = opts.channels.max(1);
    let mut chans = Vec::with_capacity(channels);
    for _ in 0..channels {
        let ch = conn.create_channel().await?;
        if opts.confirms {
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
        }
        chans.push(ch);
    }
    let exchange: Arc<str> = Arc::from(name);
    let body = Arc::new(payload(opts.size));
    let stop = Arc::new(AtomicBool::new(false));
    let prefix = crate::short_id();
    let window = CpuWindow::start(None);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(opts.inflight);
    for i in 0..opts.inflight.max(1) {
        tasks.push(tokio::spawn(publisher(
            chans[i % channels].clone(),
            exchange.clone(),
            body.clone(),
            Arc::from(format!("{prefix}-{i}")),
            opts.confirms,
            stop.clone(),
        )));
    }
    tokio::time::sleep(opts.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut samples = Samples::new();
    let (mut acked, mut nacked) = (0, 0);
    let mut last = start;
    for t in join_all(tasks).await {
        let w = t??;
        samples.merge(w.samples);
        acked += w.acked;
        nacked += w.nacked;
        last = last.max(w.last);
    }
    if !opts.confirms {
        // Everything published before the marker is in the broker once it confirms it.
        let markers = chans.iter().map(|ch| async move {
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            let c = ch
                .basic_publish(
                    ShortString::from(name),
                    ShortString::from(ROUTING_KEY),
                    BasicPublishOptions::default(),
                    b"{}",
                    relay_like_properties("marker"),
                )
                .await?;
            c.await?;
            Ok::<_, lapin::Error>(())
        });
        for r in join_all(markers).await {
            r?;
        }
        last = Instant::now();
    }
    let elapsed = last - start;
    let usage = window.finish();
    for ch in chans {
        let _ = ch.close(200, ShortString::from("done")).await;
    }
    Ok(CeilingResult {
        confirms: opts.confirms,
        queue_type: opts.queue_type,
        inflight: opts.inflight,
        messages: acked,
        nacked,
        elapsed,
        p50_us: samples.percentile(50.0),
        p99_us: samples.percentile(99.0),
        usage,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn payload_has_the_requested_size_and_is_json() {
        for size in [12, 100, 1024] {
            let p = super::payload(size);
            assert_eq!(p.len(), size);
            let _: serde_json::Value = serde_json::from_slice(&p).unwrap();
        }
    }
}
