//! `hookrelay-bench`: the instrument behind BENCHMARKS.md.
//!
//! - [`ceiling`]: what the broker can do for a raw publisher (the bound on the relay).
//! - [`load`]: authentic, unique webhooks against a running relay, with an exactly-once
//!   check of what reached the exchange, and the relay's CPU and memory.
//! - [`compare`]: starts a relay and alternates ceiling and load, one Markdown table.
//! - [`crash`]: SIGKILL at random moments under heavy spool writes, restart, check
//!   that every 200 was published and nothing else.
//! - [`flood`]: hostile connections holding large bodies against a relay it starts, with
//!   genuine webhooks alongside: the relay's peak memory and what genuine senders see.
//! - [`floor`]: the relay's stack without the relay's work, the floor for any relay here.
//! - [`history`]: `hookrelay-worker history`'s replay rate against the broker's own
//!   stream-read rate.
//! - [`bodies`], [`stats`], [`procstat`], [`config`]: the pure parts (unit-tested).

pub mod bodies;
pub mod ceiling;
pub mod compare;
pub mod config;
pub mod crash;
pub mod flood;
pub mod floor;
pub mod history;
pub mod load;
pub mod procstat;
pub mod stats;

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A short random name part (12 hex digits) for exchanges, queues and directories.
pub fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}
