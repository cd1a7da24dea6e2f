//! The event on the wire: a CloudEvents 1.0 structured-JSON envelope whose `data` is
//! the normalized object plus the vendor's payload, byte for byte, under `raw`.

#[cfg(feature = "schema")]
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// AMQP `content_type` of every event message.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";
/// AMQP `app_id` of every event message.
pub const APP_ID: &str = "hookrelay";

/// A hookrelay event: one accepted webhook as a CloudEvents 1.0 structured-JSON object
/// (the AMQP message body). Serialized by the relay, deserialized by workers; the JSON
/// Schema in `docs/event.schema.json` is generated from these types (feature `schema`).
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[cfg_attr(feature = "schema", schemars(title = "hookrelay event"))]
pub struct CloudEvent {
    /// CloudEvents version, always `1.0`.
    #[cfg_attr(feature = "schema", schemars(extend("const" = "1.0")))]
    pub specversion: String,
    /// Deterministic event id (a UUID v5 of the source, the vendor's event name and the
    /// vendor's delivery id): a vendor's retry of the same delivery has the same id.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "uuid")))]
    pub id: String,
    /// `/webhooks/<source>`, the relay path the webhook came in on.
    #[cfg_attr(feature = "schema", schemars(extend("pattern" = "^/webhooks/[^/]+$")))]
    pub source: String,
    /// The routing key, `<vendor>.<event>` (`<source>.<type>` for `standard-webhooks`).
    #[serde(rename = "type")]
    pub ty: String,
    /// The conversation id, when the event belongs to a conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When it happened (RFC 3339, UTC): from the payload, else the receipt time.
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub time: String,
    /// Media type of `data`, always `application/json`.
    #[cfg_attr(feature = "schema", schemars(extend("const" = "application/json")))]
    pub datacontenttype: String,
    /// CloudEvents extension attribute: the vendor that sent the webhook.
    pub vendor: String,
    pub data: EventData,
}

/// `data`: what every consumer can rely on, whatever the vendor.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub struct EventData {
    /// The vendor that sent the webhook (same as the envelope's `vendor`).
    pub vendor: String,
    /// The configured source name (the `{source}` of `/webhooks/{source}`).
    pub source: String,
    /// Normalized event, e.g. `message.created` or `unmapped.call_ended`.
    pub event: String,
    /// The vendor's own name for it, e.g. `message_created`.
    pub vendor_event: String,
    /// When the relay received the webhook (RFC 3339, UTC).
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub received_at: String,
    /// The message, on message events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    /// The conversation, on conversation events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Conversation>,
    /// The contact, on contact events (and Chatwoot message events from a contact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
    /// The vendor's JSON body exactly as received, byte for byte (not re-serialized).
    /// Always an object: the relay refuses any other body.
    #[cfg_attr(feature = "schema", schemars(schema_with = "raw_schema"))]
    pub raw: Box<RawValue>,
}

/// `data.raw`: any JSON object (the vendor's own payload).
#[cfg(feature = "schema")]
fn raw_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "The vendor's JSON body exactly as received, byte for byte (not re-serialized). Always an object: the relay refuses any other body."
    })
}

/// Whether a message came from the contact (`incoming`) or from the business side
/// (`outgoing`: an agent, a bot); `unknown` when the vendor does not say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Incoming,
    Outgoing,
    #[default]
    Unknown,
}

/// A chat message, normalized. Absent fields are ones the vendor did not send.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub struct Message {
    /// The vendor's message id (always a string, whatever the vendor sends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The message text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default)]
    pub direction: Direction,
    /// When the message was sent (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(extend("format" = "date-time")))]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<Party>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<Recipient>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationRef>,
    /// Files attached to the message; empty when there are none.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// Vendor-specific extras (for example Chatwoot's `inbox_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// Who sent a message. `kind` is the vendor's word: `contact`, `user`, `agent_bot`, ...
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub struct Recipient {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// The conversation a message belongs to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub struct ConversationRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A file attached to a message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub struct Attachment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
}

/// Conversation events: the id and status every vendor has, plus vendor-specific
/// normalized extras (assignee, team, inbox, ...) flattened beside them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub struct Conversation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A contact (the customer side of a conversation).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
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
