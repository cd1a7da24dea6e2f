//! `GET /healthz` (the process runs) and `GET /readyz` (events can be accepted durably).

use crate::relay::Relay;
use actix_web::{web, HttpResponse};
use serde_json::json;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `ok`: broker connected, nothing waiting in the spool, the spool (if on) healthy.
/// `degraded`: accepting, but not the normal way (broker away and the spool writable, a
/// backlog draining, or the spool failed while the broker takes events directly).
/// `unavailable`: neither the broker nor the spool can take an event (503).
pub async fn readyz(relay: web::Data<Relay>) -> HttpResponse {
    let connected = relay.broker.is_connected();
    let spool = relay.spool.as_ref();
    let depth = spool.map_or(0, |s| s.depth());
    let health = spool.map(|s| s.health());
    let healthy = health.as_ref().is_none_or(|h| h.writable);
    let spool_writable = spool.is_some_and(|s| s.is_healthy() && !s.is_full());
    // A full or failed spool with the broker up still accepts (published directly, see
    // Relay::make_durable); with the broker down it cannot.
    let status = if connected && depth == 0 && healthy {
        "ok"
    } else if connected || spool_writable {
        "degraded"
    } else {
        "unavailable"
    };
    // Never affects `status`: without Redis the relay dedups in its own window.
    let dedup = relay.dedup.status();
    let body = json!({
        "status": status,
        "broker": if connected { "connected" } else { "disconnected" },
        "ack_mode": match relay.mode { crate::settings::AckMode::Broker => "broker", crate::settings::AckMode::Spool => "spool" },
        "dedup": {"backend": dedup.backend, "connected": dedup.connected},
        "spool": {
            "enabled": spool.is_some(),
            "healthy": healthy,
            "error": health.and_then(|h| h.error),
            "depth": depth,
            "bytes": spool.map_or(0, |s| s.bytes()),
            "max_bytes": spool.map_or(0, |s| s.max_bytes()),
        },
    });
    if status == "unavailable" {
        HttpResponse::ServiceUnavailable().json(body)
    } else {
        HttpResponse::Ok().json(body)
    }
}
