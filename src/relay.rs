//! The relay's shared state and the one decision that matters: when is an accepted event
//! durable. `broker` mode publishes and waits for the confirm, falling back to the spool;
//! `spool` mode commits to the spool and lets the drainer publish.

use crate::broker::{Broker, Outgoing};
use crate::dedup::Dedup;
use crate::metrics::Metrics;
use crate::settings::{AckMode, Source};
use crate::spool::{Spool, SpoolError};
use std::collections::HashMap;
use std::sync::Arc;

pub struct Relay {
    pub sources: HashMap<String, Source>,
    pub max_body_bytes: usize,
    pub mode: AckMode,
    pub broker: Arc<Broker>,
    pub spool: Option<Arc<Spool>>,
    pub dedup: Dedup,
    pub metrics: Arc<Metrics>,
}

/// Where an accepted event is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durable {
    Confirmed,
    Spooled,
}

/// The event could not be made durable: answer 503.
#[derive(Debug, thiserror::Error)]
#[error("event not durable: {0}")]
pub struct NotDurable(pub String);

impl Relay {
    /// Make `msg` durable, or say it could not be.
    pub async fn make_durable(&self, msg: &Outgoing) -> Result<Durable, NotDurable> {
        if self.mode == AckMode::Broker {
            // While older events wait in the spool, newer ones queue behind them so the
            // exchange sees arrival order.
            let backlog = self.spool.as_ref().is_some_and(|s| s.depth() > 0);
            if !backlog {
                match self.broker.publish(msg).await {
                    Ok(()) => return Ok(Durable::Confirmed),
                    Err(e) => {
                        tracing::warn!(error = %e, id = %msg.id, "publish not confirmed; spooling");
                    }
                }
            }
        }
        let Some(spool) = &self.spool else {
            return Err(NotDurable("broker unavailable and the spool is off".into()));
        };
        match spool.append(msg).await {
            Ok(_) => {
                self.metrics.spooled.inc();
                Ok(Durable::Spooled)
            }
            Err(SpoolError::Full) if self.broker.is_connected() => {
                // A full spool while the broker is up: durability beats ordering, so
                // publish straight away rather than refuse.
                self.broker
                    .publish(msg)
                    .await
                    .map(|()| Durable::Confirmed)
                    .map_err(|e| NotDurable(format!("spool full and publish failed: {e}")))
            }
            Err(SpoolError::Full) => Err(NotDurable("the spool is full".into())),
            Err(e) => {
                tracing::error!(error = %e, "spool append failed");
                Err(NotDurable(e.to_string()))
            }
        }
    }
}
