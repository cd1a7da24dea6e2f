//! Kommunicate: one JSON object per message, `Authentication: Basic base64(token)`.
//!
//! There is no event field, no signature, no timestamp and no delivery id (see
//! docs/vendors.md). Every message POST is `message.created`; the message `key` is the dedup key.
//! A *Custom Bot* payload (it carries `eventName`) is a different contract the relay does
//! not implement: it is routed as `unmapped.<eventname>`.

use crate::keys::{Key, KeyError, KeyKind, KeyValues};
use crate::util::{self, Object};
use crate::{AuthError, Contract, Credentials, Headers, Normalized, PayloadError, Vendor};
use hookrelay_common::routing::Prefix;
use hookrelay_common::Secret;
use hookrelay_common::event::{rfc3339, Attachment, ConversationRef, Message, Party, Recipient};
use hookrelay_common::routing::unmapped_event;
use time::OffsetDateTime;

/// The vendor, for the registry and for code that names it.
pub struct Kommunicate;

/// This vendor's handle.
pub const VENDOR: Vendor = Vendor(&Kommunicate);

/// A Kommunicate source's credentials: the token of its webhook.
#[derive(Clone)]
pub struct Token(pub Secret);

/// `token` (or `token_file`): what Kommunicate puts into `Authentication`.
const KEYS: &[Key] = &[Key {
    name: "token",
    kind: KeyKind::Secret,
    demo: Some("abcdef"),
}];

impl Contract for Kommunicate {
    fn name(&self) -> &'static str {
        "kommunicate"
    }
    fn keys(&self) -> &'static [Key] {
        KEYS
    }
    fn credentials(&self, keys: &KeyValues) -> Result<Credentials, KeyError> {
        Ok(Credentials::new(Token(keys.secret("token")?)))
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
        &[("<eventName>", "unmapped.<eventname>")]
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
        "kommunicate"
    }
    /// Exactly the `Authentication` value `sign` makes, once.
    #[cfg(feature = "test-support")]
    fn genuine(
        &self,
        creds: &Credentials,
        headers: &Headers<'_>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> bool {
        use crate::testing::{signed_value, unique};
        let expected = signed_value(&sign(creds, body, now), AUTH_HEADER);
        expected.is_some() && unique(headers, AUTH_HEADER).map(<[u8]>::to_vec) == expected
    }
    #[cfg(feature = "test-support")]
    fn samples(&self) -> &'static crate::testing::Samples {
        static SAMPLES: crate::testing::Samples = crate::testing::Samples {
            events: &["", "WELCOME", "KOMMUNICATE_MEDIA_EVENT"],
            required: &["key"],
            credential_header: AUTH_HEADER,
            complete: |obj, event, id, _data| {
                obj.insert("key".into(), format!("k-{id}").into());
                if !event.is_empty() {
                    obj.insert("eventName".into(), event.into());
                }
            },
        };
        &SAMPLES
    }
}

/// The credential header. Kommunicate calls it `Authentication`, not `Authorization`.
pub const AUTH_HEADER: &str = "Authentication";

/// The vendor event name of an ordinary message webhook (the payload has none).
pub const VENDOR_EVENT: &str = "message";

/// The event mapping, `(vendor event, normalized event)`: every ordinary webhook is a new
/// message. A Custom Bot payload (`eventName`) is `unmapped.<eventname>`.
pub const EVENTS: &[(&str, &str)] = &[(VENDOR_EVENT, "message.created")];

/// `Authentication` must be exactly `Basic <base64(token)>`, compared as a whole in
/// constant time. `Authorization` alone counts as missing; bare base64 does not match.
pub fn verify(
    creds: &Credentials,
    headers: &Headers,
    _body: &[u8],
    _now: OffsetDateTime,
) -> Result<(), AuthError> {
    let Some(Token(token)) = creds.get::<Token>() else {
        return Err(AuthError::WrongKind);
    };
    if token.is_empty() {
        return Err(AuthError::WrongKind);
    }
    let got = headers
        .get_unique(AUTH_HEADER)
        .map_err(|_| AuthError::Repeated)?
        .ok_or(AuthError::Missing)?;
    let expected = util::basic_header(token.expose().as_bytes());
    if util::ct_eq(got, expected.as_bytes()) {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

/// The headers Kommunicate sends: `Content-Type` and, with a token, `Authentication`.
pub fn sign(creds: &Credentials, _body: &[u8], _now: OffsetDateTime) -> Vec<(String, String)> {
    let mut out = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    if let Some(Token(token)) = creds.get::<Token>() {
        out.push((
            AUTH_HEADER.to_owned(),
            util::basic_header(token.expose().as_bytes()),
        ));
    }
    out
}

/// `key` (a non-empty string) is required; everything else is optional.
pub fn normalize(
    _headers: &Headers,
    body: &[u8],
    _now: OffsetDateTime,
) -> Result<Normalized, PayloadError> {
    let root = util::parse_object(body)?;
    let key = util::require_str(&root, "key")?;
    if key.is_empty() {
        return Err(PayloadError::WrongType("key", "a non-empty string"));
    }

    let (event, vendor_event) = match util::get_str(&root, "eventName").filter(|s| !s.is_empty()) {
        Some(name) => (unmapped_event(name), name.to_owned()),
        None => (EVENTS[0].1.to_owned(), VENDOR_EVENT.to_owned()),
    };

    let group_id = util::get_id(&root, "groupId");
    let to = util::get_id(&root, "to");
    let from = util::get_id(&root, "from");
    let subject = group_id
        .clone()
        .or_else(|| to.clone())
        .or_else(|| from.clone());
    let time = root.get("timeStamp").and_then(util::from_epoch_millis);

    let recipient = match (&group_id, &to) {
        (Some(g), _) => Some(Recipient {
            id: Some(g.clone()),
            kind: Some("group".to_owned()),
        }),
        (None, Some(t)) => Some(Recipient {
            id: Some(t.clone()),
            kind: Some("user".to_owned()),
        }),
        (None, None) => None,
    };
    let conversation = group_id.as_ref().map(|g| ConversationRef {
        id: Some(g.clone()),
        name: util::get_string(&root, "groupName"),
    });

    let message = Message {
        id: Some(key.to_owned()),
        text: util::get_string(&root, "message"),
        direction: Default::default(),
        created_at: time.map(rfc3339),
        sender: from.map(|id| Party {
            id: Some(id),
            ..Party::default()
        }),
        recipient,
        conversation,
        attachments: util::get_obj(&root, "file")
            .map(attachment)
            .into_iter()
            .collect(),
        metadata: util::get_obj(&root, "metadata").cloned(),
    };

    Ok(Normalized {
        event,
        vendor_event,
        dedup_key: key.to_owned(),
        subject,
        time,
        message: Some(message),
        conversation: None,
        contact: None,
        reply: None,
    })
}

fn attachment(file: &Object) -> Attachment {
    Attachment {
        name: util::get_string(file, "name"),
        url: util::get_nonempty_string(file, "url"),
        content_type: util::get_string(file, "contentType"),
        size: util::get_u64(file, "size"),
        thumbnail_url: util::get_nonempty_string(file, "thumbnailUrl"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookrelay_common::event::Direction;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_791_969_697).unwrap()
    }

    fn creds() -> Credentials {
        Credentials::new(Token(Secret::new("abcdef")))
    }

    fn check(pairs: &[(&str, &str)]) -> Result<(), AuthError> {
        let h = Headers::from_pairs(pairs);
        verify(&creds(), &h, b"{}", now())
    }

    #[test]
    fn accepts_documented_header() {
        assert_eq!(check(&[("Authentication", "Basic YWJjZGVm")]), Ok(()));
        assert_eq!(check(&[("authentication", "Basic YWJjZGVm")]), Ok(()));
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(check(&[]), Err(AuthError::Missing));
        assert_eq!(
            check(&[("Authorization", "Basic YWJjZGVm")]),
            Err(AuthError::Missing)
        );
        assert_eq!(
            check(&[("Authentication", "YWJjZGVm")]),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            check(&[("Authentication", "Basic YWJjZGVn")]),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            check(&[("Authentication", "basic YWJjZGVm")]),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            check(&[("Authentication", "Basic YWJjZGVm ")]),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            check(&[("Authentication", "Basic !!!not-base64")]),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            check(&[("Authentication", "Basic abcdef")]),
            Err(AuthError::Mismatch)
        );
        assert_eq!(
            check(&[
                ("Authentication", "Basic YWJjZGVm"),
                ("Authentication", "Basic YWJjZGVm")
            ]),
            Err(AuthError::Repeated)
        );
    }

    #[test]
    fn wrong_or_empty_credentials_fail_closed() {
        let mut h = Headers::new();
        h.push("Authentication", b"Basic ");
        let empty = Credentials::new(Token(Secret::new("")));
        assert_eq!(verify(&empty, &h, b"{}", now()), Err(AuthError::WrongKind));
        let basic = Credentials::new(crate::cometchat::Basic {
            username: Secret::new("a"),
            password: Secret::new("b"),
        });
        assert_eq!(verify(&basic, &h, b"{}", now()), Err(AuthError::WrongKind));
        assert_eq!(
            verify(&Credentials::NONE, &h, b"{}", now()),
            Err(AuthError::WrongKind)
        );
    }

    #[test]
    fn sign_matches_verify() {
        let headers = sign(&creds(), b"{}", now());
        assert!(headers.contains(&("Authentication".into(), "Basic YWJjZGVm".into())));
        let h = Headers::from_pairs(&headers);
        assert_eq!(verify(&creds(), &h, b"{}", now()), Ok(()));
        assert_eq!(
            sign(&Credentials::NONE, b"{}", now()),
            vec![("Content-Type".to_owned(), "application/json".to_owned())]
        );
    }

    fn norm(body: &str) -> Result<Normalized, PayloadError> {
        normalize(&Headers::new(), body.as_bytes(), now())
    }

    #[test]
    fn key_is_required_string() {
        assert_eq!(norm("{}"), Err(PayloadError::Missing("key")));
        assert_eq!(norm(r#"{"key":null}"#), Err(PayloadError::Missing("key")));
        assert_eq!(
            norm(r#"{"key":5}"#),
            Err(PayloadError::WrongType("key", "a string"))
        );
        assert_eq!(
            norm(r#"{"key":""}"#),
            Err(PayloadError::WrongType("key", "a non-empty string"))
        );
        let n = norm(r#"{"key":"k1"}"#).unwrap();
        assert_eq!(n.event, "message.created");
        assert_eq!(n.vendor_event, "message");
        assert_eq!(n.dedup_key, "k1");
        assert_eq!(n.subject, None);
        assert_eq!(n.time, None);
        let m = n.message.unwrap();
        assert_eq!(m.text, None);
        assert_eq!(m.sender, None);
        assert!(m.attachments.is_empty());
    }

    #[test]
    fn custom_bot_payload_is_unmapped() {
        let n =
            norm(r#"{"key":"k2","eventName":"KOMMUNICATE_MEDIA_EVENT","groupId":"77"}"#).unwrap();
        assert_eq!(n.event, "unmapped.kommunicate_media_event");
        assert_eq!(n.vendor_event, "KOMMUNICATE_MEDIA_EVENT");
        assert_eq!(n.subject.as_deref(), Some("77"));
    }

    #[test]
    fn string_group_id_and_no_direction() {
        let n =
            norm(r#"{"key":"k","groupId":"98","from":"a","to":"b","timeStamp":"1791969697412"}"#)
                .unwrap();
        assert_eq!(n.subject.as_deref(), Some("98"));
        let m = n.message.unwrap();
        assert_eq!(m.direction, Direction::Unknown);
        assert_eq!(m.created_at.as_deref(), Some("2026-10-14T09:21:37.412Z"));
        assert_eq!(m.recipient.unwrap().kind.as_deref(), Some("group"));
    }
}
