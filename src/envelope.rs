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
    let raw_text = text.trim_matches([' ', '\t', '\n', '\r']);
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
            // Placeholder, replaced by the vendor's bytes below.
            raw: RawValue::NULL.to_owned(),
        },
    };
    // `raw` is the last field of `data`, itself the last field of the envelope, so the
    // serialization ends in `null}}`. Splice the vendor's bytes in there instead of
    // parsing them a second time: normalization already parsed this exact text as a
    // JSON object (the only way to get a `Normalized`), so the result is valid JSON.
    let mut body = Vec::with_capacity(raw_text.len() + 1024);
    serde_json::to_writer(&mut body, &ev).map_err(|e| e.to_string())?;
    const TAIL: &[u8] = b"null}}";
    if !body.ends_with(TAIL) {
        return Err("internal: unexpected envelope layout".to_owned());
    }
    body.truncate(body.len() - TAIL.len());
    body.extend_from_slice(raw_text.as_bytes());
    body.extend_from_slice(b"}}");
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
    fn raw_bytes_are_spliced_into_valid_json() {
        let settings = crate::settings::Settings::load_with_env(None, vec![])
            .unwrap()
            .validate()
            .unwrap();
        let source: &Source = &settings.sources["kommunicate"];
        let body = b" {\"key\":\"a\",\"x\":\"\\u2028\\u0000\",\"y\":null}\n";
        let normalized = Normalized {
            event: "message.created".into(),
            vendor_event: "message".into(),
            dedup_key: "a".into(),
            ..Default::default()
        };
        let now = OffsetDateTime::from_unix_timestamp(1_791_969_697).unwrap();
        let out = build(source, normalized, body, now).unwrap();
        let text = std::str::from_utf8(&out.body).unwrap();
        assert!(
            text.ends_with(r#""raw":{"key":"a","x":"\u2028\u0000","y":null}}}"#),
            "{text}"
        );
        let ev: hookrelay_common::event::CloudEvent = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(
            ev.data.raw.get(),
            r#"{"key":"a","x":"\u2028\u0000","y":null}"#
        );
        assert_eq!(ev.ty, "kommunicate.message.created");
        assert_eq!(out.timestamp, 1_791_969_697);
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = event_id("chatwoot", "message_created", "k1");
        assert_eq!(a, event_id("chatwoot", "message_created", "k1"));
        assert_ne!(a, event_id("chatwoot", "message_updated", "k1"));
        assert_ne!(a, event_id("chatwoot2", "message_created", "k1"));
        assert_ne!(a, event_id("chatwoot", "message_created", "k2"));
    }
}
