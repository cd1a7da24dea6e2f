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
/// `vendor_event` is `None` for a vendor whose delivery ids are unique per source on
/// their own (the id is then of the source and the delivery id only).
pub fn event_id(source: &str, vendor_event: Option<&str>, dedup_key: &str) -> String {
    let event = vendor_event.unwrap_or("");
    let mut name = Vec::with_capacity(source.len() + event.len() + dedup_key.len() + 2);
    name.extend_from_slice(source.as_bytes());
    name.push(0x1f);
    if let Some(event) = vendor_event {
        name.extend_from_slice(event.as_bytes());
        name.push(0x1f);
    }
    name.extend_from_slice(dedup_key.as_bytes());
    Uuid::new_v5(&ID_NAMESPACE, &name).to_string()
}

/// Why an envelope could not be built. Never the sender's fault (normalization already
/// accepted the body), so the endpoint answers 500.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the body is not UTF-8")]
    NotUtf8,
    #[error("the envelope could not be serialized: {0}")]
    Serialize(String),
    #[error("the serialized envelope does not end in `data.raw` (field order changed?)")]
    Layout,
}

/// Build the AMQP message. `body` must already have passed normalization (valid JSON
/// object), which is the only way to get a [`Normalized`].
pub fn build(
    source: &Source,
    normalized: Normalized,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<Outgoing, EnvelopeError> {
    let text = std::str::from_utf8(body).map_err(|_| EnvelopeError::NotUtf8)?;
    let raw_text = text.trim_matches([' ', '\t', '\n', '\r']);
    let vendor = source.vendor.name();
    let ty = routing_key(
        source.vendor.routing_prefix(&source.name),
        &normalized.event,
    );
    let names_event = source.vendor.contract().id_names_vendor_event();
    let id = event_id(
        &source.name,
        names_event.then_some(normalized.vendor_event.as_str()),
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
    // serialization ends in `null}}` (a checked fact: the test
    // `the_envelope_ends_in_data_raw` fails when the field order changes, and so does
    // this check, as a 500). Splice the vendor's bytes in there instead of parsing them
    // a second time: normalization already parsed this exact text as a JSON object (the
    // only way to get a `Normalized`), so the result is valid JSON.
    let mut body = Vec::with_capacity(raw_text.len() + 1024);
    serde_json::to_writer(&mut body, &ev).map_err(|e| EnvelopeError::Serialize(e.to_string()))?;
    const TAIL: &[u8] = b"null}}";
    if !body.ends_with(TAIL) {
        return Err(EnvelopeError::Layout);
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
        let a = event_id("chatwoot", Some("message_created"), "k1");
        assert_eq!(a, event_id("chatwoot", Some("message_created"), "k1"));
        assert_ne!(a, event_id("chatwoot", Some("message_updated"), "k1"));
        assert_ne!(a, event_id("chatwoot2", Some("message_created"), "k1"));
        assert_ne!(a, event_id("chatwoot", Some("message_created"), "k2"));
        let b = event_id("billing", None, "msg_1");
        assert_eq!(b, event_id("billing", None, "msg_1"));
        assert_ne!(b, event_id("billing", Some(""), "msg_1"));
        assert_ne!(b, event_id("other", None, "msg_1"));
    }

    /// The splice in `build` relies on `raw` being the last field of `data` and `data`
    /// the last of the event, whichever optional fields are present.
    #[test]
    fn the_envelope_ends_in_data_raw() {
        use hookrelay_common::event::{Contact, Conversation, Message};
        let marker = RawValue::from_string(r#"{"marker":1}"#.to_owned()).unwrap();
        let ev = CloudEvent {
            specversion: "1.0".into(),
            id: "i".into(),
            source: "/webhooks/s".into(),
            ty: "t".into(),
            subject: Some("s".into()),
            time: "2026-10-14T09:21:37Z".into(),
            datacontenttype: "application/json".into(),
            vendor: "v".into(),
            data: EventData {
                vendor: "v".into(),
                source: "s".into(),
                event: "e".into(),
                vendor_event: "e".into(),
                received_at: "2026-10-14T09:21:37Z".into(),
                message: Some(Message::default()),
                conversation: Some(Conversation::default()),
                contact: Some(Contact::default()),
                raw: marker,
            },
        };
        let text = serde_json::to_string(&ev).unwrap();
        assert!(text.ends_with(r#","raw":{"marker":1}}}"#), "{text}");
    }
}
