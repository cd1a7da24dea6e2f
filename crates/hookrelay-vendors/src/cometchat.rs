//! CometChat: `{"trigger", "data", "appId", "region", "webhook"}` with optional
//! `Authorization: Basic base64(username:password)` (see docs/vendors.md).
//!
//! Two systems share the endpoint: the current one (message at `data.message`) and the
//! legacy one (`after_message` / `before_message`, message at `data` itself).

use crate::keys::{Key, KeyError, KeyKind, KeyValues};
use crate::util::{self, Object};
use crate::{AuthError, Contract, Credentials, Headers, Normalized, PayloadError, Vendor};
use hookrelay_common::routing::Prefix;
use hookrelay_common::Secret;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hookrelay_common::event::{
    rfc3339, Attachment, Conversation, ConversationRef, Direction, Message, Party, Recipient,
};
use hookrelay_common::routing::unmapped_event;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

/// The vendor, for the registry and for code that names it.
pub struct Cometchat;

/// This vendor's handle.
pub const VENDOR: Vendor = Vendor(&Cometchat);

/// A CometChat source's credentials: the Basic auth user and password of its webhook.
#[derive(Clone)]
pub struct Basic {
    pub username: Secret,
    pub password: Secret,
}

/// `username` and `password` (or their `_file`s).
const KEYS: &[Key] = &[
    Key {
        name: "username",
        kind: KeyKind::Identity,
        demo: Some("relayuser"),
    },
    Key {
        name: "password",
        kind: KeyKind::Secret,
        demo: Some("s3cretPa55"),
    },
];

impl Contract for Cometchat {
    fn name(&self) -> &'static str {
        "cometchat"
    }
    fn keys(&self) -> &'static [Key] {
        KEYS
    }
    fn credentials(&self, keys: &KeyValues) -> Result<Credentials, KeyError> {
        let username = keys.secret("username")?;
        if username.expose().contains(':') {
            // RFC 7617: the user-id ends at the first colon, so no request could ever
            // match; say so now rather than answer every delivery 401.
            return Err(KeyError::new(
                "username",
                "must not contain ':' (HTTP Basic ends the user name at the first colon)",
            ));
        }
        Ok(Credentials::new(Basic {
            username,
            password: keys.secret("password")?,
        }))
    }
    fn verify(
        &self,
        creds: &Credentials,
        headers: &Headers<'_>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), AuthError> {
        verify(creds, headers, body, now)
    }
    fn normalize(
        &self,
        headers: &Headers<'_>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Normalized, PayloadError> {
        normalize(headers, body, now)
    }
    fn sign(&self, creds: &Credentials, body: &[u8], now: OffsetDateTime) -> Vec<(String, String)> {
        sign(creds, body, now)
    }
    fn basic_auth_challenge(&self) -> bool {
        true
    }
    fn events(&self) -> &'static [(&'static str, &'static str)] {
        EVENTS
    }
    fn event_patterns(&self) -> &'static [(&'static str, &'static str)] {
        &[GROUP_PATTERN, ("<trigger>", "unmapped.<trigger>")]
    }
    fn signs_body(&self) -> bool {
        false
    }
    fn routing_prefix(&self) -> Prefix {
        Prefix::Vendor
    }
    fn id_names_vendor_event(&self) -> bool {
        true
    }
    fn fixtures_dir(&self) -> &'static str {
        "cometchat"
    }
    /// `Basic ` in any case, then the base64 `sign` makes, with or without its padding.
    #[cfg(feature = "test-support")]
    fn genuine(
        &self,
        creds: &Credentials,
        headers: &Headers<'_>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> bool {
        use crate::testing::{signed_value, unique};
        let Some(got) = unique(headers, AUTH_HEADER) else {
            return false;
        };
        let Some(expected) = signed_value(&sign(creds, body, now), AUTH_HEADER) else {
            return false;
        };
        let (scheme, b64) = (&expected[..6], &expected[6..]);
        let unpadded = b64
            .strip_suffix(b"==")
            .or_else(|| b64.strip_suffix(b"="))
            .unwrap_or(b64);
        got.len() > 6
            && got[..6].eq_ignore_ascii_case(scheme)
            && (&got[6..] == b64 || &got[6..] == unpadded)
    }
    #[cfg(feature = "test-support")]
    fn samples(&self) -> &'static crate::testing::Samples {
        static SAMPLES: crate::testing::Samples = crate::testing::Samples {
            events: &[
                "message_sent",
                "after_message",
                "before_message",
                "message_edited",
                "message_deleted",
                "message_read_receipt",
                "message_reaction_added",
                "group_member_joined",
                "call_initiated",
                "",
            ],
            required: &["trigger"],
            credential_header: AUTH_HEADER,
            complete: |obj, event, _id, data| {
                obj.insert("trigger".into(), event.into());
                obj.insert("data".into(), serde_json::Value::Object(data));
            },
        };
        &SAMPLES
    }
}

pub const AUTH_HEADER: &str = "Authorization";

/// Standard alphabet; padding optional on input (some clients strip it).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Longest `Authorization` value looked at: `Basic ` + base64 of 50 + 1 + 100 characters
/// is about 210 bytes; anything far longer is not a CometChat credential.
const MAX_AUTH_LEN: usize = 1024;

// ---------------------------------------------------------------------------------------
// Authentication

/// `Authorization: Basic base64(username:password)`: decoded and split at the first
/// colon (RFC 7617: a user-id cannot contain one); username and password are each
/// compared in constant time, both always. Invalid base64 or no colon is `Malformed`.
pub fn verify(
    creds: &Credentials,
    headers: &Headers,
    _body: &[u8],
    _now: OffsetDateTime,
) -> Result<(), AuthError> {
    let Some(Basic { username, password }) = creds.get::<Basic>() else {
        return Err(AuthError::WrongKind);
    };
    if username.is_empty() || password.is_empty() || username.expose().contains(':') {
        // Unsatisfiable or empty: fail closed.
        return Err(AuthError::WrongKind);
    }
    let got = headers
        .get_unique(AUTH_HEADER)
        .map_err(|_| AuthError::Repeated)?
        .ok_or(AuthError::Missing)?;
    if got.len() <= 6 || got.len() > MAX_AUTH_LEN || !got[..6].eq_ignore_ascii_case(b"basic ") {
        return Err(AuthError::Malformed);
    }
    let decoded = BASE64.decode(&got[6..]).map_err(|_| AuthError::Malformed)?;
    let colon = decoded
        .iter()
        .position(|b| *b == b':')
        .ok_or(AuthError::Malformed)?;
    let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
    // `&`, not `&&`: both comparisons always run.
    let ok = util::ct_eq(user, username.expose().as_bytes())
        & util::ct_eq(pass, password.expose().as_bytes());
    if ok {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

/// The headers CometChat sends: `Content-Type` and, with Basic credentials,
/// `Authorization`.
pub fn sign(creds: &Credentials, _body: &[u8], _now: OffsetDateTime) -> Vec<(String, String)> {
    let mut out = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    if let Some(Basic { username, password }) = creds.get::<Basic>() {
        let user_info = format!("{}:{}", username.expose(), password.expose());
        out.push((
            AUTH_HEADER.to_owned(),
            util::basic_header(user_info.as_bytes()),
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Normalization

/// What kind of payload a trigger carries, which decides where the message, time and
/// dedup key come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A message object (`data.message`, or `data` itself for legacy triggers).
    Message,
    /// An edit/delete action message whose target is `data.entities.on.entity`.
    Action,
    /// `before_message`: a message not yet persisted, no id.
    BeforeSend,
    /// `data{sender, receiver, body{messageId, timestamp}}`.
    Receipt,
    /// `data.reaction{id, messageId, reactedAt}`.
    Reaction,
    /// `data.group{guid, ...}` (+ `data.members`).
    Group,
    /// `user_connection_status_changed` and the legacy connection event (times in ms).
    Connection,
    Other,
}

/// The event mapping, `(CometChat trigger, normalized event)`. Any other `group_<verb>`
/// whose verb is a safe routing-key word becomes `group.<verb>` too ([`GROUP_PATTERN`]);
/// everything else (`call_*`, `meeting_*`, connection events, ...) is
/// `unmapped.<trigger>`.
pub const EVENTS: &[(&str, &str)] = &[
    ("message_sent", "message.created"),
    ("after_message", "message.created"),
    ("message_edited", "message.updated"),
    ("message_deleted", "message.deleted"),
    ("before_message", "message.before_send"),
    ("message_delivery_receipt", "message.delivered"),
    ("message_delivered_to_all", "message.delivered"),
    ("message_read_receipt", "message.read"),
    ("message_read_by_all", "message.read"),
    ("message_reaction_added", "reaction.added"),
    ("message_reaction_removed", "reaction.removed"),
    ("user_mentioned", "user.mentioned"),
    ("group_created", "group.created"),
    ("group_updated", "group.updated"),
    ("group_deleted", "group.deleted"),
    ("group_member_added", "group.member_added"),
    ("group_member_removed", "group.member_removed"),
    ("group_member_kicked", "group.member_kicked"),
    ("group_member_banned", "group.member_banned"),
    ("group_member_unbanned", "group.member_unbanned"),
    ("group_member_joined", "group.member_joined"),
    ("group_member_left", "group.member_left"),
    ("group_member_scope_changed", "group.member_scope_changed"),
    ("group_owner_transferred", "group.owner_transferred"),
];

/// `(trigger pattern, event pattern)`: a group trigger not in [`EVENTS`].
pub const GROUP_PATTERN: (&str, &str) = ("group_<verb>", "group.<verb>");

fn classify(trigger: &str) -> (Option<String>, Shape) {
    if matches!(
        trigger,
        "user_connection_status_changed" | "after_connection_status_changed"
    ) {
        return (None, Shape::Connection);
    }
    let event = match EVENTS.iter().find(|(t, _)| *t == trigger) {
        Some((_, event)) => (*event).to_owned(),
        // `group_member_joined` → `group.member_joined`, if the rest is a safe
        // routing-key word (it must never add a level).
        None => match trigger.strip_prefix("group_") {
            Some(rest)
                if !rest.is_empty()
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
            {
                format!("group.{rest}")
            }
            _ => return (None, Shape::Other),
        },
    };
    let shape = match event.as_str() {
        "message.created" | "user.mentioned" => Shape::Message,
        "message.updated" | "message.deleted" => Shape::Action,
        "message.before_send" => Shape::BeforeSend,
        "message.delivered" | "message.read" => Shape::Receipt,
        e if e.starts_with("reaction.") => Shape::Reaction,
        e if e.starts_with("group.") => Shape::Group,
        _ => Shape::Other,
    };
    (Some(event), shape)
}

/// `trigger` (a string) and `data` (an object) are required.
pub fn normalize(
    _headers: &Headers,
    body: &[u8],
    _now: OffsetDateTime,
) -> Result<Normalized, PayloadError> {
    let root = util::parse_object(body)?;
    let trigger = util::require_str(&root, "trigger")?;
    let data = util::require_obj(&root, "data")?;
    let app_id = util::get_id(&root, "appId").unwrap_or_default();

    let (mapped, mut shape) = classify(trigger);
    let event = mapped.unwrap_or_else(|| unmapped_event(trigger));

    // The message as delivered: legacy triggers put it at `data`, current ones at
    // `data.message`.
    let legacy = matches!(trigger, "after_message" | "before_message");
    let outer: Option<&Object> = match util::get_obj(data, "message") {
        Some(m) => Some(m),
        None if legacy => Some(data),
        None => None,
    };
    // `*_to_all` shapes are undocumented: a message object wins over a receipt body.
    if shape == Shape::Receipt && util::get_obj(data, "body").is_none() && outer.is_some() {
        shape = Shape::Message;
    }

    let mut n = Normalized {
        event,
        vendor_event: trigger.to_owned(),
        ..Normalized::default()
    };

    n.subject = outer
        .and_then(|m| util::get_id(m, "conversationId"))
        .or_else(|| util::get_id(data, "conversationId"))
        .or_else(|| util::get_obj(data, "group").and_then(|g| util::get_id(g, "conversationId")));

    let outer_time = outer.and_then(|m| {
        m.get("sentAt")
            .and_then(util::from_epoch_secs)
            .or_else(|| m.get("updatedAt").and_then(util::from_epoch_secs))
    });

    match shape {
        Shape::Message | Shape::BeforeSend => {
            n.time = outer_time;
            n.message = outer.map(message);
        }
        Shape::Action => {
            n.time = outer_time;
            n.message = outer.map(|m| message(action_target(m).unwrap_or(m)));
        }
        Shape::Receipt => {
            n.time = util::get_path(data, &["body", "timestamp"]).and_then(util::from_epoch_secs);
            n.message = receipt_message(data);
        }
        Shape::Reaction => {
            let reaction = util::get_obj(data, "reaction");
            n.time = reaction
                .and_then(|r| r.get("reactedAt"))
                .and_then(util::from_epoch_secs);
            n.message = reaction
                .and_then(|r| util::get_id(r, "messageId"))
                .map(|id| Message {
                    id: Some(id),
                    ..Message::default()
                });
        }
        Shape::Group => {
            if let Some(group) = util::get_obj(data, "group") {
                let field = if trigger == "group_created" {
                    "createdAt"
                } else {
                    "updatedAt"
                };
                n.time = group.get(field).and_then(util::from_epoch_secs);
                n.conversation = Some(group_conversation(group));
            }
        }
        Shape::Connection => {
            n.time = data
                .get("timestamp")
                .and_then(util::from_epoch_millis)
                .or_else(|| data.get("connectedAt").and_then(util::from_epoch_millis));
        }
        Shape::Other => {
            n.time = outer_time;
            n.message = outer.map(message);
        }
    }

    if shape == Shape::BeforeSend {
        // Merged by CometChat into the message's metadata: answer nothing, and never
        // `do_not_propagate` (docs/vendors.md, cometchat).
        n.reply = Some(json!({}));
    }
    n.dedup_key = dedup_key(body, trigger, shape, &app_id, data, outer);
    Ok(n)
}

/// The message an edit/delete action is about: `data.entities.on.entity`.
fn action_target(action: &Object) -> Option<&Object> {
    let on = util::get_path(action, &["data", "entities", "on"])?.as_object()?;
    match on.get("entityType") {
        Some(t) if t.as_str() != Some("message") => None,
        _ => util::get_obj(on, "entity"),
    }
}

/// A uid/guid given either as a string or as an entity object.
fn entity_id(v: &Value) -> Option<String> {
    match v {
        Value::Object(o) => util::get_id(o, "uid").or_else(|| util::get_id(o, "guid")),
        v => util::id_string(v),
    }
}

fn message(m: &Object) -> Message {
    let inner = util::get_obj(m, "data");
    let entities = inner.and_then(|d| util::get_obj(d, "entities"));
    let receiver_type = util::get_string(m, "receiverType");

    let sender_entity = entities.and_then(|e| util::get_obj(e, "sender"));
    let sender_id = m.get("sender").and_then(entity_id);
    let sender = sender_id.map(|id| {
        let entity = sender_entity.and_then(|s| util::get_obj(s, "entity"));
        // Only trust the entity's name when it is about the same user.
        let same = entity.and_then(|e| util::get_id(e, "uid")).as_deref() == Some(id.as_str());
        Party {
            name: entity
                .filter(|_| same)
                .and_then(|e| util::get_string(e, "name")),
            email: None,
            kind: sender_entity
                .filter(|_| same)
                .and_then(|s| util::get_string(s, "entityType")),
            id: Some(id),
        }
    });

    let receiver_id = m.get("receiver").and_then(entity_id);
    let recipient = (receiver_id.is_some() || receiver_type.is_some()).then(|| Recipient {
        id: receiver_id.clone(),
        kind: receiver_type.clone(),
    });

    let conversation = util::get_id(m, "conversationId").map(|id| {
        let name = if receiver_type.as_deref() == Some("group") {
            entities
                .and_then(|e| util::get_path(e, &["receiver", "entity"]))
                .and_then(Value::as_object)
                .filter(|g| util::get_id(g, "guid") == receiver_id)
                .and_then(|g| util::get_string(g, "name"))
        } else {
            None
        };
        ConversationRef { id: Some(id), name }
    });

    let metadata = inner.and_then(|d| util::get_obj(d, "metadata")).cloned();
    let attachments = inner
        .map(|d| attachments(d, metadata.as_ref()))
        .unwrap_or_default();

    Message {
        id: util::get_id(m, "id"),
        text: inner.and_then(|d| util::get_string(d, "text")),
        direction: Direction::Unknown,
        created_at: m.get("sentAt").and_then(util::from_epoch_secs).map(rfc3339),
        sender,
        recipient,
        conversation,
        attachments,
        metadata,
    }
}

/// `data.attachments[{name, extension, size, mimeType, url}]`, thumbnails from the
/// thumbnail-generation extension matched by URL; a media `data.url` alone gives one
/// attachment with just the URL.
fn attachments(d: &Object, metadata: Option<&Object>) -> Vec<Attachment> {
    let thumbs: Vec<(&str, &str)> = metadata
        .and_then(|md| {
            util::get_path(
                md,
                &[
                    "@injected",
                    "extensions",
                    "thumbnail-generation",
                    "attachments",
                ],
            )
        })
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| {
                    let data = item.get("data")?.as_object()?;
                    let url = util::get_str(data, "url")?;
                    let small = util::get_path(data, &["thumbnails", "url_small"])?.as_str()?;
                    Some((url, small))
                })
                .collect()
        })
        .unwrap_or_default();

    match util::get_array(d, "attachments") {
        Some(items) => items
            .iter()
            .filter_map(Value::as_object)
            .map(|a| {
                let url = util::get_nonempty_string(a, "url");
                let thumbnail_url = url.as_deref().and_then(|u| {
                    thumbs
                        .iter()
                        .find(|(full, _)| *full == u)
                        .map(|(_, small)| (*small).to_owned())
                });
                Attachment {
                    name: util::get_string(a, "name"),
                    url,
                    content_type: util::get_string(a, "mimeType"),
                    size: util::get_u64(a, "size"),
                    thumbnail_url,
                }
            })
            .collect(),
        None => util::get_nonempty_string(d, "url")
            .map(|url| Attachment {
                url: Some(url),
                ..Attachment::default()
            })
            .into_iter()
            .collect(),
    }
}

/// A receipt names the message (`body.messageId`), its sender (`messageSender`) and,
/// in a 1:1 chat, the user whose client received/read it (`data.sender`).
fn receipt_message(data: &Object) -> Option<Message> {
    let id = util::get_path(data, &["body", "messageId"]).and_then(util::id_string)?;
    let receiver_type = util::get_str(data, "receiverType");
    let recipient = match receiver_type {
        Some("group") => data.get("receiver").and_then(entity_id).map(|g| Recipient {
            id: Some(g),
            kind: Some("group".to_owned()),
        }),
        Some("user") => data.get("sender").and_then(entity_id).map(|u| Recipient {
            id: Some(u),
            kind: Some("user".to_owned()),
        }),
        _ => None,
    };
    Some(Message {
        id: Some(id),
        sender: data
            .get("messageSender")
            .and_then(entity_id)
            .map(|u| Party {
                id: Some(u),
                ..Party::default()
            }),
        recipient,
        ..Message::default()
    })
}

fn group_conversation(group: &Object) -> Conversation {
    let mut extra = Map::new();
    for (from, to) in [("guid", "guid"), ("name", "name"), ("owner", "owner")] {
        if let Some(v) = util::get_id(group, from) {
            extra.insert(to.into(), Value::String(v));
        }
    }
    Conversation {
        id: util::get_id(group, "conversationId"),
        status: None,
        extra,
    }
}

// ---------------------------------------------------------------------------------------
// Idempotency (docs/vendors.md, cometchat: dedup key)

/// A scalar's text for a key part: strings as they are, numbers as written.
fn scalar_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn dedup_key(
    body: &[u8],
    trigger: &str,
    shape: Shape,
    app_id: &str,
    data: &Object,
    outer: Option<&Object>,
) -> String {
    let key = match shape {
        // Edit and delete action messages have their own id.
        Shape::Message | Shape::Action => outer
            .and_then(|m| util::get_id(m, "id"))
            .map(|id| util::join_key(&[app_id, trigger, &id])),
        Shape::Receipt => util::get_path(data, &["body", "messageId"])
            .and_then(util::id_string)
            .map(|message_id| {
                util::join_key(&[
                    app_id,
                    trigger,
                    &message_id,
                    &data.get("sender").and_then(entity_id).unwrap_or_default(),
                    &scalar_text(util::get_path(data, &["body", "timestamp"])),
                ])
            }),
        Shape::Reaction => util::get_path(data, &["reaction", "id"])
            .and_then(util::id_string)
            .map(|id| util::join_key(&[app_id, trigger, &id])),
        Shape::Group => util::get_obj(data, "group").and_then(|group| {
            let guid = util::get_id(group, "guid")?;
            let version = group
                .get("updatedAt")
                .filter(|v| !v.is_null())
                .or_else(|| group.get("createdAt"));
            let mut members = member_uids(data);
            members.sort();
            members.dedup();
            let members = if members.is_empty() {
                // Member events of unknown shape: without the data hash, two different
                // members joining in one second would share a key.
                format!("data:{}", util::value_hash(&Value::Object(data.clone())))
            } else {
                members.join(",")
            };
            Some(util::join_key(&[
                app_id,
                trigger,
                &guid,
                &scalar_text(version),
                &members,
            ]))
        }),
        Shape::BeforeSend => outer.map(|m| {
            let muid = util::get_id(m, "muid")
                .map(|muid| format!("muid:{muid}"))
                .unwrap_or_else(|| format!("data:{}", util::value_hash(&Value::Object(m.clone()))));
            util::join_key(&[
                app_id,
                &m.get("sender").and_then(entity_id).unwrap_or_default(),
                &m.get("receiver").and_then(entity_id).unwrap_or_default(),
                &scalar_text(m.get("sentAt")),
                &muid,
            ])
        }),
        Shape::Connection | Shape::Other => None,
    };
    key.unwrap_or_else(|| util::body_hash(body))
}

/// Member uids of a group event: `data.members` as a uid-keyed map or as a list.
fn member_uids(data: &Object) -> Vec<String> {
    match data.get("members") {
        Some(Value::Object(map)) => map.keys().cloned().collect(),
        Some(Value::Array(items)) => items.iter().filter_map(entity_id).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_791_969_697).unwrap()
    }

    fn creds() -> Credentials {
        Credentials::new(Basic {
            username: Secret::new("relayuser"),
            password: Secret::new("s3cretPa55"),
        })
    }

    fn check_with(creds: &Credentials, pairs: &[(&str, &str)]) -> Result<(), AuthError> {
        let h = Headers::from_pairs(pairs);
        verify(creds, &h, b"{}", now())
    }

    fn check(pairs: &[(&str, &str)]) -> Result<(), AuthError> {
        check_with(&creds(), pairs)
    }

    fn basic(user_info: &str) -> String {
        util::basic_header(user_info.as_bytes())
    }

    #[test]
    fn accepts_documented_header() {
        assert_eq!(
            check(&[("Authorization", "Basic cmVsYXl1c2VyOnMzY3JldFBhNTU=")]),
            Ok(())
        );
        // Unpadded base64 and a lower-case scheme (RFC 7617: case-insensitive).
        assert_eq!(
            check(&[("authorization", "basic cmVsYXl1c2VyOnMzY3JldFBhNTU")]),
            Ok(())
        );
    }

    #[test]
    fn rejections() {
        assert_eq!(check(&[]), Err(AuthError::Missing));
        assert_eq!(
            check(&[("Authentication", "Basic cmVsYXl1c2VyOnMzY3JldFBhNTU=")]),
            Err(AuthError::Missing)
        );
        assert_eq!(
            check(&[("Authorization", "cmVsYXl1c2VyOnMzY3JldFBhNTU=")]),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            check(&[("Authorization", "Bearer cmVsYXl1c2VyOnMzY3JldFBhNTU=")]),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            check(&[("Authorization", "Basic ")]),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            check(&[("Authorization", "Basic !!!!")]),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            check(&[("Authorization", &basic("relayusers3cretPa55"))]),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            check(&[("Authorization", &basic("relayuser:wrong"))]),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            check(&[("Authorization", &basic("someone:s3cretPa55"))]),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            check(&[("Authorization", &basic("relayuser:s3cretPa55:"))]),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            check(&[("Authorization", &basic(":relayuser:s3cretPa55"))]),
            Err(AuthError::Mismatch)
        );
        let ok = basic("relayuser:s3cretPa55");
        assert_eq!(
            check(&[("Authorization", &ok), ("Authorization", &ok)]),
            Err(AuthError::Repeated)
        );
    }

    #[test]
    fn username_with_colon() {
        // A password may contain colons: the split is at the first one.
        let colon_pw = Credentials::new(Basic {
            username: Secret::new("relayuser"),
            password: Secret::new("a:b"),
        });
        assert_eq!(
            check_with(&colon_pw, &[("Authorization", &basic("relayuser:a:b"))]),
            Ok(())
        );
        // A username cannot: such credentials are unsatisfiable, so rejected outright,
        // and a colon-shifted header does not match the real pair.
        let colon_user = Credentials::new(Basic {
            username: Secret::new("relay:user"),
            password: Secret::new("pw"),
        });
        assert_eq!(
            check_with(&colon_user, &[("Authorization", &basic("relay:user:pw"))]),
            Err(AuthError::WrongKind)
        );
        assert_eq!(
            check(&[("Authorization", &basic("relay:users3cretPa55"))]),
            Err(AuthError::Mismatch)
        );
    }

    #[test]
    fn wrong_or_empty_credentials_fail_closed() {
        let ok = basic("relayuser:s3cretPa55");
        let pairs = [("Authorization", ok.as_str())];
        let empty = Credentials::new(Basic {
            username: Secret::new("relayuser"),
            password: Secret::new(""),
        });
        assert_eq!(check_with(&empty, &pairs), Err(AuthError::WrongKind));
        let token = Credentials::new(crate::kommunicate::Token(Secret::new("abcdef")));
        assert_eq!(check_with(&token, &pairs), Err(AuthError::WrongKind));
        assert_eq!(
            check_with(&Credentials::NONE, &pairs),
            Err(AuthError::WrongKind)
        );
    }

    #[test]
    fn sign_matches_verify() {
        let headers = sign(&creds(), b"{}", now());
        assert!(headers.contains(&(
            "Authorization".into(),
            "Basic cmVsYXl1c2VyOnMzY3JldFBhNTU=".into()
        )));
        assert_eq!(sign(&Credentials::NONE, b"{}", now()).len(), 1);
    }

    fn norm(body: &str) -> Result<Normalized, PayloadError> {
        normalize(&Headers::new(), body.as_bytes(), now())
    }

    #[test]
    fn envelope_is_required() {
        assert_eq!(
            norm(r#"{"data":{}}"#),
            Err(PayloadError::Missing("trigger"))
        );
        assert_eq!(
            norm(r#"{"trigger":1,"data":{}}"#),
            Err(PayloadError::WrongType("trigger", "a string"))
        );
        assert_eq!(
            norm(r#"{"trigger":"message_sent"}"#),
            Err(PayloadError::Missing("data"))
        );
        assert_eq!(
            norm(r#"{"trigger":"message_sent","data":[]}"#),
            Err(PayloadError::WrongType("data", "an object"))
        );
    }

    #[test]
    fn trigger_mapping() {
        let cases = [
            ("message_delivered_to_all", "message.delivered"),
            ("message_read_by_all", "message.read"),
            ("message_reaction_removed", "reaction.removed"),
            ("group_member_joined", "group.member_joined"),
            ("group_owner_transferred", "group.owner_transferred"),
            ("group_member_scope_changed", "group.member_scope_changed"),
            ("group_", "unmapped.group_"),
            ("group_x.y", "unmapped.group_x_y"),
            ("group_A", "unmapped.group_a"),
            ("call_ended", "unmapped.call_ended"),
            ("meeting_started", "unmapped.meeting_started"),
            (
                "user_connection_status_changed",
                "unmapped.user_connection_status_changed",
            ),
        ];
        for (trigger, event) in cases {
            let n = norm(&format!(r#"{{"trigger":"{trigger}","data":{{}}}}"#)).unwrap();
            assert_eq!(n.event, event, "{trigger}");
            assert_eq!(n.vendor_event, trigger);
        }
    }

    #[test]
    fn connection_events_are_in_milliseconds() {
        let n = norm(
            r#"{"trigger":"user_connection_status_changed","data":{"timestamp":1791969697412}}"#,
        )
        .unwrap();
        assert_eq!(
            n.time.map(rfc3339).as_deref(),
            Some("2026-10-14T09:21:37.412Z")
        );
        assert!(n.dedup_key.starts_with("sha256:"));
    }

    #[test]
    fn group_member_events_without_members_still_differ() {
        let a = norm(r#"{"trigger":"group_member_joined","appId":"x","data":{"group":{"guid":"g","updatedAt":5},"joinedUser":{"uid":"a"}}}"#).unwrap();
        let b = norm(r#"{"trigger":"group_member_joined","appId":"x","data":{"group":{"guid":"g","updatedAt":5},"joinedUser":{"uid":"b"}}}"#).unwrap();
        assert_ne!(a.dedup_key, b.dedup_key);
        let c = norm(r#"{"trigger":"group_member_added","appId":"x","data":{"group":{"guid":"g","updatedAt":5},"members":[{"uid":"b"},"a"]}}"#).unwrap();
        assert_eq!(
            c.dedup_key,
            "x\u{1f}group_member_added\u{1f}g\u{1f}5\u{1f}a,b"
        );
    }

    #[test]
    fn before_message_without_muid_hashes_data() {
        let a = norm(r#"{"trigger":"before_message","appId":"x","data":{"sender":"s","receiver":"r","sentAt":1,"data":{"text":"a"}}}"#).unwrap();
        let b = norm(r#"{"trigger":"before_message","appId":"x","data":{"sender":"s","receiver":"r","sentAt":1,"data":{"text":"b"}}}"#).unwrap();
        assert_ne!(a.dedup_key, b.dedup_key);
        assert_eq!(a.reply, Some(json!({})));
        let c = norm(r#"{"trigger":"before_message","appId":"x","data":{"muid":"m1","sender":"s","receiver":"r","sentAt":1,"data":{"text":"b"}}}"#).unwrap();
        assert_eq!(c.dedup_key, "x\u{1f}s\u{1f}r\u{1f}1\u{1f}muid:m1");
    }
}
