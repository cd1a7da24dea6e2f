//! `history` and `tail --since`: read the history stream the relay keeps every event on.
//!
//! `history --since WHEN [--until WHEN]` reads one window and stops: from the first chunk
//! written at or after `--since` to the last message written before `--until`, or to the
//! stream's end as it was at start. Both bounds are on the broker's clock, to the second,
//! through the stream's own time index, so adjacent windows (`--until T`, then `--since
//! T`) neither overlap nor leave a gap. Matching events (`--bind`, RabbitMQ topic
//! semantics) are printed as JSON lines, or republished with a confirm each to a queue or
//! an exchange. Memory is bounded by the prefetch: at most that many deliveries (and as
//! many unconfirmed republishes) are held at once, whatever the stream's size.
//!
//! `tail --since WHEN` reads the same stream from `WHEN` and simply keeps going: history
//! and live are one ordered log, so there is no seam to lose or repeat an event at.
//! After a reconnect it resumes at the offset after the last one printed.
//!
//! # Layout
//!
//! - [`when`]: parsing `WHEN` (RFC 3339 or a duration back from now).
//! - [`stream`]: attaching to the stream, offsets, finding a window's ends.

pub mod stream;
pub mod when;

use crate::cli::HistoryArgs;
use crate::consume;
use crate::settings::Settings;
use crate::topic::Patterns;
use futures_util::StreamExt;
use hookrelay_common::amqp::{self, Backoff};
use hookrelay_common::event::CloudEvent;

use lapin::options::{
    BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueDeclareOptions,
};

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    Acker, BasicProperties, Channel, Confirmation, Connection, ExchangeKind, PublisherConfirm,
};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};
use stream::{Start, StreamError};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Added to every republished event: when it was replayed (RFC 3339, UTC).
pub const REPLAYED_AT_HEADER: &str = "x-hookrelay-replayed-at";

/// Stored messages arrive in milliseconds; this long without one while reading a window
/// means the stream stopped delivering (rather than a slow broker).
const STALL: Duration = Duration::from_secs(30);
/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("--{flag} {value}: {reason}")]
    When {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("--until ({until}) is before --since ({since})")]
    Backwards { since: String, until: String },
    #[error("cannot reach RabbitMQ: {0}")]
    Connect(#[source] lapin::Error),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(
        "the target queue `{0}` does not exist: declare it first (history never creates queues)"
    )]
    NoQueue(String),
    #[error("the target exchange `{0}` does not exist")]
    NoExchange(String),
    #[error("republishing to {target} failed after {done} events: {reason}")]
    Republish {
        target: String,
        done: u64,
        reason: String,
    },
    #[error("the stream stopped delivering at offset {at}, before the window's end {end}")]
    Stalled { at: u64, end: u64 },
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
}

/// What a `history` run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub stream: String,
    /// Events that matched the filters (printed or republished).
    pub matched: u64,
    /// Events of the window read.
    pub read: u64,
    /// Stopped early by a signal or a closed stdout.
    pub stopped_early: bool,
}

impl Summary {
    /// The line printed on stderr at the end, always.
    pub fn line(&self) -> String {
        format!(
            "history: {} event{} from {} ({} read{})",
            self.matched,
            if self.matched == 1 { "" } else { "s" },
            self.stream,
            self.read,
            if self.stopped_early {
                ", stopped early"
            } else {
                ""
            }
        )
    }
}

/// Where matching events go.
#[derive(Debug, Clone)]
enum Target {
    Stdout,
    Queue(String),
    Exchange(String),
}

fn parse_when(
    flag: &'static str,
    value: &str,
    now: OffsetDateTime,
) -> Result<OffsetDateTime, HistoryError> {
    when::parse(value, now).map_err(|reason| HistoryError::When {
        flag,
        value: value.to_owned(),
        reason,
    })
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Run `history` until the window is read (or `shutdown`).
pub async fn run<S>(
    settings: &Settings,
    args: HistoryArgs,
    shutdown: S,
) -> Result<Summary, HistoryError>
where
    S: Future<Output = ()> + Send,
{
    let now = OffsetDateTime::now_utc();
    let since = parse_when("since", &args.since, now)?;
    let until = match &args.until {
        Some(u) => Some(parse_when("until", u, now)?),
        None => None,
    };
    if let Some(u) = until {
        if u < since {
            return Err(HistoryError::Backwards {
                since: rfc3339(since),
                until: rfc3339(u),
            });
        }
    }
    let target = match (&args.to_queue, &args.to_exchange) {
        (Some(q), _) => Target::Queue(q.trim().to_owned()),
        (None, Some(x)) => Target::Exchange(x.trim().to_owned()),
        (None, None) => Target::Stdout,
    };
    let stream_name = settings.history.stream_name(&settings.amqp.exchange);
    if let Target::Exchange(x) = &target {
        if *x == settings.amqp.exchange {
            tracing::warn!(
                exchange = %x,
                "republishing into the events exchange: the history stream gets these events a second time"
            );
        }
    }
    let prefetch = args.prefetch.unwrap_or(settings.worker.prefetch).max(1);
    let window = Window {
        stream: stream_name.clone(),
        since: when::unix_seconds(since),
        until: until.map(when::unix_seconds),
        patterns: Patterns::new(&args.bind),
        prefetch,
    };
    let conn = amqp::connect(
        &settings.amqp,
        &consume::connection_name("history", &stream_name),
    )
    .await
    .map_err(HistoryError::Connect)?;
    tracing::info!(
        stream = %stream_name,
        since = %rfc3339(since),
        until = %until.map(rfc3339).unwrap_or_else(|| "the end at start".into()),
        "reading history"
    );
    let result = read_window(&conn, &window, &target, shutdown).await;
    let _ = conn.close(200, ShortString::from("history done")).await;
    result
}

struct Window {
    stream: String,
    since: u64,
    until: Option<u64>,
    patterns: Patterns,
    prefetch: u16,
}

/// A republish waiting for its confirm, and the delivery to ack once it came.
struct Pending {
    acker: Acker,
    confirm: PublisherConfirm,
}

/// A failed passive declare means "not there" while the connection stands; otherwise it
/// is the connection's error.
fn missing(conn: &Connection, e: lapin::Error, not_there: HistoryError) -> HistoryError {
    if conn.status().connected() {
        not_there
    } else {
        HistoryError::Amqp(e)
    }
}

async fn open_target(conn: &Connection, target: &Target) -> Result<Option<Channel>, HistoryError> {
    let check = conn.create_channel().await?;
    let exists = match target {
        Target::Stdout => {
            let _ = check.close(200, ShortString::from("ok")).await;
            return Ok(None);
        }
        Target::Queue(q) => check
            .queue_declare(
                ShortString::from(q.as_str()),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|_| ())
            .map_err(|e| missing(conn, e, HistoryError::NoQueue(q.clone()))),
        Target::Exchange(x) => check
            .exchange_declare(
                ShortString::from(x.as_str()),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| missing(conn, e, HistoryError::NoExchange(x.clone()))),
    };
    exists?;
    let _ = check.close(200, ShortString::from("ok")).await;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(Some(ch))
}

/// The window's first and last offsets, `None` when it holds nothing.
async fn bounds(conn: &Connection, w: &Window) -> Result<Option<(u64, u64)>, HistoryError> {
    let Some(mut end) = stream::end_offset(conn, &w.stream, w.prefetch).await? else {
        return Ok(None);
    };
    if let Some(until) = w.until {
        match stream::first_offset(conn, &w.stream, Start::Timestamp(until)).await? {
            Some(0) => return Ok(None),
            Some(after) => end = end.min(after - 1),
            None => {}
        }
    }
    match stream::first_offset(conn, &w.stream, Start::Timestamp(w.since)).await? {
        Some(start) if start <= end => Ok(Some((start, end))),
        _ => Ok(None),
    }
}

async fn read_window<S>(
    conn: &Connection,
    w: &Window,
    target: &Target,
    shutdown: S,
) -> Result<Summary, HistoryError>
where
    S: Future<Output = ()> + Send,
{
    stream::ensure_exists(conn, &w.stream).await?;
    let publisher = open_target(conn, target).await?;
    let mut summary = Summary {
        stream: w.stream.clone(),
        ..Default::default()
    };
    let Some((start, end)) = bounds(conn, w).await? else {
        tracing::info!(stream = %w.stream, "the window holds no events");
        return Ok(summary);
    };
    tracing::info!(
        first_offset = start,
        last_offset = end,
        "reading the window"
    );
    let (ch, mut consumer) =
        stream::subscribe(conn, &w.stream, Start::Offset(start), w.prefetch).await?;
    let mut progress = Progress::new();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let window = usize::from(w.prefetch);
    let mut stdout = std::io::stdout();
    let mut shutdown = std::pin::pin!(shutdown);
    let outcome: Result<(), HistoryError> = async {
        loop {
            let next = tokio::select! {
                biased;
                _ = &mut shutdown => {
                    summary.stopped_early = true;
                    return Ok(());
                }
                n = tokio::time::timeout(STALL, consumer.next()) => n,
            };
            let delivery = match next {
                Err(_) => {
                    return Err(HistoryError::Stalled {
                        at: start + summary.read,
                        end,
                    })
                }
                Ok(None) => return Err(StreamError::Cancelled(w.stream.clone()).into()),
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(Some(Ok(d))) => d,
            };
            let offset = stream::offset_of(&delivery)
                .ok_or_else(|| StreamError::NotAStream(w.stream.clone()))?;
            if offset < start {
                delivery.acker.ack(BasicAckOptions::default()).await?;
                continue;
            }
            if offset > end {
                return Ok(());
            }
            summary.read += 1;
            if w.patterns.matches(delivery.routing_key.as_str()) {
                match (&publisher, target) {
                    (Some(ch), Target::Queue(_) | Target::Exchange(_)) => {
                        let (exchange, key) = match target {
                            Target::Queue(q) => ("", q.as_str()),
                            Target::Exchange(x) => (x.as_str(), delivery.routing_key.as_str()),
                            Target::Stdout => unreachable!("stdout has no publisher"),
                        };
                        let confirm = ch
                            .basic_publish(
                                ShortString::from(exchange),
                                ShortString::from(key),
                                // mandatory: an event nothing takes is returned, and that is
                                // a failure, not a silent drop.
                                BasicPublishOptions {
                                    mandatory: true,
                                    ..Default::default()
                                },
                                &delivery.data,
                                replay_properties(&delivery.properties),
                            )
                            .await?;
                        pending.push_back(Pending {
                            acker: delivery.acker,
                            confirm,
                        });
                        summary.matched += 1;
                        while pending.len() >= window {
                            settle(pending.pop_front(), target, &summary).await?;
                        }
                    }
                    _ => {
                        let line = crate::tail::json_line(&delivery.data);
                        if stdout
                            .write_all(&line)
                            .and_then(|()| stdout.flush())
                            .is_err()
                        {
                            // Nobody reads any more (`| head`): stop, as a pipe expects.
                            summary.stopped_early = true;
                            return Ok(());
                        }
                        summary.matched += 1;
                        delivery.acker.ack(BasicAckOptions::default()).await?;
                    }
                }
            } else {
                delivery.acker.ack(BasicAckOptions::default()).await?;
            }
            progress.tick(&summary);
            if offset >= end {
                return Ok(());
            }
        }
    }
    .await;
    // Every republish sent is confirmed (or reported) before the count is.
    let mut settled = outcome;
    while let Some(p) = pending.pop_front() {
        if settled.is_ok() {
            settled = settle(Some(p), target, &summary).await;
        }
    }
    progress.clear();
    let _ = ch.close(200, ShortString::from("history done")).await;
    if let Some(p) = publisher {
        let _ = p.close(200, ShortString::from("history done")).await;
    }
    settled.map(|()| summary)
}

async fn settle(
    p: Option<Pending>,
    target: &Target,
    summary: &Summary,
) -> Result<(), HistoryError> {
    let Some(p) = p else { return Ok(()) };
    let fail = |reason: String| HistoryError::Republish {
        target: match target {
            Target::Queue(q) => format!("queue {q}"),
            Target::Exchange(x) => format!("exchange {x}"),
            Target::Stdout => "stdout".into(),
        },
        done: summary.matched.saturating_sub(1),
        reason,
    };
    match p.confirm.await? {
        Confirmation::Ack(None) => {}
        Confirmation::Ack(Some(r)) => {
            return Err(fail(format!(
                "returned by the broker ({}): nothing is bound for that routing key",
                r.reply_text
            )))
        }
        Confirmation::Nack(_) => return Err(fail("nacked by the broker".into())),
        Confirmation::NotRequested => return Err(fail("publisher confirms are off".into())),
    }
    p.acker.ack(BasicAckOptions::default()).await?;
    Ok(())
}

/// The original's properties (content type, `message_id`, type, timestamp, app id,
/// headers, ...) plus [`REPLAYED_AT_HEADER`]; the broker's `x-stream-offset` is delivery
/// metadata, not part of the event, and is left out.
pub fn replay_properties(orig: &BasicProperties) -> BasicProperties {
    let mut headers: BTreeMap<ShortString, AMQPValue> = consume::clean_headers(orig);
    headers.retain(|k, _| k.as_str() != stream::OFFSET_HEADER);
    headers.insert(
        ShortString::from(REPLAYED_AT_HEADER),
        AMQPValue::LongString(LongString::from(rfc3339(OffsetDateTime::now_utc()))),
    );
    consume::republish_properties(orig, FieldTable::from(headers), None)
}

/// The progress line on stderr, only when stderr is a terminal (a log file gets the
/// count at the end, not a carriage-return animation).
struct Progress {
    tty: bool,
    started: Instant,
    last: Instant,
    drawn: bool,
}

impl Progress {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            tty: std::io::stderr().is_terminal(),
            started: now,
            last: now,
            drawn: false,
        }
    }

    fn tick(&mut self, s: &Summary) {
        if !self.tty || self.last.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        eprint!(
            "\r\x1b[K{} matched, {} read, {:.0} events/s",
            s.matched,
            s.read,
            s.read as f64 / secs
        );
        self.drawn = true;
    }

    fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[K");
        }
    }
}

/// `tail --since WHEN`: print matching events from `WHEN` on, then live, until
/// `shutdown` or a closed stdout. Reconnects resume after the last offset printed.
pub async fn follow<S>(
    settings: &Settings,
    since: &str,
    patterns: Patterns,
    json: bool,
    shutdown: S,
) -> Result<(), HistoryError>
where
    S: Future<Output = ()> + Send,
{
    let since = parse_when("since", since, OffsetDateTime::now_utc())?;
    let stream_name = settings.history.stream_name(&settings.amqp.exchange);
    let name = consume::connection_name("tail", &format!("{stream_name} since {}", rfc3339(since)));
    let mut next = Start::Timestamp(when::unix_seconds(since));
    let mut backoff = Backoff::new(
        Duration::from_millis(settings.amqp.reconnect_initial_ms),
        Duration::from_millis(settings.amqp.reconnect_max_ms),
    );
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            biased;
            _ = &mut shutdown => return Ok(()),
            c = amqp::connect(&settings.amqp, &name) => c,
        };
        let ended = match conn {
            Ok(conn) => {
                let r = follow_on(
                    &conn,
                    &stream_name,
                    &mut next,
                    &Follow {
                        patterns: &patterns,
                        json,
                        prefetch: settings.worker.prefetch,
                    },
                    shutdown.as_mut(),
                    &mut backoff,
                )
                .await;
                let _ = conn.close(200, ShortString::from("tail done")).await;
                r
            }
            Err(e) => Err(HistoryError::Connect(e)),
        };
        match ended {
            Ok(()) => return Ok(()),
            // Nothing to wait for: the stream is not there (or not a stream).
            Err(e @ HistoryError::Stream(StreamError::Missing(_) | StreamError::NotAStream(_))) => {
                return Err(e)
            }
            Err(e) => tracing::warn!(error = %e, "tail --since: session ended, reconnecting"),
        }
        tokio::select! {
            biased;
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// What `tail --since` prints.
struct Follow<'a> {
    patterns: &'a Patterns,
    json: bool,
    prefetch: u16,
}

async fn follow_on<S>(
    conn: &Connection,
    stream_name: &str,
    next: &mut Start,
    f: &Follow<'_>,
    mut shutdown: std::pin::Pin<&mut S>,
    backoff: &mut Backoff,
) -> Result<(), HistoryError>
where
    S: Future<Output = ()> + Send,
{
    stream::ensure_exists(conn, stream_name).await?;
    let (ch, mut consumer) = stream::subscribe(conn, stream_name, *next, f.prefetch).await?;
    backoff.reset();
    tracing::info!(stream = %stream_name, from = ?next, "consuming the history stream, then live");
    let mut out = std::io::stdout();
    let result = loop {
        let delivery = tokio::select! {
            biased;
            _ = &mut shutdown => break Ok(()),
            d = consumer.next() => match d {
                None => break Err(StreamError::Cancelled(stream_name.to_owned()).into()),
                Some(Err(e)) => break Err(e.into()),
                Some(Ok(d)) => d,
            },
        };
        let Some(offset) = stream::offset_of(&delivery) else {
            break Err(StreamError::NotAStream(stream_name.to_owned()).into());
        };
        // After a reconnect the stream is re-read from the next offset; anything before
        // it was printed already.
        if let Start::Offset(n) = *next {
            if offset < n {
                delivery.acker.ack(BasicAckOptions::default()).await?;
                continue;
            }
        }
        if f.patterns.matches(delivery.routing_key.as_str()) {
            let line = if f.json {
                Some(crate::tail::json_line(&delivery.data))
            } else {
                match serde_json::from_slice::<CloudEvent>(&delivery.data) {
                    Ok(ev) => Some(format!("{}\n", crate::tail::summary(&ev)).into_bytes()),
                    Err(e) => {
                        tracing::warn!(offset, error = %e, "not a CloudEvent, skipped");
                        None
                    }
                }
            };
            if let Some(line) = line {
                if out.write_all(&line).and_then(|()| out.flush()).is_err() {
                    tracing::info!("stdout closed, stopping");
                    break Ok(());
                }
            }
        }
        *next = Start::Offset(offset + 1);
        delivery.acker.ack(BasicAckOptions::default()).await?;
    };
    let _ = ch.close(200, ShortString::from("tail done")).await;
    result
}
