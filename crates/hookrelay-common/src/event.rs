//! The event on the wire: a CloudEvents 1.0 structured-JSON envelope whose `data` is
//! the normalized object plus the vendor's payload, byte for byte, under `raw`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// AMQP `content_type` of every event message.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";
/// AMQP `app_id` of every event message.
pub const APP_ID: &str = "hookrelay";

/// The envelope. Serialized by the relay, deserialized by workers.
#[derive(Debug, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub time: String,
    pub datacontenttype: String,
    pub vendor: String,
    pub data: EventData,
}

/// `data`: what every consumer can rely on, whatever the vendor.
#[derive(Debug, Serialize, Deserialize)]
pub struct EventData {
    pub vendor: String,
    pub source: String,
    /// Normalized event, e.g. `message.created` or `unmapped.call_ended`.
    pub event: String,
    /// The vendor's own name for it, e.g. `message_created`.
    pub vendor_event: String,
    pub received_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Conversation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
    /// The vendor's JSON exactly as received (not re-serialized).
    pub raw: Box<RawValue>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Incoming,
    Outgoing,
    #[default]
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<Party>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<Recipient>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationRef>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// Who sent a message. `kind` is the vendor's word: `contact`, `user`, `agent_bot`, ...
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Party {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// Who a message is for: a user or a group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recipient {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
}

/// Conversation events: the id and status every vendor has, plus vendor-specific
/// normalized extras (assignee, team, inbox, ...) flattened beside them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// RFC 3339 in UTC, the only time format on the wire.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc() {
        let t = OffsetDateTime::from_unix_timestamp(1_791_969_697).unwrap();
        assert_eq!(rfc3339(t), "2026-10-14T09:21:37Z");
    }

    #[test]
    fn envelope_round_trips_with_raw_bytes_intact() {
        let raw = r#"{"b":1, "a":"\u2028\u0000","__proto__":null}"#;
        let ev = CloudEvent {
            specversion: "1.0".into(),
            id: "x".into(),
            source: "/webhooks/k".into(),
            ty: "k.message.created".into(),
            subject: None,
            time: "2026-10-14T09:21:37Z".into(),
            datacontenttype: "application/json".into(),
            vendor: "kommunicate".into(),
            data: EventData {
                vendor: "kommunicate".into(),
                source: "k".into(),
                event: "message.created".into(),
                vendor_event: "message".into(),
                received_at: "2026-10-14T09:21:37Z".into(),
                message: None,
                conversation: None,
                contact: None,
                raw: RawValue::from_string(raw.to_owned()).unwrap(),
            },
        };
        let text = serde_json::to_string(&ev).unwrap();
        assert!(text.contains(raw), "{text}");
        let back: CloudEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(back.data.raw.get(), raw);
        assert_eq!(back.ty, "k.message.created");
    }
}
