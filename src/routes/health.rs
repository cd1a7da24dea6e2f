//! `GET /healthz` (the process runs) and `GET /readyz` (events can be accepted durably).

use crate::relay::Relay;
use actix_web::{web, HttpResponse};
use serde_json::json;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `ok`: broker connected, nothing waiting in the spool. `degraded`: accepting into the
/// spool (broker away, or a backlog draining). `unavailable`: nothing durable (503).
pub async fn readyz(relay: web::Data<Relay>) -> HttpResponse {
    let connected = relay.broker.is_connected();
    let spool = relay.spool.as_ref();
    let depth = spool.map_or(0, |s| s.depth());
    let spool_writable = spool.is_some_and(|s| !s.is_full());
    // A full spool with the broker up still accepts (published directly, see
    // Relay::make_durable); with the broker down it cannot.
    let status = if connected && depth == 0 {
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
