//! The history stream over AMQP 0-9-1: subscribe at a time, an offset or the end, read a
//! delivery's offset, and find where a time window starts and ends.
//!
//! RabbitMQ indexes a stream by chunk (a batch of messages written together) and by
//! offset (one per message, in order). A consumer attaches with `x-stream-offset`: a
//! timestamp (whole seconds) attaches at the first chunk written at or after it, a number
//! at that message, `last` at the last chunk. Each delivery says its offset in the
//! `x-stream-offset` header. There is no "how far does it go" call, so the end is found
//! by reading the last chunk (see [`end_offset`]).

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, Consumer};
use std::time::Duration;

/// The header RabbitMQ puts on every delivery from a stream: the message's offset.
pub const OFFSET_HEADER: &str = "x-stream-offset";

/// How long an attach may take to deliver what is already there before the part of the
/// stream asked for counts as empty (deliveries of stored chunks come in milliseconds).
const FIRST_WAIT: Duration = Duration::from_millis(1000);
/// A pause this long after the last chunk's deliveries means its end was reached.
const QUIET: Duration = Duration::from_millis(250);
/// Reading the end never takes longer than this, however busy the stream is: the end
/// "at start" is then the end within this long of the start.
const END_MAX: Duration = Duration::from_millis(2000);

/// Where a consumer attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first chunk written at or after these unix seconds.
    Timestamp(u64),
    /// This message.
    Offset(u64),
    /// The stream's last chunk.
    Last,
}

impl Start {
    fn argument(self) -> AMQPValue {
        match self {
            Start::Timestamp(s) => AMQPValue::Timestamp(s),
            Start::Offset(o) => AMQPValue::LongLongInt(i64::try_from(o).unwrap_or(i64::MAX)),
            Start::Last => AMQPValue::LongString(LongString::from("last")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("the history stream `{0}` does not exist: is history on for the relay (history.enabled), has it run since, and is history.stream (default `<amqp.exchange>.history`) the same for the relay and this worker?")]
    Missing(String),
    #[error("`{0}` is not a stream (its deliveries carry no x-stream-offset): history.stream must name the history stream the relay declares")]
    NotAStream(String),
    #[error("the broker cancelled the consumer on `{0}` (stream deleted?)")]
    Cancelled(String),
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
}

/// Fail unless `stream` exists (a passive declare, on its own channel: a miss closes it).
pub async fn ensure_exists(conn: &Connection, stream: &str) -> Result<(), StreamError> {
    let ch = conn.create_channel().await?;
    let r = ch
        .queue_declare(
            ShortString::from(stream),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    match r {
        Ok(_) => {
            let _ = ch.close(200, ShortString::from("checked")).await;
            Ok(())
        }
        Err(_) if conn.status().connected() => Err(StreamError::Missing(stream.to_owned())),
        Err(e) => Err(e.into()),
    }
}

/// A consumer on `stream` from `start`, holding at most `prefetch` unacked deliveries
/// (streams require a prefetch and manual acks; an ack only returns credit).
pub async fn subscribe(
    conn: &Connection,
    stream: &str,
    start: Start,
    prefetch: u16,
) -> Result<(Channel, Consumer), StreamError> {
    let ch = conn.create_channel().await?;
    ch.basic_qos(prefetch.max(1), BasicQosOptions::default())
        .await?;
    let mut args = FieldTable::default();
    args.insert(ShortString::from(OFFSET_HEADER), start.argument());
    let consumer = ch
        .basic_consume(
            ShortString::from(stream),
            ShortString::from(""),
            BasicConsumeOptions::default(),
            args,
        )
        .await?;
    Ok((ch, consumer))
}

/// The offset RabbitMQ gave this delivery, `None` if it did not come from a stream.
pub fn offset_of(delivery: &Delivery) -> Option<u64> {
    let v = delivery
        .properties
        .headers()
        .as_ref()?
        .inner()
        .get(OFFSET_HEADER)?;
    let n: i128 = match v {
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::Timestamp(n) => (*n).into(),
        _ => return None,
    };
    u64::try_from(n).ok()
}

/// The next delivery within `wait`; `None` on timeout.
async fn next_within(
    consumer: &mut Consumer,
    stream: &str,
    wait: Duration,
) -> Result<Option<Delivery>, StreamError> {
    match tokio::time::timeout(wait, consumer.next()).await {
        Err(_) => Ok(None),
        Ok(None) => Err(StreamError::Cancelled(stream.to_owned())),
        Ok(Some(Err(e))) => Err(e.into()),
        Ok(Some(Ok(d))) => Ok(Some(d)),
    }
}

async fn done(ch: Channel) {
    // Closing the channel ends its consumer; an unacked stream delivery costs nothing.
    let _ = ch.close(200, ShortString::from("probe done")).await;
}

/// The offset of the first message at `start`, `None` when nothing is stored there (a
/// time after the last chunk). Message offsets come from the deliveries themselves.
pub async fn first_offset(
    conn: &Connection,
    stream: &str,
    start: Start,
) -> Result<Option<u64>, StreamError> {
    let (ch, mut consumer) = subscribe(conn, stream, start, 1).await?;
    let first = next_within(&mut consumer, stream, FIRST_WAIT).await;
    done(ch).await;
    match first? {
        None => Ok(None),
        Some(d) => offset_of(&d)
            .map(Some)
            .ok_or_else(|| StreamError::NotAStream(stream.to_owned())),
    }
}

/// The offset of the last message stored now, `None` for an empty stream: attach at the
/// last chunk and read it to its end (its deliveries come in one burst; a pause of
/// [`QUIET`] ends it, and a busy stream is cut off after [`END_MAX`]).
pub async fn end_offset(
    conn: &Connection,
    stream: &str,
    prefetch: u16,
) -> Result<Option<u64>, StreamError> {
    let (ch, mut consumer) = subscribe(conn, stream, Start::Last, prefetch).await?;
    let result = async {
        let mut last = None;
        let deadline = tokio::time::Instant::now() + END_MAX;
        let mut wait = FIRST_WAIT;
        while let Some(d) = next_within(&mut consumer, stream, wait).await? {
            let o = offset_of(&d).ok_or_else(|| StreamError::NotAStream(stream.to_owned()))?;
            last = Some(last.map_or(o, |l: u64| l.max(o)));
            d.acker.ack(BasicAckOptions::default()).await?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            wait = QUIET.min(left);
        }
        Ok(last)
    }
    .await;
    done(ch).await;
    result
}
