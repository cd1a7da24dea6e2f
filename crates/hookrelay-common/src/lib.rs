//! What the relay and the workers share, so neither keeps a copy of the other's rules.
//!
//! # Layout
//!
//! - [`event`]: the CloudEvents 1.0 envelope and the normalized `data` object.
//! - [`routing`]: the one place routing keys are computed.
//! - [`topology`]: exchanges, queues and bindings, declared by code (and mirrored in
//!   `config/rabbitmq/definitions.json`).
//! - [`amqp`]: AMQP connection settings and connecting to a list of nodes.
//! - [`settings`]: layered configuration (default file → `--config` → `HOOKRELAY__*` env).
//! - [`secret`]: a string that never prints.
//! - [`logging`]: `tracing` set-up, human or JSON lines.

pub mod amqp;
pub mod event;
pub mod logging;
pub mod routing;
pub mod secret;
pub mod settings;
pub mod topology;

pub use secret::Secret;
