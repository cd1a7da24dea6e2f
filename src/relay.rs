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
    ///
    /// Order versus availability: while the spool holds a backlog it can read and
    /// write, new events queue behind it (broker mode), so the exchange sees arrival
    /// order. While the spool cannot take events (full, or a failed disk) but the broker
    /// can, they are published straight away: a confirmed publish is as durable as a
    /// spooled event, and refusing them would turn a disk problem into an outage. Order
    /// across the backlog is then not kept.
    pub async fn make_durable(&self, msg: &Outgoing) -> Result<Durable, NotDurable> {
        let spool_ok = self.spool.as_ref().is_some_and(|s| s.is_healthy());
        let mut tried_broker = false;
        if self.mode == AckMode::Broker {
            let backlog = spool_ok && self.spool.as_ref().is_some_and(|s| s.depth() > 0);
            if !backlog {
                tried_broker = true;
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
            Err(e @ (SpoolError::Full | SpoolError::Unavailable(_)))
                if !tried_broker && self.broker.is_connected() =>
            {
                // The spool cannot take it while the broker is up: durability beats
                // ordering, so publish straight away rather than refuse.
                self.broker
                    .publish(msg)
                    .await
                    .map(|()| Durable::Confirmed)
                    .map_err(|p| NotDurable(format!("{e}, and the publish failed: {p}")))
            }
            Err(SpoolError::Full) => Err(NotDurable("the spool is full".into())),
            Err(e) => Err(NotDurable(e.to_string())),
        }
    }
}
