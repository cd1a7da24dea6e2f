//! One worker's consuming life: connect, declare, consume with a prefetch, hand each
//! delivery to the handler in its own task, reconnect with backoff, drain on shutdown.

use super::retry::{attempts, settle, Verdict};
use super::{ConsumeConfig, ConsumeError, Failure, Handler, Incoming, QueueSpec};
use futures_util::StreamExt;
use hookrelay_common::amqp::{self, Backoff};
use hookrelay_common::event::CloudEvent;
use hookrelay_common::topology;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ExchangeKind};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tracing::Instrument;

/// Consume until `shutdown` resolves, reconnecting with backoff forever.
///
/// On shutdown: cancel the consumer (no new deliveries), let the work in flight finish and
/// be acked (or retried/parked), close the channel and the connection, return. Deliveries
/// prefetched but not started are never acked, so the broker gives them to the next consumer.
pub async fn run<H, S>(cfg: ConsumeConfig, handler: Arc<H>, shutdown: S)
where
    H: Handler,
    S: Future<Output = ()> + Send,
{
    let cfg = Arc::new(cfg);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Backoff::new(
        Duration::from_millis(cfg.amqp.reconnect_initial_ms),
        Duration::from_millis(cfg.amqp.reconnect_max_ms),
    );
    let span = tracing::info_span!("consume", connection_name = %cfg.connection_name);
    async move {
        loop {
            let connected = tokio::select! {
                biased;
                _ = &mut shutdown => {
                    tracing::info!("shutdown requested while connecting");
                    return;
                }
                c = amqp::connect(&cfg.amqp, &cfg.connection_name) => c,
            };
            let ended = match connected {
                Ok(conn) => session(&cfg, &handler, conn, shutdown.as_mut(), &mut backoff).await,
                Err(e) => Err(e.into()),
            };
            match ended {
                // Only a shutdown ends a session with Ok: `shutdown` has resolved, never poll
                // it again.
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "consumer session ended, reconnecting"),
            }
            let delay = backoff.next_delay();
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    tracing::info!("shutdown requested while waiting to reconnect");
                    return;
                }
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
    .instrument(span)
    .await
}

/// What a delivery task shares with the session.
struct Ctx {
    channel: Channel,
    cfg: Arc<ConsumeConfig>,
}

/// One connection's worth of consuming. `Ok(())` only after a shutdown.
async fn session<H, S>(
    cfg: &Arc<ConsumeConfig>,
    handler: &Arc<H>,
    conn: Connection,
    mut shutdown: Pin<&mut S>,
    backoff: &mut Backoff,
) -> Result<(), ConsumeError>
where
    H: Handler,
    S: Future<Output = ()> + Send,
{
    let channel = conn.create_channel().await?;
    // Confirms: a retry or park republish must be on disk at the broker before the
    // original is acked, or a broker crash in between would lose the message.
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    // Prefetch: bounds the unacked deliveries (memory, and work redone after a crash) and
    // lets competing consumers share a queue fairly.
    channel
        .basic_qos(cfg.prefetch, BasicQosOptions::default())
        .await?;
    let queue = declare(&channel, &cfg.amqp.exchange, &cfg.queue).await?;
    // Manual acks (no_ack = false): a delivery counts as done only when we say so.
    let mut consumer = channel
        .basic_consume(
            ShortString::from(queue.as_str()),
            ShortString::from(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    backoff.reset();
    tracing::info!(
        queue = %queue,
        prefetch = cfg.prefetch,
        consumer_tag = %consumer.tag(),
        "consuming"
    );

    let ctx = Arc::new(Ctx {
        channel: channel.clone(),
        cfg: cfg.clone(),
    });
    let max_in_flight = cfg.max_in_flight.clamp(1, usize::from(cfg.prefetch.max(1)));
    let mut tasks: JoinSet<Result<(), ConsumeError>> = JoinSet::new();
    let ended: Result<(), ConsumeError> = loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break Ok(()),
            Some(joined) = tasks.join_next() => match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break Err(e),
                Err(e) => break Err(ConsumeError::Task(e.to_string())),
            },
            next = consumer.next(), if tasks.len() < max_in_flight => match next {
                Some(Ok(delivery)) => {
                    tasks.spawn(process(ctx.clone(), handler.clone(), delivery));
                }
                Some(Err(e)) => break Err(e.into()),
                None => break Err(ConsumeError::Cancelled),
            },
        }
    };

    match ended {
        Ok(()) => {
            tracing::info!(
                in_flight = tasks.len(),
                "shutting down: cancelling the consumer, finishing the work in flight"
            );
            if let Err(e) = channel
                .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                .await
            {
                tracing::warn!(error = %e, "basic.cancel failed");
            }
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "in-flight delivery not settled"),
                    Err(e) => tracing::warn!(error = %e, "in-flight delivery task failed"),
                }
            }
            close(&channel, &conn).await;
            tracing::info!("consumer stopped");
            Ok(())
        }
        Err(e) => {
            // The channel is (most likely) gone: whatever is in flight cannot be acked on it
            // any more, and the broker requeues it. Stop the tasks rather than let them
            // race a new session's redelivery of the same messages.
            tasks.abort_all();
            close(&channel, &conn).await;
            Err(e)
        }
    }
}

/// Close channel then connection, bounded: a dead peer must not hang the shutdown.
async fn close(channel: &Channel, conn: &Connection) {
    let bound = Duration::from_secs(5);
    if channel.status().connected() {
        match tokio::time::timeout(
            bound,
            channel.close(200, ShortString::from("worker stopping")),
        )
        .await
        {
            Ok(Err(e)) => tracing::debug!(error = %e, "channel close"),
            Err(_) => tracing::debug!("channel close timed out"),
            Ok(Ok(())) => {}
        }
    }
    if conn.status().connected() {
        match tokio::time::timeout(bound, conn.close(200, ShortString::from("worker stopping")))
            .await
        {
            Ok(Err(e)) => tracing::debug!(error = %e, "connection close"),
            Err(_) => tracing::debug!("connection close timed out"),
            Ok(Ok(())) => {}
        }
    }
}

/// Declare what the worker consumes; returns the queue name (server-named for ephemeral).
async fn declare(channel: &Channel, exchange: &str, spec: &QueueSpec) -> lapin::Result<String> {
    match spec {
        QueueSpec::Durable(wq) => {
            topology::declare_worker_queue(channel, exchange, wq).await?;
            Ok(wq.name.clone())
        }
        QueueSpec::Ephemeral { bindings } => {
            // The events exchange exactly as the relay declares it (same arguments, or the
            // broker refuses the declaration), so tail works before the relay ever ran.
            channel
                .exchange_declare(
                    ShortString::from(exchange),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    topology::events_exchange_arguments(exchange),
                )
                .await?;
            // Server-named, exclusive (only this connection), auto-delete (gone with us):
            // watching must leave nothing behind and must not compete with real workers.
            let q = channel
                .queue_declare(
                    ShortString::from(""),
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        durable: false,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            let name = q.name().as_str().to_owned();
            for key in bindings {
                channel
                    .queue_bind(
                        ShortString::from(name.as_str()),
                        ShortString::from(exchange),
                        ShortString::from(key.as_str()),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
            Ok(name)
        }
    }
}

async fn process<H: Handler>(
    ctx: Arc<Ctx>,
    handler: Arc<H>,
    mut delivery: lapin::message::Delivery,
) -> Result<(), ConsumeError> {
    let failed_before = attempts(&delivery.properties);
    let attempt = failed_before.saturating_add(1);
    let body = std::mem::take(&mut delivery.data);
    let span = tracing::info_span!(
        "delivery",
        delivery_tag = delivery.delivery_tag,
        attempt,
        event_id = tracing::field::Empty,
    );
    async move {
        let event = match serde_json::from_slice::<CloudEvent>(&body) {
            Ok(event) => event,
            Err(e) => {
                let reason = format!("not a CloudEvent: {e}");
                tracing::warn!(error = %reason, "unparseable message");
                return settle(
                    &ctx.channel,
                    &ctx.cfg,
                    &delivery,
                    &body,
                    attempt,
                    Verdict::Park(reason),
                )
                .await;
            }
        };
        tracing::Span::current().record("event_id", event.id.as_str());
        let incoming = Arc::new(Incoming {
            event,
            body,
            routing_key: delivery.routing_key.as_str().to_owned(),
            attempt,
            redelivered: delivery.redelivered,
        });
        // The handler runs in its own task so a panic in it is a failed attempt, not a
        // delivery left unacked until the channel closes.
        let work = {
            let incoming = incoming.clone();
            tokio::spawn(async move { handler.handle(&incoming).await }.in_current_span())
        };
        let result = match work.await {
            Ok(r) => r,
            Err(e) => Err(Failure::Retry(format!("handler failed: {e}"))),
        };
        let verdict = match result {
            Ok(()) => Verdict::Done,
            Err(Failure::Park(e)) => Verdict::Park(e),
            Err(Failure::Retry(e)) if attempt >= ctx.cfg.max_attempts => Verdict::Park(e),
            Err(Failure::Retry(e)) => Verdict::Retry(e),
        };
        settle(
            &ctx.channel,
            &ctx.cfg,
            &delivery,
            &incoming.body,
            attempt,
            verdict,
        )
        .await
    }
    .instrument(span)
    .await
}
