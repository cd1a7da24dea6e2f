//! Prometheus metrics (text format at `GET /metrics`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<Labels, Counter>,
    pub published: Family<Labels, Counter>,
    pub publish_latency: Histogram,
    pub spooled: Counter,
    pub republished: Counter,
    pub duplicates: Family<Labels, Counter>,
    pub spool_depth: Gauge,
    pub spool_bytes: Gauge,
    pub spool_oldest_age: Gauge<f64, AtomicU64>,
    pub spool_healthy: Gauge,
    pub spool_errors: Counter,
    pub broker_connected: Gauge,
    pub reconnects: Counter,
    pub dedup_backend_up: Gauge,
    /// Bytes of request bodies reserved in the in-flight body budget.
    pub inflight_body_bytes: Gauge,
    /// Requests refused because the in-flight body budget had no room.
    pub body_budget_exhausted: Counter,
    /// Handles of the labelled counters already created, found by borrowed label
    /// values: counting a request or a publish allocates nothing once its labels were
    /// seen (the family's own lookup needs an owned label set per call).
    request_handles: RwLock<HashMap<String, HashMap<u16, Counter>>>,
    published_handles: RwLock<HashMap<String, Counter>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hookrelay");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "http_requests",
            "Webhook requests by source and status",
            requests.clone(),
        );
        let published = Family::<Labels, Counter>::default();
        registry.register(
            "events_published",
            "Events confirmed by the broker, by routing key",
            published.clone(),
        );
        let publish_latency = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]);
        registry.register(
            "publish_latency_seconds",
            "Time from publish to the broker's confirm",
            publish_latency.clone(),
        );
        let spooled = Counter::default();
        registry.register(
            "events_spooled",
            "Events written to the local spool",
            spooled.clone(),
        );
        let republished = Counter::default();
        registry.register(
            "events_republished",
            "Events published from the spool after being accepted",
            republished.clone(),
        );
        let duplicates = Family::<Labels, Counter>::default();
        registry.register(
            "duplicates_dropped",
            "Deliveries answered duplicate:true and not published again, by source",
            duplicates.clone(),
        );
        let spool_depth = Gauge::default();
        registry.register(
            "spool_depth",
            "Events waiting in the spool",
            spool_depth.clone(),
        );
        let spool_bytes = Gauge::default();
        registry.register(
            "spool_bytes",
            "Bytes waiting in the spool",
            spool_bytes.clone(),
        );
        let spool_oldest_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "spool_oldest_age_seconds",
            "Age of the oldest spooled event",
            spool_oldest_age.clone(),
        );
        let spool_healthy = Gauge::default();
        // Healthy until the spool says otherwise (and always with the spool off).
        spool_healthy.set(1);
        registry.register(
            "spool_healthy",
            "1 while the spool can store events, 0 after a failed write until it can again",
            spool_healthy.clone(),
        );
        let spool_errors = Counter::default();
        registry.register(
            "spool_errors",
            "Spool operations that failed (writes, reopen attempts, write probes)",
            spool_errors.clone(),
        );
        let broker_connected = Gauge::default();
        registry.register(
            "broker_connected",
            "1 while the AMQP connection is up",
            broker_connected.clone(),
        );
        let reconnects = Counter::default();
        registry.register(
            "broker_reconnects",
            "AMQP connections established after a loss",
            reconnects.clone(),
        );
        let dedup_backend_up = Gauge::default();
        registry.register(
            "dedup_backend_up",
            "1 while the dedup backend answers (always for memory; for redis, 0 while the relay falls back to its own window)",
            dedup_backend_up.clone(),
        );
        let inflight_body_bytes = Gauge::default();
        registry.register(
            "inflight_body_bytes",
            "Bytes of request bodies being read or processed (server.max_inflight_body_bytes)",
            inflight_body_bytes.clone(),
        );
        let body_budget_exhausted = Counter::default();
        registry.register(
            "body_budget_exhausted",
            "Requests answered 503 because the in-flight body budget had no room",
            body_budget_exhausted.clone(),
        );
        Self {
            registry,
            requests,
            published,
            publish_latency,
            spooled,
            republished,
            duplicates,
            spool_depth,
            spool_bytes,
            spool_oldest_age,
            spool_healthy,
            spool_errors,
            broker_connected,
            reconnects,
            dedup_backend_up,
            inflight_body_bytes,
            body_budget_exhausted,
            request_handles: RwLock::default(),
            published_handles: RwLock::default(),
        }
    }

    pub fn request(&self, source: &str, status: u16) {
        if let Some(c) = read(&self.request_handles)
            .get(source)
            .and_then(|by_status| by_status.get(&status))
        {
            c.inc();
            return;
        }
        {
            let c = self
                .requests
                .get_or_create(&vec![
                    ("source", source.to_owned()),
                    ("status", status.to_string()),
                ])
                .clone();
            write(&self.request_handles)
                .entry(source.to_owned())
                .or_default()
                .insert(status, c.clone());
            c.inc();
        }
    }

    pub fn published(&self, routing_key: &str) {
        if let Some(c) = read(&self.published_handles).get(routing_key) {
            c.inc();
            return;
        }
        {
            let c = self
                .published
                .get_or_create(&vec![("routing_key", routing_key.to_owned())])
                .clone();
            write(&self.published_handles).insert(routing_key.to_owned(), c.clone());
            c.inc();
        }
    }

    pub fn duplicate(&self, source: &str) {
        self.duplicates
            .get_or_create(&vec![("source", source.to_owned())])
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
