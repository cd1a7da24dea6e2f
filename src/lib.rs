//! hookrelay: chat-platform webhooks in, CloudEvents on RabbitMQ out, nothing lost.
//!
//! # Layout
//!
//! - [`settings`]: the typed, validated settings tree (errors name the key).
//! - [`startup`]: builds the app (binds, starts the broker supervisor and spool drainer),
//!   runs it until the shutdown input, then drains.
//! - [`routes`]: `POST /webhooks/{source}`, `/healthz`, `/readyz`, `/metrics`.
//! - [`limits`]: abuse limits before the body is read: per-source IP allowlists (behind
//!   trusted proxies), per-source rate limits, the body-read deadline.
//! - [`budget`]: the budget for request bodies in flight, with shares for senders not
//!   yet authenticated and per client.
//! - [`envelope`]: normalized event → event id, routing key, CloudEvent bytes.
//! - [`relay`]: shared state and the durability decision (broker confirm or spool).
//! - [`broker`]: the supervised AMQP connection, pipelined publisher confirms.
//! - [`spool`]: the crash-safe local spool (redb), group commit, ordered drainer, and
//!   its fault handling (failed writes, reopen, damaged files).
//! - [`spool_cli`]: `hookrelay spool status|verify|export|drain|quarantine`.
//! - [`dedup`]: the bounded dedup window.
//! - [`metrics`]: Prometheus metrics.
//! - [`error`]: HTTP error statuses and bodies.
//! - [`cli`]: `send` and `healthcheck` clients.
//!
//! Vendor code lives in the `hookrelay-vendors` crate (pure, no I/O); what the relay and
//! the workers share (event type, routing, topology, AMQP, settings loading) lives in
//! `hookrelay-common`. The webhook path's safety invariants, which the fuzz target and
//! the property tests check, live in `hookrelay-test-support` (not in the relay).

pub mod broker;
pub mod budget;
pub mod cli;
pub mod dedup;
pub mod envelope;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod relay;
pub mod routes;
pub mod settings;
pub mod spool;
pub mod spool_cli;
pub mod startup;
