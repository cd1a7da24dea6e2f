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
//!
//! # Layout
//!
//! - [`config`]: `[worker]` settings, [`ConsumeConfig`] and which queue ([`QueueSpec`]).
//! - [`session`]: connect, declare, consume with a prefetch, reconnect, drain on shutdown.
//! - [`retry`]: settle a delivery (ack, or republish to retry/parked, confirmed, then ack)
//!   and the header and property helpers other commands reuse.

mod config;
mod retry;
mod session;

pub use config::{connection_name, ConsumeConfig, QueueSpec, WorkerSettings};
pub use retry::{
    attempts, clean_headers, parked_error, publish_confirmed, republish_properties, truncate,
    ATTEMPTS_HEADER, ERROR_HEADER,
};
pub use session::run;

use hookrelay_common::event::CloudEvent;
use std::future::Future;

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
