//! The one consume loop every worker kind runs: connect, declare, consume with a prefetch,
//! hand each event to a [`Handler`], ack only once the handler's work is durable, retry
//! failures through `<queue>.retry` and park what keeps failing in `<queue>.parked`.
//!
//! Failure policy, per delivery:
//!
//! - handler `Ok`                          → ack.
//! - handler [`Failure::Retry`], attempts left → republish to `<queue>.retry` with a
//!   per-message `expiration` (the retry delay) and the attempt count in
//!   [`ATTEMPTS_HEADER`]; the retry queue dead-letters it back to `<queue>` when it expires.
//! - handler [`Failure::Retry`] for the `max_attempts`-th time, [`Failure::Park`], or a body
//!   that is not a CloudEvent → republish to `<queue>.parked` with the error in
//!   [`ERROR_HEADER`].
//!
//! Every republish waits for the broker's publisher confirm *before* the original is acked,
//! so a crash between the two duplicates a message but never loses one.

use crate::amqp::{self, AmqpSettings, Backoff};
use crate::event::CloudEvent;
use crate::settings::{string_or_list, SettingsError};
use crate::topology::{self, QueueType, WorkerQueue};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tracing::Instrument;

/// How many times a message has failed so far (an integer header, absent = 0).
pub const ATTEMPTS_HEADER: &str = "x-hookrelay-attempts";
/// Why a parked message was parked: the last error, truncated.
pub const ERROR_HEADER: &str = "x-hookrelay-error";

/// Longest error text put in [`ERROR_HEADER`]; the log has the rest.
const MAX_ERROR_HEADER_BYTES: usize = 1024;

/// `[worker]` in the configuration: what every durable worker kind shares.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    /// The durable queue; unset or empty means the kind's default (`hookrelay.archive`, ...).
    #[serde(default)]
    pub queue: Option<String>,
    /// Binding keys on the events exchange (a TOML array or a comma-separated string).
    #[serde(default = "d_bind", deserialize_with = "string_or_list")]
    pub bind: Vec<String>,
    /// Unacknowledged deliveries held at once (basic.qos).
    #[serde(default = "d_prefetch")]
    pub prefetch: u16,
    /// Attempts before a message is parked.
    #[serde(default = "d_max_attempts")]
    pub max_attempts: u32,
    /// Delay before a failed message is retried.
    #[serde(default = "d_retry_delay")]
    pub retry_delay_ms: u64,
    #[serde(default)]
    pub queue_type: QueueType,
}

fn d_bind() -> Vec<String> {
    vec!["#".to_owned()]
}
fn d_prefetch() -> u16 {
    32
}
fn d_max_attempts() -> u32 {
    5
}
fn d_retry_delay() -> u64 {
    5000
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            queue: None,
            bind: d_bind(),
            prefetch: d_prefetch(),
            max_attempts: d_max_attempts(),
            retry_delay_ms: d_retry_delay(),
            queue_type: QueueType::default(),
        }
    }
}

impl WorkerSettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.prefetch == 0 {
            // 0 means "unlimited" to AMQP: a worker would pull the whole queue into memory.
            return Err(SettingsError::key(
                "worker.prefetch",
                "must be between 1 and 65535",
            ));
        }
        if self.max_attempts == 0 {
            return Err(SettingsError::key(
                "worker.max_attempts",
                "must be at least 1",
            ));
        }
        if self.retry_delay_ms == 0 {
            return Err(SettingsError::key(
                "worker.retry_delay_ms",
                "must be at least 1 (0 would retry in a hot loop)",
            ));
        }
        Ok(())
    }

    /// The queue name: the `--queue` flag, else `worker.queue`, else the kind's default.
    /// An empty value counts as missing.
    pub fn queue_name(&self, flag: Option<&str>, kind_default: &str) -> String {
        flag.filter(|q| !q.trim().is_empty())
            .or(self.queue.as_deref().filter(|q| !q.trim().is_empty()))
            .unwrap_or(kind_default)
            .trim()
            .to_owned()
    }

    /// The binding keys: the `--bind` flags when any were given, else `worker.bind`,
    /// else `#` (everything).
    pub fn bindings(&self, flags: &[String]) -> Vec<String> {
        let flags: Vec<String> = flags
            .iter()
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect();
        if !flags.is_empty() {
            flags
        } else if !self.bind.is_empty() {
            self.bind.clone()
        } else {
            d_bind()
        }
    }

    /// A [`ConsumeConfig`] for a durable worker of kind `kind` (`archive`, `forward`).
    pub fn consume_config(
        &self,
        amqp: AmqpSettings,
        kind: &str,
        queue: String,
        bindings: Vec<String>,
    ) -> ConsumeConfig {
        ConsumeConfig {
            connection_name: connection_name(kind, &queue),
            amqp,
            queue: QueueSpec::Durable(WorkerQueue {
                name: queue,
                bindings,
                queue_type: self.queue_type,
            }),
            prefetch: self.prefetch,
            max_in_flight: usize::from(self.prefetch),
            max_attempts: self.max_attempts,
            retry_delay: Duration::from_millis(self.retry_delay_ms),
        }
    }
}

/// The connection name shown in the RabbitMQ management UI, so an operator sees which
/// worker consumes which queue: `hookrelay-worker archive (hookrelay.archive)`.
pub fn connection_name(kind: &str, what: &str) -> String {
    format!("hookrelay-worker {kind} ({what})")
}

/// Which queue a worker consumes.
#[derive(Debug, Clone)]
pub enum QueueSpec {
    /// A worker's own durable queue family (work, retry, parked), declared with
    /// [`topology::declare_worker_queue`].
    Durable(WorkerQueue),
    /// A server-named, exclusive, auto-delete queue bound with these keys: for people
    /// watching a stream (`tail`). Declares nothing durable but the events exchange, and
    /// has nowhere to retry or park, so every delivery is acked once handled.
    Ephemeral { bindings: Vec<String> },
}

/// Everything [`run`] needs.
#[derive(Debug, Clone)]
pub struct ConsumeConfig {
    pub amqp: AmqpSettings,
    pub connection_name: String,
    pub queue: QueueSpec,
    /// basic.qos prefetch count.
    pub prefetch: u16,
    /// Deliveries handled concurrently (at most `prefetch`; 1 keeps order, e.g. for tail).
    pub max_in_flight: usize,
    pub max_attempts: u32,
    pub retry_delay: Duration,
}

/// One delivery, parsed, as a handler sees it.
#[derive(Debug)]
pub struct Incoming {
    pub event: CloudEvent,
    /// The message body exactly as received (the CloudEvent JSON).
    pub body: Vec<u8>,
    /// The delivery's routing key. After a retry it is the queue name (the retry queue
    /// dead-letters with that key); the event's own routing key is `event.ty`.
    pub routing_key: String,
    /// This attempt, counting from 1.
    pub attempt: u32,
    pub redelivered: bool,
}

/// Why a handler did not finish its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth trying again later (downstream 5xx, timeout, disk full, ...).
    Retry(String),
    /// Will never succeed: park at once.
    Park(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Retry(e) | Failure::Park(e) => f.write_str(e),
        }
    }
}

/// A worker kind's work. `Ok` promises the work is durable: the delivery is acked next.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, msg: &Incoming) -> impl Future<Output = Result<(), Failure>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("republishing to {queue} failed: {reason}")]
    Republish { queue: String, reason: String },
    #[error("the broker cancelled the consumer (queue deleted?)")]
    Cancelled,
    #[error("the delivery could not be acknowledged (its channel is gone)")]
    AckLost,
    #[error("a delivery task failed: {0}")]
    Task(String),
}

/// Consume until `shutdown` resolves, reconnecting with backoff forever.
///
/// On shutdown: cancel the consumer (no new deliveries), let the work in flight finish and
/// be acked (or retried/parked), close the channel and the connection, return. Deliveries
/// prefetched but not started are never acked, so the broker gives them to the next consumer.
pub async fn run<H, S>(cfg: ConsumeConfig, handler: Arc<H>, shutdown: S)
where
    H: Handler,
    S: Future<Output = ()> + Send,
{
    let cfg = Arc::new(cfg);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Backoff::new(
        Duration::from_millis(cfg.amqp.reconnect_initial_ms),
        Duration::from_millis(cfg.amqp.reconnect_max_ms),
    );
    let span = tracing::info_span!("consume", connection_name = %cfg.connection_name);
    async move {
        loop {
            let connected = tokio::select! {
                biased;
                _ = &mut shutdown => {
                    tracing::info!("shutdown requested while connecting");
                    return;
                }
                c = amqp::connect(&cfg.amqp, &cfg.connection_name) => c,
            };
            let ended = match connected {
                Ok(conn) => session(&cfg, &handler, conn, shutdown.as_mut(), &mut backoff).await,
                Err(e) => Err(e.into()),
            };
            match ended {
                // Only a shutdown ends a session with Ok: `shutdown` has resolved, never poll
                // it again.
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "consumer session ended, reconnecting"),
            }
            let delay = backoff.next_delay();
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    tracing::info!("shutdown requested while waiting to reconnect");
                    return;
                }
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
    .instrument(span)
    .await
}

/// What a delivery task shares with the session.
struct Ctx {
    channel: Channel,
    cfg: Arc<ConsumeConfig>,
}

/// One connection's worth of consuming. `Ok(())` only after a shutdown.
async fn session<H, S>(
    cfg: &Arc<ConsumeConfig>,
    handler: &Arc<H>,
    conn: Connection,
    mut shutdown: Pin<&mut S>,
    backoff: &mut Backoff,
) -> Result<(), ConsumeError>
where
    H: Handler,
    S: Future<Output = ()> + Send,
{
    let channel = conn.create_channel().await?;
    // Confirms: a retry or park republish must be on disk at the broker before the
    // original is acked, or a broker crash in between would lose the message.
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    // Prefetch: bounds the unacked deliveries (memory, and work redone after a crash) and
    // lets competing consumers share a queue fairly.
    channel
        .basic_qos(cfg.prefetch, BasicQosOptions::default())
        .await?;
    let queue = declare(&channel, &cfg.amqp.exchange, &cfg.queue).await?;
    // Manual acks (no_ack = false): a delivery counts as done only when we say so.
    let mut consumer = channel
        .basic_consume(
            ShortString::from(queue.as_str()),
            ShortString::from(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    backoff.reset();
    tracing::info!(
        queue = %queue,
        prefetch = cfg.prefetch,
        consumer_tag = %consumer.tag(),
        "consuming"
    );

    let ctx = Arc::new(Ctx {
        channel: channel.clone(),
        cfg: cfg.clone(),
    });
    let max_in_flight = cfg.max_in_flight.clamp(1, usize::from(cfg.prefetch.max(1)));
    let mut tasks: JoinSet<Result<(), ConsumeError>> = JoinSet::new();
    let ended: Result<(), ConsumeError> = loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break Ok(()),
            Some(joined) = tasks.join_next() => match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break Err(e),
                Err(e) => break Err(ConsumeError::Task(e.to_string())),
            },
            next = consumer.next(), if tasks.len() < max_in_flight => match next {
                Some(Ok(delivery)) => {
                    tasks.spawn(process(ctx.clone(), handler.clone(), delivery));
                }
                Some(Err(e)) => break Err(e.into()),
                None => break Err(ConsumeError::Cancelled),
            },
        }
    };

    match ended {
        Ok(()) => {
            tracing::info!(
                in_flight = tasks.len(),
                "shutting down: cancelling the consumer, finishing the work in flight"
            );
            if let Err(e) = channel
                .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                .await
            {
                tracing::warn!(error = %e, "basic.cancel failed");
            }
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "in-flight delivery not settled"),
                    Err(e) => tracing::warn!(error = %e, "in-flight delivery task failed"),
                }
            }
            close(&channel, &conn).await;
            tracing::info!("consumer stopped");
            Ok(())
        }
        Err(e) => {
            // The channel is (most likely) gone: whatever is in flight cannot be acked on it
            // any more, and the broker requeues it. Stop the tasks rather than let them
            // race a new session's redelivery of the same messages.
            tasks.abort_all();
            close(&channel, &conn).await;
            Err(e)
        }
    }
}

/// Close channel then connection, bounded: a dead peer must not hang the shutdown.
async fn close(channel: &Channel, conn: &Connection) {
    let bound = Duration::from_secs(5);
    if channel.status().connected() {
        match tokio::time::timeout(
            bound,
            channel.close(200, ShortString::from("worker stopping")),
        )
        .await
        {
            Ok(Err(e)) => tracing::debug!(error = %e, "channel close"),
            Err(_) => tracing::debug!("channel close timed out"),
            Ok(Ok(())) => {}
        }
    }
    if conn.status().connected() {
        match tokio::time::timeout(bound, conn.close(200, ShortString::from("worker stopping")))
            .await
        {
            Ok(Err(e)) => tracing::debug!(error = %e, "connection close"),
            Err(_) => tracing::debug!("connection close timed out"),
            Ok(Ok(())) => {}
        }
    }
}

/// Declare what the worker consumes; returns the queue name (server-named for ephemeral).
async fn declare(channel: &Channel, exchange: &str, spec: &QueueSpec) -> lapin::Result<String> {
    match spec {
        QueueSpec::Durable(wq) => {
            topology::declare_worker_queue(channel, exchange, wq).await?;
            Ok(wq.name.clone())
        }
        QueueSpec::Ephemeral { bindings } => {
            // The events exchange exactly as the relay declares it (same arguments, or the
            // broker refuses the declaration), so tail works before the relay ever ran.
            channel
                .exchange_declare(
                    ShortString::from(exchange),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    topology::events_exchange_arguments(exchange),
                )
                .await?;
            // Server-named, exclusive (only this connection), auto-delete (gone with us):
            // watching must leave nothing behind and must not compete with real workers.
            let q = channel
                .queue_declare(
                    ShortString::from(""),
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        durable: false,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            let name = q.name().as_str().to_owned();
            for key in bindings {
                channel
                    .queue_bind(
                        ShortString::from(name.as_str()),
                        ShortString::from(exchange),
                        ShortString::from(key.as_str()),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
            Ok(name)
        }
    }
}

/// What happens to a delivery once its handler is done with it.
enum Verdict {
    Done,
    Retry(String),
    Park(String),
}

async fn process<H: Handler>(
    ctx: Arc<Ctx>,
    handler: Arc<H>,
    mut delivery: lapin::message::Delivery,
) -> Result<(), ConsumeError> {
    let failed_before = attempts(&delivery.properties);
    let attempt = failed_before.saturating_add(1);
    let body = std::mem::take(&mut delivery.data);
    let span = tracing::info_span!(
        "delivery",
        delivery_tag = delivery.delivery_tag,
        attempt,
        event_id = tracing::field::Empty,
    );
    async move {
        let event = match serde_json::from_slice::<CloudEvent>(&body) {
            Ok(event) => event,
            Err(e) => {
                let reason = format!("not a CloudEvent: {e}");
                tracing::warn!(error = %reason, "unparseable message");
                return settle(&ctx, &delivery, &body, attempt, Verdict::Park(reason)).await;
            }
        };
        tracing::Span::current().record("event_id", event.id.as_str());
        let incoming = Arc::new(Incoming {
            event,
            body,
            routing_key: delivery.routing_key.as_str().to_owned(),
            attempt,
            redelivered: delivery.redelivered,
        });
        // The handler runs in its own task so a panic in it is a failed attempt, not a
        // delivery left unacked until the channel closes.
        let work = {
            let incoming = incoming.clone();
            tokio::spawn(async move { handler.handle(&incoming).await }.in_current_span())
        };
        let result = match work.await {
            Ok(r) => r,
            Err(e) => Err(Failure::Retry(format!("handler failed: {e}"))),
        };
        let verdict = match result {
            Ok(()) => Verdict::Done,
            Err(Failure::Park(e)) => Verdict::Park(e),
            Err(Failure::Retry(e)) if attempt >= ctx.cfg.max_attempts => Verdict::Park(e),
            Err(Failure::Retry(e)) => Verdict::Retry(e),
        };
        settle(&ctx, &delivery, &incoming.body, attempt, verdict).await
    }
    .instrument(span)
    .await
}

/// Ack, or republish (confirmed) to retry/parked and then ack.
async fn settle(
    ctx: &Ctx,
    delivery: &lapin::message::Delivery,
    body: &[u8],
    attempt: u32,
    verdict: Verdict,
) -> Result<(), ConsumeError> {
    let wq = match &ctx.cfg.queue {
        QueueSpec::Durable(wq) => wq,
        QueueSpec::Ephemeral { .. } => {
            // Nowhere to retry or park: say so and move on.
            match &verdict {
                Verdict::Done => {}
                Verdict::Retry(e) | Verdict::Park(e) => {
                    tracing::warn!(error = %e, "dropping a message on an ephemeral queue")
                }
            }
            return ack(delivery).await;
        }
    };
    match verdict {
        Verdict::Done => {}
        Verdict::Retry(error) => {
            let target = topology::retry_queue(&wq.name);
            tracing::info!(error = %error, retry_in_ms = ctx.cfg.retry_delay.as_millis() as u64, "attempt failed, will retry");
            let mut headers = clean_headers(&delivery.properties);
            headers.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongInt(count(attempt)));
            // Per-message TTL: the retry queue holds it this long, then dead-letters it back
            // to the work queue (the broker strips `expiration` when it dead-letters).
            let ttl = ctx.cfg.retry_delay.as_millis().max(1).to_string();
            let props = republish_properties(&delivery.properties, headers.into(), Some(&ttl));
            publish_confirmed(&ctx.channel, &target, body, props).await?;
        }
        Verdict::Park(error) => {
            let target = topology::parked_queue(&wq.name);
            tracing::warn!(error = %error, queue = %target, "parking message");
            let mut headers = clean_headers(&delivery.properties);
            headers.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongInt(count(attempt)));
            headers.insert(
                ERROR_HEADER.into(),
                AMQPValue::LongString(LongString::from(truncate(&error, MAX_ERROR_HEADER_BYTES))),
            );
            let props = republish_properties(&delivery.properties, headers.into(), None);
            publish_confirmed(&ctx.channel, &target, body, props).await?;
        }
    }
    ack(delivery).await
}

async fn ack(delivery: &lapin::message::Delivery) -> Result<(), ConsumeError> {
    if delivery.acker.ack(BasicAckOptions::default()).await? {
        Ok(())
    } else {
        Err(ConsumeError::AckLost)
    }
}

fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Publish to `queue` through the default exchange and wait for the broker's confirm.
/// `mandatory`: if the queue is gone the broker returns the message instead of dropping it
/// silently, and that counts as a failure.
pub async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), ConsumeError> {
    let confirm = channel
        .basic_publish(
            ShortString::from(""),
            ShortString::from(queue),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            props,
        )
        .await?
        .await?;
    let fail = |reason: &str| ConsumeError::Republish {
        queue: queue.to_owned(),
        reason: reason.to_owned(),
    };
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(fail(&format!(
            "returned by the broker: {}",
            returned.reply_text
        ))),
        Confirmation::Nack(_) => Err(fail("nacked by the broker")),
        Confirmation::NotRequested => Err(fail("publisher confirms are off on this channel")),
    }
}

/// How many times this message already failed (the [`ATTEMPTS_HEADER`], absent = 0).
pub fn attempts(props: &BasicProperties) -> u32 {
    let Some(v) = props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(ATTEMPTS_HEADER))
    else {
        return 0;
    };
    let n: i128 = match v {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::Timestamp(n) => (*n).into(),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes())
            .trim()
            .parse()
            .unwrap_or(0),
        AMQPValue::ShortString(s) => s.as_str().trim().parse().unwrap_or(0),
        _ => 0,
    };
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// The error text of a parked message, if any.
pub fn parked_error(props: &BasicProperties) -> Option<String> {
    match props.headers().as_ref()?.inner().get(ERROR_HEADER)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The message's headers without the broker's dead-letter history and without ours.
/// `x-death` is the broker's own bookkeeping: carried along by a republish it only grows
/// (and newer brokers ignore client-set copies); our attempt count is what matters.
pub fn clean_headers(props: &BasicProperties) -> BTreeMap<ShortString, AMQPValue> {
    props
        .headers()
        .as_ref()
        .map(|h| {
            h.inner()
                .iter()
                .filter(|(k, _)| {
                    let k = k.as_str();
                    k != ATTEMPTS_HEADER
                        && k != ERROR_HEADER
                        && k != "x-death"
                        && !k.starts_with("x-first-death-")
                        && !k.starts_with("x-last-death-")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The original's properties for a republish: same content type, message id, type,
/// timestamp, ... with new `headers`, persistent, and `expiration` only if given.
/// `user_id` is left out: the broker rejects one that is not the publishing user.
pub fn republish_properties(
    orig: &BasicProperties,
    headers: FieldTable,
    expiration: Option<&str>,
) -> BasicProperties {
    // delivery_mode 2: persistent, it must survive a broker restart like the original.
    let mut p = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(v) = orig.content_type() {
        p = p.with_content_type(v.clone());
    }
    if let Some(v) = orig.content_encoding() {
        p = p.with_content_encoding(v.clone());
    }
    if let Some(v) = orig.priority() {
        p = p.with_priority(*v);
    }
    if let Some(v) = orig.correlation_id() {
        p = p.with_correlation_id(v.clone());
    }
    if let Some(v) = orig.reply_to() {
        p = p.with_reply_to(v.clone());
    }
    if let Some(v) = orig.message_id() {
        p = p.with_message_id(v.clone());
    }
    if let Some(v) = orig.timestamp() {
        p = p.with_timestamp(*v);
    }
    if let Some(v) = orig.kind() {
        p = p.with_type(v.clone());
    }
    if let Some(v) = orig.app_id() {
        p = p.with_app_id(v.clone());
    }
    if let Some(v) = orig.cluster_id() {
        p = p.with_cluster_id(v.clone());
    }
    if let Some(e) = expiration {
        p = p.with_expiration(ShortString::from(e));
    }
    p
}

/// At most `max` bytes of `s`, cut on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_headers(pairs: Vec<(&str, AMQPValue)>) -> BasicProperties {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(k.into(), v);
        }
        BasicProperties::default().with_headers(t)
    }

    #[test]
    fn attempts_reads_any_integer_and_defaults_to_zero() {
        assert_eq!(attempts(&BasicProperties::default()), 0);
        assert_eq!(
            attempts(&with_headers(vec![(
                ATTEMPTS_HEADER,
                AMQPValue::LongInt(3)
            )])),
            3
        );
        assert_eq!(
            attempts(&with_headers(vec![(
                ATTEMPTS_HEADER,
                AMQPValue::LongLongInt(7)
            )])),
            7
        );
        assert_eq!(
            attempts(&with_headers(vec![(
                ATTEMPTS_HEADER,
                AMQPValue::LongString("2".into())
            )])),
            2
        );
        assert_eq!(
            attempts(&with_headers(vec![(
                ATTEMPTS_HEADER,
                AMQPValue::LongInt(-4)
            )])),
            0
        );
    }

    #[test]
    fn clean_headers_drops_death_history_and_ours() {
        let p = with_headers(vec![
            (ATTEMPTS_HEADER, AMQPValue::LongInt(3)),
            (ERROR_HEADER, AMQPValue::LongString("boom".into())),
            ("x-death", AMQPValue::Void),
            ("x-first-death-queue", AMQPValue::Void),
            ("vendor", AMQPValue::LongString("chatwoot".into())),
        ]);
        let h = clean_headers(&p);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("vendor"));
    }

    #[test]
    fn republish_keeps_identity_and_drops_user_id() {
        let orig = BasicProperties::default()
            .with_message_id("ev-1".into())
            .with_content_type("application/cloudevents+json".into())
            .with_type("chatwoot.message.created".into())
            .with_user_id("someone".into())
            .with_expiration("100".into());
        let p = republish_properties(&orig, FieldTable::default(), None);
        assert_eq!(p.message_id().as_ref().unwrap().as_str(), "ev-1");
        assert_eq!(
            p.kind().as_ref().unwrap().as_str(),
            "chatwoot.message.created"
        );
        assert_eq!(*p.delivery_mode(), Some(2));
        assert!(p.user_id().is_none());
        assert!(p.expiration().is_none());
        let r = republish_properties(&orig, FieldTable::default(), Some("250"));
        assert_eq!(r.expiration().as_ref().unwrap().as_str(), "250");
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }

    #[test]
    fn flags_win_over_config_and_empty_counts_as_missing() {
        let w = WorkerSettings {
            queue: Some(" ".into()),
            bind: vec!["chatwoot.#".into()],
            ..Default::default()
        };
        assert_eq!(w.queue_name(None, "hookrelay.archive"), "hookrelay.archive");
        assert_eq!(w.queue_name(Some("mine"), "hookrelay.archive"), "mine");
        assert_eq!(w.bindings(&[]), vec!["chatwoot.#".to_owned()]);
        assert_eq!(
            w.bindings(&["*.message.created".to_owned()]),
            vec!["*.message.created".to_owned()]
        );
        let none = WorkerSettings {
            bind: vec![],
            ..Default::default()
        };
        assert_eq!(none.bindings(&[]), vec!["#".to_owned()]);
    }

    #[test]
    fn validation_names_the_key() {
        let w = WorkerSettings {
            prefetch: 0,
            ..Default::default()
        };
        assert!(w
            .validate()
            .unwrap_err()
            .to_string()
            .contains("worker.prefetch"));
        let w = WorkerSettings {
            max_attempts: 0,
            ..Default::default()
        };
        assert!(w
            .validate()
            .unwrap_err()
            .to_string()
            .contains("worker.max_attempts"));
    }

    #[test]
    fn worker_settings_load_from_env() {
        #[derive(Deserialize)]
        struct Probe {
            worker: WorkerSettings,
        }
        let env = vec![
            ("HOOKRELAY__WORKER__QUEUE".to_owned(), "q.custom".to_owned()),
            (
                "HOOKRELAY__WORKER__BIND".to_owned(),
                "chatwoot.#, *.message.created".to_owned(),
            ),
            ("HOOKRELAY__WORKER__PREFETCH".to_owned(), "7".to_owned()),
            (
                "HOOKRELAY__WORKER__QUEUE_TYPE".to_owned(),
                "quorum".to_owned(),
            ),
        ];
        let p: Probe = crate::settings::load_with_env(None, env).unwrap();
        assert_eq!(p.worker.queue.as_deref(), Some("q.custom"));
        assert_eq!(p.worker.bind, vec!["chatwoot.#", "*.message.created"]);
        assert_eq!(p.worker.prefetch, 7);
        assert_eq!(p.worker.queue_type, QueueType::Quorum);
    }
}
