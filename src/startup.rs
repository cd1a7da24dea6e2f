//! Building and running the application: bind (port 0 works, for tests), start the broker
//! supervisor and the spool drainer, serve, and on the shutdown input drain in order:
//! HTTP in-flight requests → outstanding confirms → spool writes → AMQP connection.

use crate::broker::Broker;
use crate::dedup::{Dedup, RedisOptions};
use crate::error::ApiError;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::relay::Relay;
use crate::routes;
use crate::settings::DedupBackend;
use crate::settings::Validated;
use crate::spool::{self, Spool};
use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer, ResponseError};
use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// One line an operator can act on: what is wrong (naming the file, or the key
    /// `spool.dir`) and what to run next.
    #[error("{}", spool_hint(dir, source))]
    Spool {
        dir: std::path::PathBuf,
        #[source]
        source: spool::SpoolError,
    },
    #[error("configuration key `dedup.redis_url`: {0}")]
    Dedup(String),
    #[error("server: {0}")]
    Server(#[from] std::io::Error),
}

fn spool_hint(dir: &std::path::Path, e: &spool::SpoolError) -> String {
    use spool::SpoolError;
    match e {
        SpoolError::Damaged { .. } => format!("{e}; {}", spool::store::next_steps(dir)),
        SpoolError::Locked(_) => format!(
            "{e}; stop that process first, or give this relay its own spool.dir"
        ),
        SpoolError::Dir { .. } => e.to_string(),
        other => format!(
            "cannot open the spool in {} ({other}); check spool.dir, then `hookrelay spool verify --dir {}`",
            dir.display(),
            dir.display()
        ),
    }
}

pub struct Application {
    port: u16,
    server: Server,
    relay: Arc<Relay>,
    /// Stops the spool drainer (first) and then the broker supervisor (last), so the
    /// drainer's outstanding confirms can still arrive while it winds down.
    stop_drainer: watch::Sender<bool>,
    stop_broker: watch::Sender<bool>,
    supervisor: JoinHandle<()>,
    drainer: Option<JoinHandle<()>>,
    confirm_timeout: Duration,
}

async fn not_found() -> HttpResponse {
    ApiError::NotFound.error_response()
}

/// The dedup window `dedup.backend` asks for.
async fn dedup_window(
    raw: &crate::settings::Settings,
    metrics: &Metrics,
) -> Result<Dedup, StartupError> {
    let window = Duration::from_secs(raw.dedup.window_secs);
    match raw.dedup.backend {
        DedupBackend::Memory => {
            metrics.dedup_backend_up.set(1);
            Ok(Dedup::new(window, raw.dedup.max_entries))
        }
        DedupBackend::Redis => Dedup::with_redis(
            window,
            raw.dedup.max_entries,
            RedisOptions {
                url: raw.dedup.redis_url.expose(),
                key_prefix: &raw.dedup.redis_key_prefix,
                timeout: Duration::from_millis(raw.dedup.redis_timeout_ms),
                // The slowest durable path: a confirm that times out, the spool full,
                // a second publish waiting for its confirm; plus room for a busy host.
                claim_ttl: raw.amqp.confirm_timeout() * 2 + Duration::from_secs(5),
                up_gauge: metrics.dedup_backend_up.clone(),
            },
        )
        .await
        .map_err(StartupError::Dedup),
    }
}

impl Application {
    pub async fn build(settings: Validated) -> Result<Self, StartupError> {
        let listener = TcpListener::bind(settings.bind).map_err(|source| StartupError::Bind {
            addr: settings.bind.to_string(),
            source,
        })?;
        Self::build_with_listener(settings, listener).await
    }

    pub async fn build_with_listener(
        settings: Validated,
        listener: TcpListener,
    ) -> Result<Self, StartupError> {
        let raw = &settings.raw;
        let metrics = Arc::new(Metrics::new());
        let (stop_drainer, drainer_rx) = watch::channel(false);
        let (stop_broker, broker_rx) = watch::channel(false);

        // The spool first: a damaged one stops the start with one error line, before
        // anything else (the broker connection) runs or logs.
        let spool = if raw.spool.enabled {
            Some(
                Spool::open(&raw.spool.dir, raw.spool.max_bytes).map_err(|source| {
                    StartupError::Spool {
                        dir: raw.spool.dir.clone(),
                        source,
                    }
                })?,
            )
        } else {
            None
        };
        let connection_name = match std::env::var("HOSTNAME") {
            Ok(h) if !h.is_empty() => format!("hookrelay relay ({h})"),
            _ => "hookrelay relay".to_owned(),
        };
        let broker = Broker::new(
            raw.amqp.clone(),
            raw.history.clone(),
            connection_name,
            metrics.clone(),
        );
        let supervisor = tokio::spawn(broker.clone().run(broker_rx));

        let drainer = spool.as_ref().map(|s| {
            tokio::spawn(spool::run_drainer(
                s.clone(),
                broker.clone(),
                metrics.clone(),
                raw.spool.drain_inflight,
                drainer_rx.clone(),
            ))
        });

        // Give the first connection a moment, so a relay that starts next to a healthy
        // broker answers its first requests from the broker rather than the spool.
        let mut link = broker.subscribe();
        let _ = tokio::time::timeout(
            Duration::from_millis(raw.amqp.connect_timeout_ms),
            link.wait_for(|l| l.is_some()),
        )
        .await;

        let dedup = dedup_window(raw, &metrics).await?;
        let relay = Arc::new(Relay {
            sources: settings
                .sources
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            max_body_bytes: raw.server.max_body_bytes,
            mode: raw.durability.ack,
            broker,
            spool,
            dedup,
            metrics,
        });

        let port = listener.local_addr()?.port();
        let data = web::Data::from(relay.clone());
        let limits = web::Data::new(Limits::new(&settings, &relay.metrics));
        let names: Vec<Arc<str>> = relay.sources.values().map(|s| s.name.clone()).collect();
        let mut server = HttpServer::new(move || {
            let mut app = App::new()
                .app_data(data.clone())
                .app_data(limits.clone())
                .route("/healthz", web::get().to(routes::health::healthz))
                .route("/readyz", web::get().to(routes::health::readyz))
                .route("/metrics", web::get().to(routes::metrics::metrics));
            // One static route per configured source (matched by comparing strings), and
            // the pattern only for names that are not configured (404).
            for name in &names {
                app = app.service(
                    web::resource(format!("/webhooks/{name}"))
                        .to(routes::webhook::webhook_for(name.clone())),
                );
            }
            app.service(web::resource("/webhooks/{source}").to(routes::webhook::webhook))
                .default_service(web::to(not_found))
        })
        // Shutdown is an input of `run_until_stopped`, not actix's own signal handling.
        .disable_signals()
        .shutdown_timeout(raw.server.shutdown_timeout_secs)
        // Slow clients cannot pin a worker: the head must arrive within this (408 and
        // the connection closed otherwise; the body has its own deadline in the route).
        // Heads over 128 KiB or with more than 96 headers are answered 431 by actix-http.
        .client_request_timeout(Duration::from_millis(raw.server.client_request_timeout_ms))
        .client_disconnect_timeout(Duration::from_millis(
            raw.server.client_disconnect_timeout_ms,
        ))
        // Per worker thread: past it the worker stops accepting and new connections wait
        // in the listen backlog until one closes.
        .max_connections(raw.server.max_connections);
        if raw.server.workers > 0 {
            server = server.workers(raw.server.workers);
        }
        let addr = listener.local_addr()?;
        let scheme = if settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let server = match &settings.tls {
            // HTTP/1.1 only (actix-web's http2 feature is off); TLS handshakes that take
            // longer than actix-tls's 3 s default are dropped.
            Some(tls) => server.listen_rustls_0_23(listener, (**tls).clone())?,
            None => server.listen(listener)?,
        }
        .run();
        tracing::info!(addr = %addr, scheme, mode = ?raw.durability.ack, "listening on {addr}");

        Ok(Self {
            port,
            server,
            relay,
            stop_drainer,
            stop_broker,
            supervisor,
            drainer,
            confirm_timeout: raw.amqp.confirm_timeout(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn relay(&self) -> Arc<Relay> {
        self.relay.clone()
    }

    /// Serve until `stop` resolves, then shut down gracefully: stop accepting, finish
    /// in-flight requests, wait (bounded) for outstanding confirms, leave anything
    /// unconfirmed in the spool, close the connection.
    pub async fn run_until_stopped(self, stop: impl Future<Output = ()>) -> std::io::Result<()> {
        let handle = self.server.handle();
        let server = self.server;
        tokio::pin!(server);
        let result = tokio::select! {
            r = &mut server => r,
            _ = stop => {
                tracing::info!("shutdown requested: finishing in-flight requests");
                // The server future must keep being polled while it stops gracefully.
                let (_, r) = tokio::join!(handle.stop(true), &mut server);
                r
            }
        };
        let _ = self.stop_drainer.send(true);
        if let Some(drainer) = self.drainer {
            let bound = self.confirm_timeout + Duration::from_secs(1);
            if tokio::time::timeout(bound, drainer).await.is_err() {
                tracing::warn!(
                    "spool drainer did not stop in time; unconfirmed events stay spooled"
                );
            }
        }
        if let Some(spool) = &self.relay.spool {
            spool.close().await;
            tracing::info!(depth = spool.depth(), "spool closed");
        }
        let _ = self.stop_broker.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(3), self.supervisor).await;
        tracing::info!("stopped");
        result
    }
}
