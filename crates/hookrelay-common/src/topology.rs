//! Exchanges, queues and bindings, declared by code. `config/rabbitmq/definitions.json`
//! mirrors exactly this; a test compares the two so they cannot drift.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
use serde::Deserialize;

/// The alternate exchange of `exchange`, and the name of the queue that keeps what it gets.
pub fn unrouted_name(exchange: &str) -> String {
    format!("{exchange}.unrouted")
}
/// Where a worker's failed message waits out its retry delay.
pub fn retry_queue(queue: &str) -> String {
    format!("{queue}.retry")
}
/// Where a worker's message goes after `max_attempts` failures.
pub fn parked_queue(queue: &str) -> String {
    format!("{queue}.parked")
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn string(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

/// The events exchange (durable topic) with its alternate exchange (fanout) and the
/// durable queue that keeps messages no binding matched: nothing published is lost.
pub async fn declare_events(channel: &Channel, exchange: &str) -> lapin::Result<()> {
    let unrouted = unrouted_name(exchange);
    channel
        .exchange_declare(
            ShortString::from(unrouted.as_str()),
            ExchangeKind::Fanout,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            ShortString::from(unrouted.as_str()),
            durable_queue(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            ShortString::from(unrouted.as_str()),
            ShortString::from(unrouted.as_str()),
            ShortString::from(""),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            ShortString::from(exchange),
            ExchangeKind::Topic,
            durable_exchange(),
            events_exchange_arguments(exchange),
        )
        .await?;
    Ok(())
}

/// Arguments of the events exchange (also used by the definitions check).
pub fn events_exchange_arguments(exchange: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("alternate-exchange"),
        string(&unrouted_name(exchange)),
    );
    args
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

/// A worker's queue family: the work queue bound to the events exchange, its retry queue
/// (per-message TTL, dead-letters back to the work queue) and its parked queue.
#[derive(Debug, Clone)]
pub struct WorkerQueue {
    pub name: String,
    pub bindings: Vec<String>,
    pub queue_type: QueueType,
}

/// Arguments for the work and parked queues.
pub fn work_queue_arguments(queue_type: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        string(queue_type.as_str()),
    );
    args
}

/// Arguments for the retry queue: an expired message (its per-message TTL is the retry
/// delay) is dead-lettered through the default exchange straight back to the work queue.
pub fn retry_queue_arguments(queue: &str, queue_type: QueueType) -> FieldTable {
    let mut args = work_queue_arguments(queue_type);
    args.insert(ShortString::from("x-dead-letter-exchange"), string(""));
    args.insert(
        ShortString::from("x-dead-letter-routing-key"),
        string(queue),
    );
    args
}

pub async fn declare_worker_queue(
    channel: &Channel,
    exchange: &str,
    wq: &WorkerQueue,
) -> lapin::Result<()> {
    declare_events(channel, exchange).await?;
    channel
        .queue_declare(
            ShortString::from(wq.name.as_str()),
            durable_queue(),
            work_queue_arguments(wq.queue_type),
        )
        .await?;
    channel
        .queue_declare(
            ShortString::from(retry_queue(&wq.name).as_str()),
            durable_queue(),
            retry_queue_arguments(&wq.name, wq.queue_type),
        )
        .await?;
    channel
        .queue_declare(
            ShortString::from(parked_queue(&wq.name).as_str()),
            durable_queue(),
            work_queue_arguments(wq.queue_type),
        )
        .await?;
    for key in &wq.bindings {
        channel
            .queue_bind(
                ShortString::from(wq.name.as_str()),
                ShortString::from(exchange),
                ShortString::from(key.as_str()),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}
