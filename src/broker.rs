//! The AMQP side: one supervised connection with a few publishing channels, shared by all
//! requests. Confirms are pipelined (no lock is held across a confirm wait, no channel is
//! opened per request), and the supervisor reconnects forever, declaring the topology
//! again each time.

use crate::metrics::Metrics;
use futures_util::StreamExt;
use hookrelay_common::amqp::{self, AmqpSettings, Backoff};
use hookrelay_common::event::{APP_ID, CONTENT_TYPE};
use hookrelay_common::topology::{self, HistoryDeclared, HistorySettings};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// One event ready for the exchange: what the spool stores and the broker publishes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Outgoing {
    pub id: String,
    pub routing_key: String,
    pub vendor: String,
    pub source: String,
    pub event: String,
    /// Unix seconds, the AMQP `timestamp` property.
    pub timestamp: u64,
    /// The CloudEvent JSON.
    #[serde(skip)]
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to the broker")]
    NotConnected,
    #[error("the broker nacked the message")]
    Nacked,
    #[error("the broker returned the message as unroutable")]
    Returned,
    #[error("no confirm within the timeout")]
    Timeout,
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
}

/// A live connection and its publishing channels.
pub struct Link {
    conn: Connection,
    channels: Vec<Channel>,
}

pub struct Broker {
    settings: AmqpSettings,
    history: HistorySettings,
    connection_name: String,
    link: watch::Sender<Option<Arc<Link>>>,
    poke: Notify,
    next: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Broker {
    pub fn new(
        settings: AmqpSettings,
        history: HistorySettings,
        connection_name: String,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let (link, _) = watch::channel(None);
        Arc::new(Self {
            settings,
            history,
            connection_name,
            link,
            poke: Notify::new(),
            next: AtomicUsize::new(0),
            metrics,
        })
    }

    pub fn is_connected(&self) -> bool {
        self.link.borrow().is_some()
    }

    /// Changes whenever the connection comes or goes.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Link>>> {
        self.link.subscribe()
    }

    fn properties(msg: &Outgoing) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from("vendor"),
            AMQPValue::LongString(LongString::from(msg.vendor.as_str())),
        );
        headers.insert(
            ShortString::from("source"),
            AMQPValue::LongString(LongString::from(msg.source.as_str())),
        );
        headers.insert(
            ShortString::from("event"),
            AMQPValue::LongString(LongString::from(msg.event.as_str())),
        );
        BasicProperties::default()
            .with_content_type(ShortString::from(CONTENT_TYPE))
            // 2 = persistent: the broker writes it to disk before it confirms.
            .with_delivery_mode(2)
            // The event id: consumers dedupe on it, and a republish after a lost confirm
            // carries the same one.
            .with_message_id(ShortString::from(msg.id.as_str()))
            .with_type(ShortString::from(msg.routing_key.as_str()))
            .with_timestamp(msg.timestamp)
            .with_app_id(ShortString::from(APP_ID))
            .with_headers(headers)
    }

    fn current(&self) -> Result<Arc<Link>, PublishError> {
        self.link.borrow().clone().ok_or(PublishError::NotConnected)
    }

    /// Publish on the link's channel `idx` (modulo the channel count) and wait for the
    /// broker's confirm, bounded by `amqp.confirm_timeout_ms`. Only an ack without a
    /// return is a success.
    ///
    /// Everything up to handing the frames to lapin happens in the future's first poll:
    /// lapin assigns the confirm's delivery tag and queues the frames synchronously
    /// there. A caller that polls several of these futures once each, in order, has
    /// therefore fixed their order on the channel without waiting for any write.
    async fn publish_on(
        &self,
        link: &Link,
        idx: usize,
        msg: &Outgoing,
    ) -> Result<(), PublishError> {
        let started = Instant::now();
        let confirm = link.channels[idx % link.channels.len()]
            .basic_publish(
                ShortString::from(self.settings.exchange.as_str()),
                ShortString::from(msg.routing_key.as_str()),
                // mandatory: if nothing (not even the alternate exchange) takes it, the
                // broker returns it and we count that as a failure, not a success.
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &msg.body,
                Self::properties(msg),
            )
            .await
            .inspect_err(|_| self.poke.notify_one())?;
        let outcome = tokio::time::timeout(self.settings.confirm_timeout(), confirm).await;
        match outcome {
            Err(_) => Err(PublishError::Timeout),
            Ok(Err(e)) => {
                self.poke.notify_one();
                Err(PublishError::Amqp(e))
            }
            Ok(Ok(Confirmation::Ack(None))) => {
                self.metrics
                    .publish_latency
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.published(&msg.routing_key);
                Ok(())
            }
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(PublishError::Returned),
            Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
            // Confirms are always selected on our channels; treat the impossible as failure.
            Ok(Ok(Confirmation::NotRequested)) => Err(PublishError::Nacked),
        }
    }

    /// Publish and wait for the broker's confirm, on the next channel in turn.
    pub async fn publish(&self, msg: &Outgoing) -> Result<(), PublishError> {
        let link = self.current()?;
        let idx = self.next.fetch_add(1, Ordering::Relaxed);
        self.publish_on(&link, idx, msg).await
    }

    /// [`Broker::publish`] on a fixed channel, as an owned future. Poll it once right
    /// away (see [`Broker::publish_on`]) and messages published this way keep the order
    /// of those first polls, with any number of them in flight.
    pub fn publish_ordered(
        self: &Arc<Self>,
        msg: Outgoing,
        channel: usize,
    ) -> impl std::future::Future<Output = Result<(), PublishError>> + Send + 'static {
        let broker = self.clone();
        async move {
            let link = broker.current()?;
            broker.publish_on(&link, channel, &msg).await
        }
    }

    async fn establish(
        &self,
    ) -> Result<
        (
            Arc<Link>,
            futures_util::stream::BoxStream<'static, lapin::Event>,
        ),
        lapin::Error,
    > {
        let conn = amqp::connect(&self.settings, &self.connection_name).await?;
        let events = conn.events_listener().boxed();
        let first = conn.create_channel().await?;
        topology::declare_events(&first, &self.settings.exchange).await?;
        self.declare_history(&conn).await?;
        let mut channels = Vec::with_capacity(self.settings.publish_channels);
        channels.push(first);
        for _ in 1..self.settings.publish_channels {
            channels.push(conn.create_channel().await?);
        }
        for ch in &channels {
            // Publisher confirms: a 200 waits for the broker to take responsibility.
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
        }
        Ok((Arc::new(Link { conn, channels }), events))
    }

    /// The history stream, on its own channel. A refusal is logged, loudly and with the
    /// way out, on every (re)connect; publishing goes on (the events still reach every
    /// other queue, and the stream keeps whatever binding it had).
    async fn declare_history(&self, conn: &Connection) -> lapin::Result<()> {
        match topology::declare_history(conn, &self.settings.exchange, &self.history).await? {
            HistoryDeclared::Ready { stream } => {
                tracing::info!(stream = %stream, max_age = %self.history.max_age, max_bytes = self.history.max_bytes, "history stream declared");
            }
            HistoryDeclared::Off => {}
            HistoryDeclared::Refused { stream, reason } => {
                tracing::error!(
                    stream = %stream,
                    reason = %reason,
                    "the broker refused the history stream (a queue of that name exists with \
                     other arguments: another max_age or max_bytes, or not a stream); events \
                     are still published, but history.max_age/max_bytes are not applied: \
                     delete that queue or set [history] to its arguments"
                );
            }
        }
        Ok(())
    }

    fn healthy(link: &Link) -> bool {
        link.conn.status().connected() && link.channels.iter().all(|c| c.status().connected())
    }

    /// The supervisor: connect, declare, serve until the connection fails, back off,
    /// repeat, until `shutdown` turns true. Then close the connection.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(
            Duration::from_millis(self.settings.reconnect_initial_ms),
            Duration::from_millis(self.settings.reconnect_max_ms),
        );
        let mut ever_connected = false;
        while !*shutdown.borrow() {
            match self.establish().await {
                Ok((link, mut events)) => {
                    if ever_connected {
                        self.metrics.reconnects.inc();
                    }
                    ever_connected = true;
                    backoff.reset();
                    self.link.send_replace(Some(link.clone()));
                    self.metrics.broker_connected.set(1);
                    tracing::info!(state = "connected", "broker connection up");
                    let reason = loop {
                        tokio::select! {
                            ev = events.next() => match ev {
                                // A channel error arrives here too; only one that took the
                                // connection or a publishing channel down ends this link
                                // (the history declaration's own channel may be refused).
                                Some(lapin::Event::Error(e)) if !Self::healthy(&link) => break format!("connection error: {e}"),
                                Some(lapin::Event::Error(e)) => {
                                    tracing::debug!(error = %e, "error on a non-publishing channel");
                                }
                                Some(lapin::Event::ConnectionBlocked(r)) => {
                                    tracing::warn!(reason = %r, "broker blocked publishing (resource alarm)");
                                }
                                Some(lapin::Event::ConnectionUnblocked) => {
                                    tracing::info!("broker unblocked publishing");
                                }
                                Some(_) => {}
                                None => break "connection event stream ended".to_owned(),
                            },
                            _ = self.poke.notified() => {
                                if !Self::healthy(&link) {
                                    break "a channel or the connection closed".to_owned();
                                }
                            }
                            _ = shutdown.changed() => {
                                if *shutdown.borrow() {
                                    break "shutdown".to_owned();
                                }
                            }
                        }
                    };
                    self.link.send_replace(None);
                    self.metrics.broker_connected.set(0);
                    let closing = *shutdown.borrow();
                    if closing {
                        tracing::info!(state = "closing", "closing broker connection");
                    } else {
                        tracing::warn!(state = "disconnected", reason = %reason, "broker connection lost");
                    }
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        link.conn.close(200, ShortString::from("bye")),
                    )
                    .await;
                    if closing {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(state = "disconnected", error = %e, "cannot reach the broker");
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => {}
            }
        }
        self.link.send_replace(None);
        self.metrics.broker_connected.set(0);
    }
}
