//! Chatwoot: `X-Chatwoot-Signature: sha256=<hex HMAC-SHA256(secret, "<ts>." + raw body)>`
//! with `X-Chatwoot-Timestamp` (unix seconds), and `X-Chatwoot-Delivery` (a UUID per
//! event and target URL) as the delivery id. The `event` key names the event (see
//! docs/vendors.md).

use crate::keys::{Key, KeyError, KeyKind, KeyValues};
use crate::util::{self, Object};
use crate::{AuthError, Contract, Credentials, Headers, Normalized, PayloadError, Vendor};
use hookrelay_common::routing::Prefix;
use hookrelay_common::Secret;
use std::time::Duration;
use hmac::{Hmac, Mac};
use hookrelay_common::event::{
    rfc3339, Attachment, Contact, Conversation, ConversationRef, Direction, Message, Party,
};
use hookrelay_common::routing::unmapped_event;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

type HmacSha256 = Hmac<Sha256>;

/// The vendor, for the registry and for code that names it.
pub struct Chatwoot;

/// This vendor's handle.
pub const VENDOR: Vendor = Vendor(&Chatwoot);

/// A Chatwoot source's credentials: the webhook's HMAC secret and the replay window
/// (`None` turns the window off, for fixed test vectors).
#[derive(Clone)]
pub struct HmacSecret {
    pub secret: Secret,
    pub tolerance: Option<Duration>,
}

/// `secret` (or `secret_file`) and `signature_tolerance_secs`.
const KEYS: &[Key] = &[
    Key {
        name: "secret",
        kind: KeyKind::Secret,
        demo: Some("test-chatwoot-webhook-secret"),
    },
    Key {
        name: "signature_tolerance_secs",
        kind: KeyKind::Seconds { default: 300 },
        demo: None,
    },
];

impl Contract for Chatwoot {
    fn name(&self) -> &'static str {
        "chatwoot"
    }
    fn keys(&self) -> &'static [Key] {
        KEYS
    }
    fn credentials(&self, keys: &KeyValues) -> Result<Credentials, KeyError> {
        Ok(Credentials::new(HmacSecret {
            secret: keys.secret("secret")?,
            tolerance: Some(Duration::from_secs(keys.seconds("signature_tolerance_secs")?)),
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
        false
    }
    fn events(&self) -> &'static [(&'static str, &'static str)] {
        EVENTS
    }
    fn event_patterns(&self) -> &'static [(&'static str, &'static str)] {
        &[("<event>", "unmapped.<event>")]
    }
    fn signs_body(&self) -> bool {
        true
    }
    fn routing_prefix(&self) -> Prefix {
        Prefix::Vendor
    }
    fn id_names_vendor_event(&self) -> bool {
        true
    }
    fn fixtures_dir(&self) -> &'static str {
        "chatwoot"
    }
    /// A canonical decimal timestamp within the window, and exactly the signature `sign`
    /// makes at that time.
    #[cfg(feature = "test-support")]
    fn genuine(
        &self,
        creds: &Credentials,
        headers: &Headers<'_>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> bool {
        use crate::testing::{signed_value, unique};
        let Some(HmacSecret { tolerance, .. }) = creds.get::<HmacSecret>() else {
            return false;
        };
        let (Some(ts), Some(sig)) = (
            unique(headers, TIMESTAMP_HEADER),
            unique(headers, SIGNATURE_HEADER),
        ) else {
            return false;
        };
        let Some(secs) = std::str::from_utf8(ts)
            .ok()
            .and_then(|t| t.parse::<i64>().ok().filter(|s| s.to_string() == t))
        else {
            return false;
        };
        if let Some(tol) = tolerance {
            if (i128::from(now.unix_timestamp()) - i128::from(secs)).abs()
                > i128::from(tol.as_secs())
            {
                return false;
            }
        }
        let Ok(at) = OffsetDateTime::from_unix_timestamp(secs) else {
            return false;
        };
        let signed = sign(creds, body, at);
        signed_value(&signed, SIGNATURE_HEADER).as_deref() == Some(sig)
            && signed_value(&signed, TIMESTAMP_HEADER).as_deref() == Some(ts)
    }
    #[cfg(feature = "test-support")]
    fn samples(&self) -> &'static crate::testing::Samples {
        static SAMPLES: crate::testing::Samples = crate::testing::Samples {
            events: &[
                "message_created",
                "message_updated",
                "conversation_created",
                "conversation_status_changed",
                "contact_created",
                "webwidget_triggered",
                "automation_event.conversation_created",
                "Weird Event/Ä",
                "",
            ],
            required: &["event"],
            credential_header: SIGNATURE_HEADER,
            complete: |obj, event, _id, _data| {
                obj.insert("event".into(), event.into());
            },
        };
        &SAMPLES
    }
}

pub const TIMESTAMP_HEADER: &str = "X-Chatwoot-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Chatwoot-Signature";
pub const DELIVERY_HEADER: &str = "X-Chatwoot-Delivery";

const SIGNATURE_PREFIX: &[u8] = b"sha256=";
/// Longest timestamp header accepted (digits). Unix seconds have 10 today.
const MAX_TIMESTAMP_DIGITS: usize = 20;
/// Longest `X-Chatwoot-Delivery` used as a dedup key (Chatwoot sends a 36-char UUID).
const MAX_DELIVERY_LEN: usize = 128;

// ---------------------------------------------------------------------------------------
// Authentication

/// Check the HMAC over `<X-Chatwoot-Timestamp>.<raw body>` and the replay window.
///
/// The signature must be `sha256=` + exactly 64 lowercase hex digits (what Chatwoot
/// sends); the timestamp must be all digits and, when `tolerance` is set, within it of
/// `now` in either direction. The MAC is checked with `verify_slice` (constant time).
pub fn verify(
    creds: &Credentials,
    headers: &Headers,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<(), AuthError> {
    let Some(HmacSecret { secret, tolerance }) = creds.get::<HmacSecret>() else {
        return Err(AuthError::WrongKind);
    };
    if secret.is_empty() {
        return Err(AuthError::WrongKind);
    }
    let ts = headers
        .get_unique(TIMESTAMP_HEADER)
        .map_err(|_| AuthError::Repeated)?;
    let sig = headers
        .get_unique(SIGNATURE_HEADER)
        .map_err(|_| AuthError::Repeated)?;
    let (Some(ts), Some(sig)) = (ts, sig) else {
        return Err(AuthError::Missing);
    };

    let sig = decode_signature(sig).ok_or(AuthError::Malformed)?;
    if ts.is_empty() || ts.len() > MAX_TIMESTAMP_DIGITS || !ts.iter().all(u8::is_ascii_digit) {
        return Err(AuthError::Malformed);
    }
    if let Some(tolerance) = tolerance {
        // At most 20 digits, so this fits an i128 without overflow.
        let ts_secs = ts
            .iter()
            .fold(0_i128, |acc, d| acc * 10 + i128::from(d - b'0'));
        let skew = (i128::from(now.unix_timestamp()) - ts_secs).abs();
        if skew > i128::from(tolerance.as_secs()) {
            return Err(AuthError::Stale);
        }
    }

    let mut mac =
        HmacSha256::new_from_slice(secret.expose().as_bytes()).map_err(|_| AuthError::WrongKind)?;
    mac.update(ts);
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig).map_err(|_| AuthError::Mismatch)
}

/// `sha256=<64 lowercase hex digits>` → the 32 MAC bytes. Anything else (upper case,
/// truncated, another prefix) is `None`.
fn decode_signature(value: &[u8]) -> Option<[u8; 32]> {
    let hex_part = value.strip_prefix(SIGNATURE_PREFIX)?;
    if hex_part.len() != 64
        || !hex_part
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let mut out = [0_u8; 32];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}

/// `hex(HMAC-SHA256(secret, "<timestamp>." + body))`.
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(), // unreachable: HMAC takes keys of any length
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The headers Chatwoot sends. With a secret: `X-Chatwoot-Timestamp` (`now`),
/// `X-Chatwoot-Signature` and `X-Chatwoot-Delivery`, a UUID-shaped id derived from the
/// timestamp and body (pure: no randomness), so two sends in different seconds differ.
pub fn sign(creds: &Credentials, body: &[u8], now: OffsetDateTime) -> Vec<(String, String)> {
    let mut out = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    if let Some(HmacSecret { secret, .. }) = creds.get::<HmacSecret>() {
        let ts = now.unix_timestamp().to_string();
        out.push(("Accept".to_owned(), "application/json".to_owned()));
        out.push((DELIVERY_HEADER.to_owned(), delivery_id(&ts, body)));
        out.push((TIMESTAMP_HEADER.to_owned(), ts.clone()));
        out.push((
            SIGNATURE_HEADER.to_owned(),
            format!(
                "sha256={}",
                signature(secret.expose().as_bytes(), &ts, body)
            ),
        ));
    }
    out
}

/// A UUID (version 8, "custom") from SHA-256 of `<timestamp>.<body>`.
fn delivery_id(ts: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(ts.as_bytes());
    h.update(b".");
    h.update(body);
    let d = h.finalize();
    let mut b = [0_u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

// ---------------------------------------------------------------------------------------
// Normalization

const CONVERSATION_EVENTS: [&str; 5] = [
    "conversation_created",
    "conversation_updated",
    "conversation_status_changed",
    "conversation_opened",
    "conversation_resolved",
];

/// `event` (a string) is required; the rest depends on the event.
pub fn normalize(
    headers: &Headers,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<Normalized, PayloadError> {
    let root = util::parse_object(body)?;
    let vendor_event = util::require_str(&root, "event")?;

    let mut n = Normalized {
        event: map_event(vendor_event, &root),
        vendor_event: vendor_event.to_owned(),
        dedup_key: dedup_key(headers, body, &root, vendor_event, now),
        ..Normalized::default()
    };

    match vendor_event {
        "message_created" | "message_updated" => {
            let m = message(&root);
            n.subject = m.conversation.as_ref().and_then(|c| c.id.clone());
            n.time = if vendor_event == "message_created" {
                root.get("created_at").and_then(util::from_secs_or_iso)
            } else {
                // A message payload has no update time of its own; `created_at` is the
                // original message's, not the update's, so it is not used here.
                update_time(&root)
            };
            n.contact = util::get_obj(&root, "sender")
                .filter(|s| is_contact(s))
                .map(contact);
            n.message = Some(m);
        }
        e if CONVERSATION_EVENTS.contains(&e) => {
            n.subject = util::get_id(&root, "id");
            n.time = if e == "conversation_created" {
                root.get("created_at").and_then(util::from_secs_or_iso)
            } else {
                update_time(&root)
            };
            let mut c = conversation(&root);
            if let Some(ch) = root.get("changed_attributes").filter(|v| v.is_array()) {
                c.extra.insert("changed_attributes".into(), ch.clone());
            }
            if let Some(account) =
                util::get_obj(&root, "account").and_then(|a| util::get_id(a, "id"))
            {
                c.extra.insert("account_id".into(), Value::String(account));
            }
            n.conversation = Some(c);
            n.contact = util::get_path(&root, &["meta", "sender"])
                .and_then(Value::as_object)
                .map(contact);
        }
        "contact_created" | "contact_updated" => {
            n.time = if vendor_event == "contact_created" {
                root.get("created_at").and_then(util::from_secs_or_iso)
            } else {
                update_time(&root)
            };
            n.contact = Some(contact(&root));
        }
        "webwidget_triggered" => {
            if let Some(conv) = util::get_obj(&root, "current_conversation") {
                n.subject = util::get_id(conv, "id");
                let mut c = conversation(conv);
                if let Some(ci) = util::get_id(&root, "id") {
                    c.extra.insert("contact_inbox_id".into(), Value::String(ci));
                }
                n.conversation = Some(c);
            }
            n.contact = util::get_obj(&root, "contact").map(contact);
        }
        "conversation_typing_on" | "conversation_typing_off" => {
            // No time of its own: the relay uses the receipt time.
            if let Some(conv) = util::get_obj(&root, "conversation") {
                n.subject = util::get_id(conv, "id");
                let mut c = conversation(conv);
                if let Some(user) = util::get_obj(&root, "user") {
                    c.extra.insert("user".into(), party_value(&party(user)));
                }
                if let Some(p) = root.get("is_private").filter(|v| v.is_boolean()) {
                    c.extra.insert("is_private".into(), p.clone());
                }
                n.conversation = Some(c);
            }
            n.contact = util::get_obj(&root, "user")
                .filter(|u| is_contact(u))
                .map(contact);
        }
        "inbox_created" => {
            n.time = root.get("created_at").and_then(util::from_secs_or_iso);
        }
        "inbox_updated" => {
            n.time = update_time(&root);
        }
        e if e.starts_with("automation_event.") => {
            // Automation rules re-send a conversation snapshot (docs/vendors.md, chatwoot).
            n.subject = util::get_id(&root, "id");
        }
        _ => {}
    }
    Ok(n)
}

/// The event mapping, `(Chatwoot event, normalized event)`; anything else is
/// `unmapped.<event>`. `message_updated` has two rows: it is how Chatwoot also reports a
/// deletion (`content_attributes.deleted: true`).
pub const EVENTS: &[(&str, &str)] = &[
    ("message_created", "message.created"),
    ("message_updated", "message.updated"),
    ("message_updated", "message.deleted"),
    ("conversation_created", "conversation.created"),
    ("conversation_updated", "conversation.updated"),
    ("conversation_status_changed", "conversation.status_changed"),
    ("conversation_opened", "conversation.status_changed"),
    ("conversation_resolved", "conversation.status_changed"),
    ("contact_created", "contact.created"),
    ("contact_updated", "contact.updated"),
    ("webwidget_triggered", "widget.triggered"),
    ("conversation_typing_on", "typing.started"),
    ("conversation_typing_off", "typing.stopped"),
    ("inbox_created", "inbox.created"),
    ("inbox_updated", "inbox.updated"),
];

fn map_event(vendor_event: &str, root: &Object) -> String {
    let deleted = vendor_event == "message_updated"
        && util::get_path(root, &["content_attributes", "deleted"]) == Some(&Value::Bool(true));
    let wanted = |event: &str| !deleted || event == "message.deleted";
    match EVENTS
        .iter()
        .find(|(name, event)| *name == vendor_event && wanted(event))
    {
        Some((_, event)) => (*event).to_owned(),
        None => unmapped_event(vendor_event),
    }
}

/// The update time of an `*_updated` payload: its own `updated_at` (conversations: float
/// seconds), else the `updated_at` entry of `changed_attributes` (ISO).
fn update_time(root: &Object) -> Option<OffsetDateTime> {
    root.get("updated_at")
        .and_then(util::from_secs_or_iso)
        .or_else(|| changed_attribute(root, "updated_at").and_then(util::from_secs_or_iso))
}

/// `changed_attributes: [{"<name>": {"previous_value", "current_value"}}, ...]` →
/// the current value of `<name>`.
fn changed_attribute<'a>(root: &'a Object, name: &str) -> Option<&'a Value> {
    util::get_array(root, "changed_attributes")?
        .iter()
        .filter_map(Value::as_object)
        .find_map(|entry| entry.get(name))
        .and_then(Value::as_object)
        .and_then(|change| change.get("current_value"))
}

/// The message of a `message_*` event (webhook format) or of a conversation's
/// `messages[]` (push format: integer `message_type` and `created_at`).
fn message(m: &Object) -> Message {
    let conversation_id = util::get_obj(m, "conversation")
        .and_then(|c| util::get_id(c, "id"))
        .or_else(|| util::get_id(m, "conversation_id"));
    let attachments = util::get_array(m, "attachments")
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_object)
                .map(attachment)
                .collect()
        })
        .unwrap_or_default();

    let mut metadata = Map::new();
    if let Some(p) = m.get("private").filter(|v| v.is_boolean()) {
        metadata.insert("private".into(), p.clone());
    }
    if let Some(ct) = m.get("content_type").filter(|v| v.is_string()) {
        metadata.insert("content_type".into(), ct.clone());
    }
    if let Some(ca) = util::get_obj(m, "content_attributes").filter(|o| !o.is_empty()) {
        metadata.insert("content_attributes".into(), Value::Object(ca.clone()));
    }
    if let Some(src) = m.get("source_id").filter(|v| !v.is_null()) {
        metadata.insert("source_id".into(), src.clone());
    }
    let inbox_id = util::get_obj(m, "inbox")
        .and_then(|i| util::get_id(i, "id"))
        .or_else(|| util::get_id(m, "inbox_id"));
    if let Some(inbox_id) = inbox_id {
        metadata.insert("inbox_id".into(), Value::String(inbox_id));
    }

    Message {
        id: util::get_id(m, "id"),
        text: util::get_string(m, "content"),
        direction: direction(m.get("message_type")),
        created_at: m
            .get("created_at")
            .and_then(util::from_secs_or_iso)
            .map(rfc3339),
        sender: util::get_obj(m, "sender").map(party),
        recipient: None,
        conversation: conversation_id.map(|id| ConversationRef {
            id: Some(id),
            name: None,
        }),
        attachments,
        metadata: (!metadata.is_empty()).then_some(metadata),
    }
}

/// `incoming` is incoming; `outgoing` and `template` (a bot/agent-side form) are
/// outgoing; `activity` and anything else unknown. Push format uses 0/1/2/3.
fn direction(message_type: Option<&Value>) -> Direction {
    match message_type {
        Some(Value::String(s)) => match s.as_str() {
            "incoming" => Direction::Incoming,
            "outgoing" | "template" => Direction::Outgoing,
            _ => Direction::Unknown,
        },
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => Direction::Incoming,
            Some(1) | Some(3) => Direction::Outgoing,
            _ => Direction::Unknown,
        },
        _ => Direction::Unknown,
    }
}

fn attachment(a: &Object) -> Attachment {
    Attachment {
        name: None, // Chatwoot sends no file name
        url: util::get_nonempty_string(a, "data_url"),
        content_type: util::get_string(a, "file_type"),
        size: util::get_u64(a, "file_size"),
        thumbnail_url: util::get_nonempty_string(a, "thumb_url"),
    }
}

/// A contact's `webhook_data` has no `type` key; users and bots say `user` /
/// `agent_bot`, push-format contacts say `contact`.
fn is_contact(p: &Object) -> bool {
    match p.get("type") {
        None => true,
        Some(t) => t.as_str() == Some("contact"),
    }
}

fn party(p: &Object) -> Party {
    Party {
        id: util::get_id(p, "id"),
        name: util::get_string(p, "name"),
        email: util::get_nonempty_string(p, "email"),
        kind: match p.get("type") {
            None => Some("contact".to_owned()),
            Some(t) => t.as_str().map(str::to_owned),
        },
    }
}

fn party_value(p: &Party) -> Value {
    serde_json::to_value(p).unwrap_or(Value::Null)
}

fn contact(c: &Object) -> Contact {
    Contact {
        id: util::get_id(c, "id"),
        name: util::get_string(c, "name"),
        email: util::get_nonempty_string(c, "email"),
        phone: util::get_nonempty_string(c, "phone_number"),
    }
}

/// A Conversation payload → `{id (display id), status, inbox_id, channel, priority,
/// labels, assignee, team}`; `null` assignee/team stay `null` (unassigned).
fn conversation(c: &Object) -> Conversation {
    let mut extra = Map::new();
    if let Some(inbox) = util::get_id(c, "inbox_id") {
        extra.insert("inbox_id".into(), Value::String(inbox));
    }
    if let Some(ch) = c.get("channel").filter(|v| v.is_string()) {
        extra.insert("channel".into(), ch.clone());
    }
    if let Some(p) = c.get("priority").filter(|v| v.is_string()) {
        extra.insert("priority".into(), p.clone());
    }
    if let Some(labels) = c.get("labels").filter(|v| v.is_array()) {
        extra.insert("labels".into(), labels.clone());
    }
    if let Some(meta) = util::get_obj(c, "meta") {
        match meta.get("assignee") {
            Some(Value::Object(a)) => {
                extra.insert("assignee".into(), party_value(&party(a)));
            }
            Some(Value::Null) => {
                extra.insert("assignee".into(), Value::Null);
            }
            _ => {}
        }
        match meta.get("team") {
            Some(Value::Object(t)) => {
                extra.insert(
                    "team".into(),
                    json!({"id": util::get_id(t, "id"), "name": util::get_str(t, "name")}),
                );
            }
            Some(Value::Null) => {
                extra.insert("team".into(), Value::Null);
            }
            _ => {}
        }
    }
    Conversation {
        id: util::get_id(c, "id"),
        status: util::get_string(c, "status"),
        extra,
    }
}

// ---------------------------------------------------------------------------------------
// Idempotency (docs/vendors.md, chatwoot: dedup key)

/// 1. `X-Chatwoot-Delivery` when present (and sane).
/// 2. Typing events are never deduplicated: the key includes the receipt time.
/// 3. `*_created`: `(event, account.id, id)`.
/// 4. `*_updated`, `*_status_changed`, `conversation_opened|resolved`:
///    `(event, account.id, id, version)`, the version being `updated_at`, else a hash
///    of `changed_attributes`, else a hash of the message content and attributes.
/// 5. Otherwise SHA-256 of the raw body.
fn dedup_key(
    headers: &Headers,
    body: &[u8],
    root: &Object,
    vendor_event: &str,
    now: OffsetDateTime,
) -> String {
    if let Ok(Some(d)) = headers.get_unique(DELIVERY_HEADER) {
        if !d.is_empty() && d.len() <= MAX_DELIVERY_LEN && d.iter().all(|b| b.is_ascii_graphic()) {
            // Checked ASCII above, so this is lossless.
            return util::join_key(&["delivery", &String::from_utf8_lossy(d)]);
        }
    }
    if vendor_event.starts_with("conversation_typing_") {
        return util::join_key(&[
            "typing",
            &util::body_hash(body),
            &now.unix_timestamp_nanos().to_string(),
        ]);
    }
    let Some(id) = util::get_id(root, "id") else {
        return util::body_hash(body);
    };
    let account = util::get_obj(root, "account")
        .and_then(|a| util::get_id(a, "id"))
        .or_else(|| util::get_id(root, "account_id"))
        .unwrap_or_default();

    if vendor_event.ends_with("_created") {
        return util::join_key(&[vendor_event, &account, &id]);
    }
    let is_update = vendor_event.ends_with("_updated")
        || vendor_event.ends_with("_status_changed")
        || vendor_event == "conversation_opened"
        || vendor_event == "conversation_resolved";
    if !is_update {
        return util::body_hash(body);
    }
    let version = match root.get("updated_at") {
        Some(Value::Number(n)) => format!("updated_at:{n}"),
        Some(Value::String(s)) if !s.is_empty() => format!("updated_at:{s}"),
        _ => match root.get("changed_attributes").filter(|v| !v.is_null()) {
            Some(changed) => format!("changed:{}", util::value_hash(changed)),
            None if root.contains_key("content") || root.contains_key("content_attributes") => {
                let content = json!([root.get("content"), root.get("content_attributes")]);
                format!("content:{}", util::value_hash(&content))
            }
            None => return util::body_hash(body),
        },
    };
    util::join_key(&[vendor_event, &account, &id, &version])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "test-chatwoot-webhook-secret";

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(secs).unwrap()
    }

    fn creds(tolerance: Option<u64>) -> Credentials {
        Credentials::new(HmacSecret {
            secret: Secret::new(SECRET),
            tolerance: tolerance.map(Duration::from_secs),
        })
    }

    fn headers<'a>(pairs: &'a [(&'a str, String)]) -> Headers<'a> {
        Headers::from_pairs(pairs)
    }

    #[test]
    fn signature_round_trip_and_window() {
        let body = br#"{"event":"message_created"}"#;
        let sig = format!("sha256={}", signature(SECRET.as_bytes(), "1000", body));
        let pairs = [
            (TIMESTAMP_HEADER, "1000".to_owned()),
            (SIGNATURE_HEADER, sig),
        ];
        let h = headers(&pairs);
        assert_eq!(verify(&creds(Some(300)), &h, body, at(1000)), Ok(()));
        assert_eq!(verify(&creds(Some(300)), &h, body, at(1300)), Ok(()));
        assert_eq!(verify(&creds(Some(300)), &h, body, at(700)), Ok(()));
        assert_eq!(
            verify(&creds(Some(300)), &h, body, at(1301)),
            Err(AuthError::Stale)
        );
        assert_eq!(
            verify(&creds(Some(300)), &h, body, at(699)),
            Err(AuthError::Stale)
        );
        assert_eq!(verify(&creds(None), &h, body, at(9_999_999)), Ok(()));
        // One byte of body changed.
        assert_eq!(
            verify(
                &creds(None),
                &h,
                br#"{"event":"message_createD"}"#,
                at(1000)
            ),
            Err(AuthError::Mismatch)
        );
    }

    #[test]
    fn delivery_id_is_uuid_shaped_and_deterministic() {
        let a = delivery_id("1", b"x");
        assert_eq!(a.len(), 36);
        assert_eq!(a, delivery_id("1", b"x"));
        assert_ne!(a, delivery_id("2", b"x"));
        assert_eq!(a.as_bytes()[14], b'8');
        assert!(matches!(a.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
        assert_eq!(a.matches('-').count(), 4);
    }

    #[test]
    fn signature_decoding_is_strict() {
        let hex64 = "ab".repeat(32);
        assert!(decode_signature(format!("sha256={hex64}").as_bytes()).is_some());
        assert!(decode_signature(format!("sha256={}", hex64.to_uppercase()).as_bytes()).is_none());
        assert!(decode_signature(format!("SHA256={hex64}").as_bytes()).is_none());
        assert!(decode_signature(hex64.as_bytes()).is_none());
        assert!(decode_signature(format!("sha256={}", &hex64[..62]).as_bytes()).is_none());
        assert!(decode_signature(format!("sha256={hex64}00").as_bytes()).is_none());
        assert!(decode_signature(format!("sha256= {}", &hex64[..63]).as_bytes()).is_none());
    }

    #[test]
    fn deleted_flag_maps_to_message_deleted() {
        let body = br#"{"event":"message_updated","id":5,"content":"This message was deleted","content_attributes":{"deleted":true},"account":{"id":3}}"#;
        let n = normalize(&Headers::new(), body, at(1)).unwrap();
        assert_eq!(n.event, "message.deleted");
        assert_eq!(n.vendor_event, "message_updated");
        let body = br#"{"event":"message_updated","id":5,"content_attributes":{"deleted":"true"}}"#;
        let n = normalize(&Headers::new(), body, at(1)).unwrap();
        assert_eq!(n.event, "message.updated");
    }

    #[test]
    fn push_format_direction() {
        assert_eq!(direction(Some(&json!(0))), Direction::Incoming);
        assert_eq!(direction(Some(&json!(1))), Direction::Outgoing);
        assert_eq!(direction(Some(&json!(2))), Direction::Unknown);
        assert_eq!(direction(Some(&json!(3))), Direction::Outgoing);
        assert_eq!(direction(Some(&json!("activity"))), Direction::Unknown);
        assert_eq!(direction(Some(&json!("template"))), Direction::Outgoing);
        assert_eq!(direction(None), Direction::Unknown);
    }

    #[test]
    fn typing_events_are_never_deduplicated() {
        let body = br#"{"event":"conversation_typing_on","conversation":{"id":1}}"#;
        let a = normalize(&Headers::new(), body, at(1)).unwrap();
        let b = normalize(&Headers::new(), body, at(2)).unwrap();
        assert_ne!(a.dedup_key, b.dedup_key);
        assert_eq!(a.subject.as_deref(), Some("1"));
    }

    #[test]
    fn update_keys_follow_the_version() {
        let v1 = br#"{"event":"conversation_updated","id":9,"updated_at":1.5}"#;
        let v2 = br#"{"event":"conversation_updated","id":9,"updated_at":2.5}"#;
        let k1 = normalize(&Headers::new(), v1, at(1)).unwrap().dedup_key;
        let k2 = normalize(&Headers::new(), v2, at(1)).unwrap().dedup_key;
        assert_ne!(k1, k2);
        assert!(
            k1.starts_with("conversation_updated\u{1f}\u{1f}9\u{1f}updated_at:"),
            "{k1:?}"
        );
        let c1 = br#"{"event":"contact_updated","id":9,"changed_attributes":[{"name":{"current_value":"a"}}]}"#;
        let c2 = br#"{"event":"contact_updated","id":9,"changed_attributes":[{"name":{"current_value":"b"}}]}"#;
        let k1 = normalize(&Headers::new(), c1, at(1)).unwrap().dedup_key;
        let k2 = normalize(&Headers::new(), c2, at(1)).unwrap().dedup_key;
        assert_ne!(k1, k2);
        // Same content, different whitespace: the same update.
        let m1 =
            br#"{"event":"message_updated","id":9,"content":"x","content_attributes":{"a":1}}"#;
        let m2 = br#"{ "event" : "message_updated", "id" : 9, "content" : "x", "content_attributes" : {"a":1} }"#;
        let m3 =
            br#"{"event":"message_updated","id":9,"content":"x","content_attributes":{"a":2}}"#;
        let k1 = normalize(&Headers::new(), m1, at(1)).unwrap().dedup_key;
        let k2 = normalize(&Headers::new(), m2, at(1)).unwrap().dedup_key;
        let k3 = normalize(&Headers::new(), m3, at(1)).unwrap().dedup_key;
        assert_eq!(k1, k2);
        assert_ne!(k1, k3);
    }

    #[test]
    fn insane_delivery_header_is_ignored() {
        let body = br#"{"event":"contact_created","id":9,"account":{"id":3}}"#;
        let mut h = Headers::new();
        h.push(DELIVERY_HEADER, b"has space");
        let n = normalize(&h, body, at(1)).unwrap();
        assert_eq!(n.dedup_key, "contact_created\u{1f}3\u{1f}9");
        let mut h = Headers::new();
        h.push(DELIVERY_HEADER, b"a");
        h.push(DELIVERY_HEADER, b"b");
        let n = normalize(&h, body, at(1)).unwrap();
        assert_eq!(n.dedup_key, "contact_created\u{1f}3\u{1f}9");
    }
}
