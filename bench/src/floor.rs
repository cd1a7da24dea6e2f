//! The floor relay: the least that any relay built on hookrelay's stack does per webhook,
//! and nothing more.
//!
//! It is hookrelay's architecture with the relay's own work taken out: actix-web workers
//! (one per core, as the relay's default), one lapin connection with two publishing
//! channels and publisher confirms, a persistent `mandatory` publish with the relay's
//! properties to a topic exchange declared like the relay's, and a 200 only after the
//! broker's ack. No credential check, no parsing, no normalization, no envelope, no
//! dedup window, no spool, no metrics: the body is published as it came (padded with
//! JSON whitespace to `size` bytes, the relay's event size), under a fresh id.
//!
//! `compare --floor` runs it beside the relay, under the same load generator, in every
//! round. The floor's ratio to the ceiling is what the frameworks, the HTTP round trip
//! and the shared cores leave for *any* relay on this machine; the relay's ratio to the
//! floor is what hookrelay's own work costs.

use crate::ceiling::relay_like_properties;
use crate::Result;
use actix_web::{web, App, HttpResponse, HttpServer};
use hookrelay_common::amqp::{self, AmqpSettings};
use hookrelay_common::topology;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{Channel, Confirmation};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The routing key of every floor publish (the load's check queue is bound with `#`).
const ROUTING_KEY: &str = "kommunicate.message.created";

#[derive(Debug, Clone)]
pub struct FloorOpts {
    pub amqp: AmqpSettings,
    pub exchange: String,
    pub port: u16,
    /// HTTP workers; 0 = one per core (actix-web's default, and the relay's).
    pub workers: usize,
    pub channels: usize,
    /// Published body size: the request body padded with spaces to at least this.
    pub size: usize,
}

struct State {
    exchange: String,
    channels: Vec<Channel>,
    next: AtomicUsize,
    size: usize,
}

/// The request body, padded with JSON whitespace to at least `size` bytes.
pub fn padded(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len().max(size));
    out.extend_from_slice(body);
    out.resize(body.len().max(size), b' ');
    out
}

/// The answer the load generator reads the id from (the relay's shape).
fn answer(id: &str) -> String {
    format!(r#"{{"id":"{id}","type":"{ROUTING_KEY}","duplicate":false}}"#)
}

async fn publish(state: web::Data<State>, body: web::Bytes) -> HttpResponse {
    let id = uuid::Uuid::new_v4().to_string();
    let payload = padded(&body, state.size);
    let ch = &state.channels[state.next.fetch_add(1, Ordering::Relaxed) % state.channels.len()];
    let sent = ch
        .basic_publish(
            ShortString::from(state.exchange.as_str()),
            ShortString::from(ROUTING_KEY),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &payload,
            relay_like_properties(&id),
        )
        .await;
    match sent {
        Ok(confirm) => match confirm.await {
            Ok(Confirmation::Ack(None)) => HttpResponse::Ok()
                .content_type("application/json")
                .body(answer(&id)),
            _ => HttpResponse::ServiceUnavailable().finish(),
        },
        Err(_) => HttpResponse::ServiceUnavailable().finish(),
    }
}

async fn ready() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

/// Serve until the process is stopped.
pub async fn serve(opts: &FloorOpts) -> Result<()> {
    start(opts).await?.await?;
    Ok(())
}

/// Connect, declare, bind, and return the running server (a future: poll it to serve).
pub async fn start(opts: &FloorOpts) -> Result<actix_web::dev::Server> {
    let conn = amqp::connect(&opts.amqp, "hookrelay-bench floor").await?;
    let mut channels = Vec::with_capacity(opts.channels.max(1));
    for _ in 0..opts.channels.max(1) {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        channels.push(ch);
    }
    topology::declare_events(&channels[0], &opts.exchange).await?;
    let state = web::Data::new(State {
        exchange: opts.exchange.clone(),
        channels,
        next: AtomicUsize::new(0),
        size: opts.size,
    });
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(4 << 20))
            .route("/readyz", web::get().to(ready))
            .route("/webhooks/{source}", web::post().to(publish))
    })
    .disable_signals();
    if opts.workers > 0 {
        server = server.workers(opts.workers);
    }
    eprintln!(
        "floor relay on 127.0.0.1:{} (exchange {})",
        opts.port, opts.exchange
    );
    Ok(server.bind(("127.0.0.1", opts.port))?.run())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_padded_with_json_whitespace_and_never_cut() {
        let p = padded(br#"{"a":1}"#, 20);
        assert_eq!(p.len(), 20);
        assert!(p.starts_with(br#"{"a":1}"#));
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["a"], 1);
        let long = vec![b'x'; 50];
        assert_eq!(padded(&long, 20), long);
    }

    #[test]
    fn the_answer_carries_the_id_the_load_generator_reads() {
        let v: serde_json::Value = serde_json::from_str(&answer("abc")).unwrap();
        assert_eq!(v["id"], "abc");
        assert_eq!(v["duplicate"], false);
    }
}
