//! `replay`: move messages from `<queue>.parked` back to `<queue>`, one at a time, each
//! republished with a confirm (and its attempt count reset) before the parked copy is acked.

use crate::consume::{self, ConsumeError};
use hookrelay_common::amqp::{self, AmqpSettings};
use hookrelay_common::topology::parked_queue;
use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection};
use std::future::Future;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot reach RabbitMQ: {0}")]
    Connect(#[source] lapin::Error),
    #[error("queue {0} does not exist (has its worker ever run?)")]
    NoQueue(String),
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    #[error(transparent)]
    Publish(#[from] ConsumeError),
    #[error("could not ack the parked copy after republishing it (it may be replayed twice)")]
    AckLost,
}

/// Move up to `limit` parked messages of `queue` back to it; returns how many moved.
///
/// Takes at most as many messages as the parked queue held at the start, so messages that
/// a running worker parks again at once (an unparseable body) are not replayed in a loop.
/// Stops early, between two messages, when `shutdown` resolves.
pub async fn run<S>(
    amqp_settings: &AmqpSettings,
    queue: &str,
    limit: Option<u64>,
    shutdown: S,
) -> Result<u64, ReplayError>
where
    S: Future<Output = ()> + Send,
{
    let conn = amqp::connect(amqp_settings, &consume::connection_name("replay", queue))
        .await
        .map_err(ReplayError::Connect)?;
    let result = replay_on(&conn, queue, limit, shutdown).await;
    let _ = conn.close(200, ShortString::from("replay done")).await;
    result
}

async fn replay_on<S>(
    conn: &Connection,
    queue: &str,
    limit: Option<u64>,
    shutdown: S,
) -> Result<u64, ReplayError>
where
    S: Future<Output = ()> + Send,
{
    let parked = parked_queue(queue);
    // Passive declares: replay never creates queues, it only checks both exist (a failed
    // passive declare closes the channel, so each gets its own).
    check_exists(conn, queue).await?;
    let available = check_exists(conn, &parked).await?;
    let todo = limit.map_or(u64::from(available), |l| l.min(u64::from(available)));

    let channel = conn.create_channel().await?;
    // Confirms: the copy must be safe in `queue` before the parked one is acked.
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut moved = 0;
    while moved < todo {
        let got = tokio::select! {
            biased;
            _ = &mut shutdown => {
                tracing::info!(moved, "replay interrupted");
                break;
            }
            got = channel.basic_get(ShortString::from(parked.as_str()), BasicGetOptions { no_ack: false }) => got?,
        };
        let Some(msg) = got else { break };
        let delivery = msg.delivery;
        // Without the attempt count and the error: a fresh start with the full max_attempts.
        let headers = consume::clean_headers(&delivery.properties);
        let props = consume::republish_properties(&delivery.properties, headers.into(), None);
        consume::publish_confirmed(&channel, queue, &delivery.data, props).await?;
        if !delivery.acker.ack(BasicAckOptions::default()).await? {
            return Err(ReplayError::AckLost);
        }
        moved += 1;
    }
    let _ = channel.close(200, ShortString::from("replay done")).await;
    tracing::info!(moved, from = %parked, to = %queue, "replay finished");
    Ok(moved)
}

/// The queue's ready message count, or [`ReplayError::NoQueue`].
async fn check_exists(conn: &Connection, queue: &str) -> Result<u32, ReplayError> {
    let channel: Channel = conn.create_channel().await?;
    let declared = channel
        .queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    match declared {
        Ok(q) => {
            let _ = channel.close(200, ShortString::from("checked")).await;
            Ok(q.message_count())
        }
        Err(e) if is_not_found(&e) => Err(ReplayError::NoQueue(queue.to_owned())),
        Err(e) => Err(e.into()),
    }
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(p)
            if *p.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)
    )
}
