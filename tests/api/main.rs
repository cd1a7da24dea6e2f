//! Relay integration tests: the real app on port 0, the real RabbitMQ on 127.0.0.1:5672,
//! a unique exchange, queue and spool per test so they run in parallel.

mod helpers;
mod proxy;

mod chain;
mod consumers;
mod durability;
mod errors;
mod fixtures;
mod flood;
mod hardening;
mod history;
mod hostile;
mod ops;
mod properties;
mod secrets;
mod shared_dedup;
mod spool_faults;
mod spool_ops;
mod tls;
