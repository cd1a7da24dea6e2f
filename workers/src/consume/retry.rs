//! Settling a delivery: ack, or republish it (confirmed) to `<queue>.retry` or
//! `<queue>.parked` and then ack; and the header and property helpers `replay` reuses.

use super::{ConsumeConfig, ConsumeError, QueueSpec};
use hookrelay_common::topology;
use lapin::options::{BasicAckOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};
use std::collections::BTreeMap;

/// How many times a message has failed so far (an integer header, absent = 0).
pub const ATTEMPTS_HEADER: &str = "x-hookrelay-attempts";
/// Why a parked message was parked: the last error, truncated.
pub const ERROR_HEADER: &str = "x-hookrelay-error";

/// Longest error text put in [`ERROR_HEADER`]; the log has the rest.
const MAX_ERROR_HEADER_BYTES: usize = 1024;

/// What happens to a delivery once its handler is done with it.
pub(super) enum Verdict {
    Done,
    Retry(String),
    Park(String),
}

/// Ack, or republish (confirmed) to retry/parked and then ack.
pub(super) async fn settle(
    channel: &Channel,
    cfg: &ConsumeConfig,
    delivery: &lapin::message::Delivery,
    body: &[u8],
    attempt: u32,
    verdict: Verdict,
) -> Result<(), ConsumeError> {
    let wq = match &cfg.queue {
        QueueSpec::Durable(wq) => wq,
        QueueSpec::Ephemeral { .. } => {
            // Nowhere to retry or park: say so and move on.
            match &verdict {
                Verdict::Done => {}
                Verdict::Retry(e) | Verdict::Park(e) => {
                    tracing::warn!(error = %e, "dropping a message on an ephemeral queue")
                }
            }
            return ack(delivery).await;
        }
    };
    match verdict {
        Verdict::Done => {}
        Verdict::Retry(error) => {
            let target = topology::retry_queue(&wq.name);
            tracing::info!(error = %error, retry_in_ms = cfg.retry_delay.as_millis() as u64, "attempt failed, will retry");
            let mut headers = clean_headers(&delivery.properties);
            headers.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongInt(count(attempt)));
            // Per-message TTL: the retry queue holds it this long, then dead-letters it back
            // to the work queue (the broker strips `expiration` when it dead-letters).
            let ttl = cfg.retry_delay.as_millis().max(1).to_string();
            let props = republish_properties(&delivery.properties, headers.into(), Some(&ttl));
            publish_confirmed(channel, &target, body, props).await?;
        }
        Verdict::Park(error) => {
            let target = topology::parked_queue(&wq.name);
            tracing::warn!(error = %error, queue = %target, "parking message");
            let mut headers = clean_headers(&delivery.properties);
            headers.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongInt(count(attempt)));
            headers.insert(
                ERROR_HEADER.into(),
                AMQPValue::LongString(LongString::from(truncate(&error, MAX_ERROR_HEADER_BYTES))),
            );
            let props = republish_properties(&delivery.properties, headers.into(), None);
            publish_confirmed(channel, &target, body, props).await?;
        }
    }
    ack(delivery).await
}

async fn ack(delivery: &lapin::message::Delivery) -> Result<(), ConsumeError> {
    if delivery.acker.ack(BasicAckOptions::default()).await? {
        Ok(())
    } else {
        Err(ConsumeError::AckLost)
    }
}

fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Publish to `queue` through the default exchange and wait for the broker's confirm.
/// `mandatory`: if the queue is gone the broker returns the message instead of dropping it
/// silently, and that counts as a failure.
pub async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), ConsumeError> {
    let confirm = channel
        .basic_publish(
            ShortString::from(""),
            ShortString::from(queue),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            props,
        )
        .await?
        .await?;
    let fail = |reason: &str| ConsumeError::Republish {
        queue: queue.to_owned(),
        reason: reason.to_owned(),
    };
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(fail(&format!(
            "returned by the broker: {}",
            returned.reply_text
        ))),
        Confirmation::Nack(_) => Err(fail("nacked by the broker")),
        Confirmation::NotRequested => Err(fail("publisher confirms are off on this channel")),
    }
}

/// How many times this message already failed (the [`ATTEMPTS_HEADER`], absent = 0).
pub fn attempts(props: &BasicProperties) -> u32 {
    let Some(v) = props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(ATTEMPTS_HEADER))
    else {
        return 0;
    };
    let n: i128 = match v {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::Timestamp(n) => (*n).into(),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes())
            .trim()
            .parse()
            .unwrap_or(0),
        AMQPValue::ShortString(s) => s.as_str().trim().parse().unwrap_or(0),
        _ => 0,
    };
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// The error text of a parked message, if any.
pub fn parked_error(props: &BasicProperties) -> Option<String> {
    match props.headers().as_ref()?.inner().get(ERROR_HEADER)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The message's headers without the broker's dead-letter history and without ours.
/// `x-death` is the broker's own bookkeeping: carried along by a republish it only grows
/// (and newer brokers ignore client-set copies); our attempt count is what matters.
pub fn clean_headers(props: &BasicProperties) -> BTreeMap<ShortString, AMQPValue> {
    props
        .headers()
        .as_ref()
        .map(|h| {
            h.inner()
                .iter()
                .filter(|(k, _)| {
                    let k = k.as_str();
                    k != ATTEMPTS_HEADER
                        && k != ERROR_HEADER
                        && k != "x-death"
                        && !k.starts_with("x-first-death-")
                        && !k.starts_with("x-last-death-")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The original's properties for a republish: same content type, message id, type,
/// timestamp, ... with new `headers`, persistent, and `expiration` only if given.
/// `user_id` is left out: the broker rejects one that is not the publishing user.
pub fn republish_properties(
    orig: &BasicProperties,
    headers: FieldTable,
    expiration: Option<&str>,
) -> BasicProperties {
    // delivery_mode 2: persistent, it must survive a broker restart like the original.
    let mut p = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(v) = orig.content_type() {
        p = p.with_content_type(v.clone());
    }
    if let Some(v) = orig.content_encoding() {
        p = p.with_content_encoding(v.clone());
    }
    if let Some(v) = orig.priority() {
        p = p.with_priority(*v);
    }
    if let Some(v) = orig.correlation_id() {
        p = p.with_correlation_id(v.clone());
    }
    if let Some(v) = orig.reply_to() {
        p = p.with_reply_to(v.clone());
    }
    if let Some(v) = orig.message_id() {
        p = p.with_message_id(v.clone());
    }
    if let Some(v) = orig.timestamp() {
        p = p.with_timestamp(*v);
    }
    if let Some(v) = orig.kind() {
        p = p.with_type(v.clone());
    }
    if let Some(v) = orig.app_id() {
        p = p.with_app_id(v.clone());
    }
    if let Some(v) = orig.cluster_id() {
        p = p.with_cluster_id(v.clone());
    }
    if let Some(e) = expiration {
        p = p.with_expiration(ShortString::from(e));
    }
    p
}

/// At most `max` bytes of `s`, cut on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_headers(pairs: Vec<(&str, AMQPValue)>) -> BasicProperties {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(k.into(), v);
        }
        BasicProperties::default().with_headers(t)
    }

    #[test]
    fn attempts_reads_any_integer_and_defaults_to_zero() {
        assert_eq!(attempts(&BasicProperties::default()), 0);
        assert_eq!(
            attempts(&with_headers(vec![(
                ATTEMPTS_HEADER,
                AMQPValue::LongInt(3)
            )])),
            3
        );
        assert_eq!(
            attempts(&with_headers(vec![(
                ATTEMPTS_HEADER,
                AMQPValue::LongLongInt(7)
            )])),
            7
        );
        assert_eq!(
            attempts(&with_headers(vec![(
                ATTEMPTS_HEADER,
                AMQPValue::LongString("2".into())
            )])),
            2
        );
        assert_eq!(
            attempts(&with_headers(vec![(
                ATTEMPTS_HEADER,
                AMQPValue::LongInt(-4)
            )])),
            0
        );
    }

    #[test]
    fn clean_headers_drops_death_history_and_ours() {
        let p = with_headers(vec![
            (ATTEMPTS_HEADER, AMQPValue::LongInt(3)),
            (ERROR_HEADER, AMQPValue::LongString("boom".into())),
            ("x-death", AMQPValue::Void),
            ("x-first-death-queue", AMQPValue::Void),
            ("vendor", AMQPValue::LongString("chatwoot".into())),
        ]);
        let h = clean_headers(&p);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("vendor"));
    }

    #[test]
    fn republish_keeps_identity_and_drops_user_id() {
        let orig = BasicProperties::default()
            .with_message_id("ev-1".into())
            .with_content_type("application/cloudevents+json".into())
            .with_type("chatwoot.message.created".into())
            .with_user_id("someone".into())
            .with_expiration("100".into());
        let p = republish_properties(&orig, FieldTable::default(), None);
        assert_eq!(p.message_id().as_ref().unwrap().as_str(), "ev-1");
        assert_eq!(
            p.kind().as_ref().unwrap().as_str(),
            "chatwoot.message.created"
        );
        assert_eq!(*p.delivery_mode(), Some(2));
        assert!(p.user_id().is_none());
        assert!(p.expiration().is_none());
        let r = republish_properties(&orig, FieldTable::default(), Some("250"));
        assert_eq!(r.expiration().as_ref().unwrap().as_str(), "250");
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
