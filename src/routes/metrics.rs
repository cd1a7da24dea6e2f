//! `GET /metrics`: Prometheus/OpenMetrics text.

use crate::relay::Relay;
use actix_web::{web, HttpResponse};

pub async fn metrics(relay: web::Data<Relay>) -> HttpResponse {
    let m = &relay.metrics;
    if let Some(spool) = &relay.spool {
        m.spool_depth.set(spool.depth() as i64);
        m.spool_bytes.set(spool.bytes() as i64);
        let oldest = spool.oldest_timestamp();
        let age = if oldest == 0 {
            0.0
        } else {
            (time::OffsetDateTime::now_utc().unix_timestamp() - oldest as i64).max(0) as f64
        };
        m.spool_oldest_age.set(age);
        m.spool_healthy.set(i64::from(spool.is_healthy()));
        // The spool counts its failures itself (it has no metrics handle); bring the
        // counter up to its count.
        let seen = m.spool_errors.get();
        m.spool_errors.inc_by(spool.errors().saturating_sub(seen));
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(m.render())
}
