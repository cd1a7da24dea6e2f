//! The drainer: publishes spooled events in arrival order, many confirms in flight, and
//! marks each confirmed; pauses (one log line per change) while the broker or the store
//! cannot go on, and resumes by itself.

use super::{Spool, SpoolError};
use crate::broker::{Broker, PublishError};
use crate::metrics::Metrics;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl DrainError {
    /// What kind of stop this is, for logging once per change rather than per retry.
    fn kind(&self) -> &'static str {
        match self {
            DrainError::Spool(_) => "spool",
            DrainError::Publish(PublishError::NotConnected) => "not connected",
            DrainError::Publish(PublishError::Nacked) => "nacked",
            DrainError::Publish(PublishError::Returned) => "returned",
            DrainError::Publish(PublishError::Timeout) => "timeout",
            DrainError::Publish(PublishError::Amqp(_)) => "amqp",
        }
    }
}

/// Publish spooled events in arrival order, many confirms in flight, deleting each only
/// after its confirm. Runs until `shutdown`; then waits (bounded by the confirm timeout)
/// for the confirms already in flight and leaves everything unconfirmed in the spool.
pub async fn run_drainer(
    spool: Arc<Spool>,
    broker: Arc<Broker>,
    metrics: Arc<Metrics>,
    inflight: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut link = broker.subscribe();
    let mut health = spool.subscribe_health();
    let mut paused: Option<&'static str> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let readable = spool.health().readable;
        if !(broker.is_connected() && spool.depth() > 0 && readable) {
            tokio::select! {
                _ = spool.appended().notified() => {}
                _ = link.changed() => {}
                _ = health.changed() => {}
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        match drain_once(&spool, &broker, &metrics, inflight, &mut shutdown).await {
            Ok(()) => {
                if paused.take().is_some() {
                    tracing::info!(depth = spool.depth(), "spool drain resumed");
                }
            }
            Err(e) => {
                if paused != Some(e.kind()) {
                    tracing::warn!(error = %e, depth = spool.depth(), "spool drain paused");
                    paused = Some(e.kind());
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = health.changed() => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

/// One pass: publish everything the spool holds (and whatever is appended meanwhile)
/// until it is empty, a publish fails, or `shutdown`. Confirmed events are marked, and
/// their deletion committed before it returns.
pub async fn drain_once(
    spool: &Arc<Spool>,
    broker: &Arc<Broker>,
    metrics: &Arc<Metrics>,
    inflight: usize,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), DrainError> {
    let mut cursor: Option<u64> = None;
    let mut pending = FuturesOrdered::new();
    let mut confirmed: Vec<u64> = Vec::new();
    let mut failure: Option<DrainError> = None;
    let mut exhausted = false;
    loop {
        let stopping = *shutdown.borrow() || failure.is_some();
        if !stopping && !exhausted && pending.len() <= inflight / 2 {
            let want = inflight - pending.len();
            match spool.read_after(cursor, want) {
                Err(e) => failure = Some(e.into()),
                Ok(batch) => {
                    exhausted = batch.len() < want;
                    for (seq, msg) in batch {
                        // The first poll queues the frames (see `Broker::publish_on`), so
                        // the channel sees the spool's order without a wait per message.
                        let mut publish = Box::pin(broker.publish_ordered(msg, 0));
                        let first =
                            std::future::poll_fn(|cx| Poll::Ready(publish.as_mut().poll(cx))).await;
                        let early = match first {
                            Poll::Ready(Err(e)) => {
                                failure = Some(e.into());
                                break;
                            }
                            Poll::Ready(Ok(())) => true,
                            Poll::Pending => false,
                        };
                        cursor = Some(seq);
                        pending.push_back(async move {
                            let r = if early { Ok(()) } else { publish.await };
                            (seq, r)
                        });
                    }
                }
            }
        }
        if pending.is_empty() {
            spool
                .mark_confirmed_committed(std::mem::take(&mut confirmed))
                .await;
            return match failure {
                Some(e) => Err(e),
                None => Ok(()),
            };
        }
        tokio::select! {
            Some((seq, r)) = pending.next() => match r {
                Ok(()) => {
                    metrics.republished.inc();
                    confirmed.push(seq);
                    if confirmed.len() >= 64 {
                        spool.mark_confirmed(std::mem::take(&mut confirmed));
                    }
                }
                Err(e) => {
                    if failure.is_none() {
                        failure = Some(e.into());
                    }
                }
            },
            _ = spool.appended().notified(), if exhausted => {
                exhausted = false;
            }
            _ = shutdown.changed(), if !*shutdown.borrow() => {}
        }
    }
}
