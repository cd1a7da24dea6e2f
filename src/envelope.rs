//! From a normalized event to the message on the wire: the deterministic event id, the
//! routing key (computed once, by `hookrelay_common::routing`) and the CloudEvent JSON
//! with the vendor's bytes embedded unchanged under `data.raw`.

use crate::broker::Outgoing;
use crate::settings::Source;
use hookrelay_common::event::{rfc3339, CloudEvent, EventData};
use hookrelay_common::routing::routing_key;
use hookrelay_vendors::Normalized;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

/// Namespace of hookrelay's name-based (v5) event ids.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_4c2a_8b3e_4f0a_9c57_2e1d_0b8a_f3c4);

/// Deterministic: the same source, vendor event and vendor id always give the same id
/// (so a vendor's retry dedupes), and different ones never collide (SHA-1 name UUID).
pub fn event_id(source: &str, vendor_event: &str, dedup_key: &str) -> String {
    let mut name = Vec::with_capacity(source.len() + vendor_event.len() + dedup_key.len() + 2);
    name.extend_from_slice(source.as_bytes());
    name.push(0x1f);
    name.extend_from_slice(vendor_event.as_bytes());
    name.push(0x1f);
    name.extend_from_slice(dedup_key.as_bytes());
    Uuid::new_v5(&ID_NAMESPACE, &name).to_string()
}

/// Build the AMQP message. `body` must already have passed normalization (valid JSON
/// object), which is the only way to get a [`Normalized`].
pub fn build(
    source: &Source,
    normalized: Normalized,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<Outgoing, String> {
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_owned())?;
    let raw = RawValue::from_string(text.trim_matches([' ', '\t', '\n', '\r']).to_owned())
        .map_err(|e| format!("body is not valid JSON: {e}"))?;
    let vendor = source.vendor.name();
    let ty = routing_key(vendor, &normalized.event);
    let id = event_id(
        &source.name,
        &normalized.vendor_event,
        &normalized.dedup_key,
    );
    let time = normalized.time.unwrap_or(now);
    let ev = CloudEvent {
        specversion: "1.0".to_owned(),
        id: id.clone(),
        source: format!("/webhooks/{}", source.name),
        ty: ty.clone(),
        subject: normalized.subject,
        time: rfc3339(time),
        datacontenttype: "application/json".to_owned(),
        vendor: vendor.to_owned(),
        data: EventData {
            vendor: vendor.to_owned(),
            source: source.name.to_string(),
            event: normalized.event.clone(),
            vendor_event: normalized.vendor_event,
            received_at: rfc3339(now),
            message: normalized.message,
            conversation: normalized.conversation,
            contact: normalized.contact,
            raw,
        },
    };
    let body = serde_json::to_vec(&ev).map_err(|e| e.to_string())?;
    Ok(Outgoing {
        id,
        routing_key: ty,
        vendor: vendor.to_owned(),
        source: source.name.to_string(),
        event: normalized.event,
        timestamp: now.unix_timestamp().max(0) as u64,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = event_id("chatwoot", "message_created", "k1");
        assert_eq!(a, event_id("chatwoot", "message_created", "k1"));
        assert_ne!(a, event_id("chatwoot", "message_updated", "k1"));
        assert_ne!(a, event_id("chatwoot2", "message_created", "k1"));
        assert_ne!(a, event_id("chatwoot", "message_created", "k2"));
    }
}
