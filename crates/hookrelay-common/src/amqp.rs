//! AMQP connection settings, and connecting to the first answering node of a list.

use crate::Secret;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use serde::{Deserialize, Deserializer};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
pub struct AmqpSettings {
    /// One or more node URIs, tried in turn. Secret: they carry the password.
    #[serde(deserialize_with = "uri_list")]
    pub uri: Vec<Secret>,
    /// The durable topic exchange every event is published to.
    pub exchange: String,
    /// How long to wait for a publisher confirm before the event goes to the spool.
    #[serde(default = "d_confirm_timeout")]
    pub confirm_timeout_ms: u64,
    /// AMQP heartbeat: how fast a silently dead connection is noticed.
    #[serde(default = "d_heartbeat")]
    pub heartbeat_secs: u16,
    /// TCP + handshake timeout per node.
    #[serde(default = "d_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Reconnect backoff: first delay and cap (jittered, doubling).
    #[serde(default = "d_reconnect_initial")]
    pub reconnect_initial_ms: u64,
    #[serde(default = "d_reconnect_max")]
    pub reconnect_max_ms: u64,
    /// Publishing channels shared by all requests (confirms are pipelined on each).
    #[serde(default = "d_channels")]
    pub publish_channels: usize,
    /// The order the `uri` nodes are tried in.
    #[serde(default)]
    pub node_order: NodeOrder,
}

/// How a process orders the `amqp.uri` nodes before trying them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeOrder {
    /// Each process its own random order (fixed for the process's life), so the
    /// connections of many relays and workers spread over a cluster instead of all
    /// landing on the first node.
    #[default]
    Shuffle,
    /// The order given: the first answering node wins (e.g. a preferred local node).
    Listed,
}

fn d_confirm_timeout() -> u64 {
    5000
}
fn d_heartbeat() -> u16 {
    10
}
fn d_connect_timeout() -> u64 {
    3000
}
fn d_reconnect_initial() -> u64 {
    100
}
fn d_reconnect_max() -> u64 {
    5000
}
fn d_channels() -> usize {
    2
}

fn uri_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    Ok(crate::settings::string_or_list(d)?
        .into_iter()
        .map(Secret::new)
        .collect())
}

impl AmqpSettings {
    pub fn confirm_timeout(&self) -> Duration {
        Duration::from_millis(self.confirm_timeout_ms)
    }

    /// Check every URI parses; the error names the key, never the URI (it has a password).
    pub fn validate(&self) -> Result<(), crate::settings::SettingsError> {
        if self.uri.is_empty() {
            return Err(crate::settings::SettingsError::key(
                "amqp.uri",
                "is missing (give at least one amqp:// URI)",
            ));
        }
        for (i, u) in self.uri.iter().enumerate() {
            if let Err(e) = AMQPUri::from_str(u.expose()) {
                return Err(crate::settings::SettingsError::key(
                    format!("amqp.uri[{i}]"),
                    format!("is not a valid AMQP URI ({e})"),
                ));
            }
        }
        if self.exchange.trim().is_empty() {
            return Err(crate::settings::SettingsError::key(
                "amqp.exchange",
                "is missing",
            ));
        }
        Ok(())
    }
}

/// `scheme://host:port/vhost` without credentials, for logs.
pub fn redact_uri(uri: &str) -> String {
    match AMQPUri::from_str(uri) {
        Ok(u) => format!(
            "{}://{}:{}/{}",
            match u.scheme {
                lapin::uri::AMQPScheme::AMQP => "amqp",
                lapin::uri::AMQPScheme::AMQPS => "amqps",
            },
            u.authority.host,
            u.authority.port,
            u.vhost
        ),
        Err(_) => "[unparseable uri]".to_owned(),
    }
}

/// The frame size asked for unless a URI sets `frame_max` itself.
pub const DEFAULT_FRAME_MAX: u32 = 16 * 1024;

/// A seed drawn once per process: std's `RandomState` keys are random per process, and
/// the pid tells apart processes started in the same instant.
fn process_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish() | 1
    })
}

/// The indices `0..n` in the order `order` asks for; `shuffle` is a Fisher-Yates
/// permutation drawn from `seed` (the same seed gives the same order).
pub fn node_indices(n: usize, order: NodeOrder, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    if order == NodeOrder::Shuffle {
        let mut x = seed | 1;
        for i in (1..n).rev() {
            // xorshift64: spread, not secrecy, is what matters here.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            idx.swap(i, (x % (i as u64 + 1)) as usize);
        }
    }
    idx
}

/// Connect to the first node that answers, trying them in the configured order
/// (`amqp.node_order`). `name` is the connection name shown in the RabbitMQ management UI.
pub async fn connect(settings: &AmqpSettings, name: &str) -> Result<Connection, lapin::Error> {
    let mut last_err = None;
    let order = node_indices(settings.uri.len(), settings.node_order, process_seed());
    for uri in order.iter().map(|&i| &settings.uri[i]) {
        let mut parsed = match AMQPUri::from_str(uri.expose()) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "skipping unparseable amqp.uri entry");
                continue;
            }
        };
        // Heartbeats make a silently dead peer (cut cable, frozen VM) visible within
        // two intervals instead of the kernel's TCP timeout.
        if parsed.query.heartbeat.is_none() {
            parsed.query.heartbeat = Some(settings.heartbeat_secs);
        }
        // lapin keeps a send and a receive buffer of 32 frames each, zero-filled: at
        // RabbitMQ's default frame_max (128 KiB) that is 8 MiB of resident memory before
        // the first event. Webhook events fit a 16 KiB frame; larger ones are split.
        if parsed.query.frame_max.is_none() {
            parsed.query.frame_max = Some(DEFAULT_FRAME_MAX);
        }
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let attempt = tokio::time::timeout(
            Duration::from_millis(settings.connect_timeout_ms),
            Connection::connect_uri(parsed, props),
        )
        .await;
        match attempt {
            Ok(Ok(conn)) => {
                tracing::info!(node = %redact_uri(uri.expose()), connection_name = name, "connected to RabbitMQ");
                return Ok(conn);
            }
            Ok(Err(e)) => {
                tracing::warn!(node = %redact_uri(uri.expose()), error = %e, "RabbitMQ node refused");
                last_err = Some(e);
            }
            Err(_) => {
                tracing::warn!(node = %redact_uri(uri.expose()), "RabbitMQ node timed out");
                last_err = Some(lapin::Error::from(lapin::ErrorKind::IOError(
                    std::sync::Arc::new(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connect timed out",
                    )),
                )));
            }
        }
    }
    Err(last_err.unwrap_or_else(|| {
        lapin::Error::from(lapin::ErrorKind::IOError(std::sync::Arc::new(
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no usable amqp.uri"),
        )))
    }))
}

/// Capped exponential backoff with jitter, for reconnect loops.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    seed: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15)
            | 1;
        Self {
            initial,
            max,
            current: initial,
            seed,
        }
    }

    pub fn reset(&mut self) {
        self.current = self.initial;
    }

    /// The next delay: between half and all of the current step, which then doubles.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift: jitter needs no cryptographic quality, only spread.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let step = self.current.as_millis().max(1) as u64;
        let delay = step / 2 + self.seed % (step / 2 + 1);
        self.current = (self.current * 2).min(self.max);
        Duration::from_millis(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        let r = redact_uri("amqp://user:pa55@rabbit.internal:5672/%2f");
        assert!(!r.contains("pa55"));
        assert!(r.contains("rabbit.internal:5672"));
    }

    #[test]
    fn listed_keeps_the_order_and_shuffle_spreads_the_first_node() {
        assert_eq!(node_indices(3, NodeOrder::Listed, 42), vec![0, 1, 2]);
        let mut first = [0usize; 3];
        for seed in 0..3000u64 {
            let mut order = node_indices(
                3,
                NodeOrder::Shuffle,
                seed.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            first[order[0]] += 1;
            order.sort_unstable();
            assert_eq!(order, vec![0, 1, 2], "a permutation of every node");
        }
        for (node, n) in first.iter().enumerate() {
            assert!(
                *n > 700,
                "node {node} first in only {n} of 3000 orders: {first:?}"
            );
        }
        assert_eq!(node_indices(1, NodeOrder::Shuffle, 7), vec![0]);
        assert!(node_indices(0, NodeOrder::Shuffle, 7).is_empty());
    }

    #[test]
    fn backoff_grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let mut last_cap = 0;
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(800));
            last_cap = last_cap.max(d.as_millis());
        }
        assert!(last_cap >= 400);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
