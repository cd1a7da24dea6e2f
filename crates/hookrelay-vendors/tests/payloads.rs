//! Payload handling: hostile bodies, required fields, wrong types, unmapped events.

mod common;

use common::*;
use hookrelay_common::routing::routing_key;
use hookrelay_vendors::{chatwoot, cometchat, kommunicate, PayloadError, Vendor};
use serde_json::{json, Value};

/// A minimal valid body per vendor (from its samples), with `extra` spliced in as one
/// more member.
fn minimal(vendor: Vendor, extra: &str) -> String {
    let samples = vendor.contract().samples();
    let mut obj = serde_json::Map::new();
    (samples.complete)(&mut obj, samples.events[0], "k-1", serde_json::Map::new());
    let text = serde_json::to_string(&obj).unwrap();
    let base = text.strip_suffix('}').unwrap();
    if extra.is_empty() {
        format!("{base}}}")
    } else {
        format!("{base},{extra}}}")
    }
}

fn is_not_json(r: &Result<hookrelay_vendors::Normalized, PayloadError>) -> bool {
    matches!(r, Err(PayloadError::NotJson(_)))
}

#[test]
fn hostile_bodies_are_payload_errors() {
    for &vendor in Vendor::ALL {
        let full = first_fixture(vendor);
        let truncated = &full[..full.len() / 2];
        assert!(is_not_json(&deliver(vendor, b"")), "{vendor:?} empty");
        assert!(is_not_json(&deliver(vendor, b"   ")), "{vendor:?} blank");
        assert!(
            is_not_json(&deliver(vendor, truncated)),
            "{vendor:?} truncated"
        );
        assert!(
            is_not_json(&deliver(vendor, b"{\"a\":1}}")),
            "{vendor:?} trailing"
        );
        assert!(
            is_not_json(&deliver(vendor, b"\xff\xfe")),
            "{vendor:?} binary"
        );
        assert!(
            is_not_json(&deliver(vendor, b"{'a':1}")),
            "{vendor:?} quotes"
        );
        for not_object in ["[]", "[{\"key\":\"k\"}]", "null", "\"key\"", "42", "true"] {
            assert_eq!(
                deliver(vendor, not_object.as_bytes()),
                Err(PayloadError::NotObject),
                "{vendor:?} {not_object}"
            );
        }
        assert!(deliver(vendor, minimal(vendor, "").as_bytes()).is_ok());
    }
}

#[test]
fn not_json_detail_is_serdes_message() {
    match deliver(kommunicate::VENDOR, b"{\"key\":") {
        Err(PayloadError::NotJson(detail)) => {
            assert!(detail.contains("EOF"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn moderate_nesting_is_accepted() {
    for &vendor in Vendor::ALL {
        let deep = format!("\"deep\":{}1{}", "[".repeat(40), "]".repeat(40));
        let n = deliver(vendor, minimal(vendor, &deep).as_bytes());
        assert!(n.is_ok(), "{vendor:?}: {n:?}");
        let deep = format!("\"deep\":{}1{}", "{\"a\":".repeat(40), "}".repeat(40));
        assert!(deliver(vendor, minimal(vendor, &deep).as_bytes()).is_ok());
    }
}

#[test]
fn extreme_nesting_is_rejected_without_overflow() {
    for &vendor in Vendor::ALL {
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            let deep = format!("\"deep\":{}1{}", open.repeat(10_000), close.repeat(10_000));
            match deliver(vendor, minimal(vendor, &deep).as_bytes()) {
                Err(PayloadError::NotJson(detail)) => {
                    assert!(detail.contains("recursion limit"), "{detail}")
                }
                other => panic!("{vendor:?}: {other:?}"),
            }
            // Also as the whole body, unbalanced.
            assert!(is_not_json(&deliver(
                vendor,
                open.repeat(10_000).as_bytes()
            )));
        }
    }
}

#[test]
fn required_fields() {
    let k = |b: &str| deliver(kommunicate::VENDOR, b.as_bytes());
    assert_eq!(k("{}"), Err(PayloadError::Missing("key")));
    assert_eq!(
        k(r#"{"key":123}"#),
        Err(PayloadError::WrongType("key", "a string"))
    );
    assert_eq!(
        k(r#"{"key":["a"]}"#),
        Err(PayloadError::WrongType("key", "a string"))
    );
    assert_eq!(
        k(r#"{"key":{"a":1}}"#),
        Err(PayloadError::WrongType("key", "a string"))
    );
    assert_eq!(k(r#"{"message":"hi"}"#), Err(PayloadError::Missing("key")));

    let c = |b: &str| deliver(chatwoot::VENDOR, b.as_bytes());
    assert_eq!(c(r#"{"id":1}"#), Err(PayloadError::Missing("event")));
    assert_eq!(
        c(r#"{"event":7}"#),
        Err(PayloadError::WrongType("event", "a string"))
    );

    let cc = |b: &str| deliver(cometchat::VENDOR, b.as_bytes());
    assert_eq!(cc(r#"{"data":{}}"#), Err(PayloadError::Missing("trigger")));
    assert_eq!(
        cc(r#"{"trigger":["x"],"data":{}}"#),
        Err(PayloadError::WrongType("trigger", "a string"))
    );
    assert_eq!(
        cc(r#"{"trigger":"message_sent"}"#),
        Err(PayloadError::Missing("data"))
    );
    assert_eq!(
        cc(r#"{"trigger":"message_sent","data":"x"}"#),
        Err(PayloadError::WrongType("data", "an object"))
    );
    // The error text is what the relay puts in `detail`.
    assert_eq!(
        PayloadError::WrongType("key", "a string").to_string(),
        "field `key` must be a string"
    );
}

/// Optional fields of the wrong type are ignored, never guessed and never a panic.
#[test]
fn wrong_typed_optional_fields_stay_none() {
    let n = deliver(
        kommunicate::VENDOR,
        br#"{"key":"k","groupId":1.5,"from":{"x":1},"timeStamp":"soon","file":[],"metadata":"x","message":5}"#,
    )
    .unwrap();
    assert_eq!(n.subject, None);
    assert_eq!(n.time, None);
    let m = n.message.unwrap();
    assert_eq!(m.sender, None);
    assert_eq!(m.text, None);
    assert!(m.attachments.is_empty());
    assert_eq!(m.metadata, None);

    let n = deliver(
        chatwoot::VENDOR,
        br#"{"event":"message_created","conversation":"x","sender":5,"attachments":{},"created_at":true,"content":["a"],"message_type":"weird"}"#,
    )
    .unwrap();
    assert_eq!(n.subject, None);
    assert_eq!(n.time, None);
    let m = n.message.unwrap();
    assert_eq!(m.sender, None);
    assert_eq!(m.text, None);
    assert!(m.attachments.is_empty());
    assert_eq!(m.direction, hookrelay_common::event::Direction::Unknown);
    let raw = br#"{"event":"message_created","id":[1],"account":"x"}"#;
    let n = hookrelay_vendors::chatwoot::normalize(&hookrelay_vendors::Headers::new(), raw, now())
        .unwrap();
    assert_eq!(
        n.dedup_key,
        hookrelay_vendors::util::body_hash(raw),
        "no id: body hash"
    );

    let n = deliver(
        chatwoot::VENDOR,
        br#"{"event":"conversation_updated","id":{"x":1},"meta":"m","changed_attributes":"c"}"#,
    )
    .unwrap();
    assert_eq!(n.subject, None);
    assert_eq!(n.conversation.unwrap().id, None);

    let n = deliver(
        cometchat::VENDOR,
        br#"{"trigger":"message_sent","data":{"message":{"id":18233,"sender":null,"data":"x","sentAt":-1}}}"#,
    )
    .unwrap();
    let m = n.message.unwrap();
    assert_eq!(m.id.as_deref(), Some("18233"), "integer ids become strings");
    assert_eq!(m.sender, None);
    assert_eq!(n.time, None);
    for body in [
        r#"{"trigger":"message_delivery_receipt","data":{"body":"x"}}"#,
        r#"{"trigger":"message_reaction_added","data":{"reaction":[]}}"#,
        r#"{"trigger":"group_created","data":{"group":5}}"#,
        r#"{"trigger":"message_edited","data":{"message":{"data":{"entities":{"on":5}}}}}"#,
        r#"{"trigger":"before_message","data":{}}"#,
    ] {
        let n = deliver(cometchat::VENDOR, body.as_bytes()).unwrap();
        assert!(!n.dedup_key.is_empty(), "{body}");
    }
}

#[test]
fn odd_but_valid_json_is_kept() {
    // NUL, U+2028, astral characters, `__proto__`, string-typed numbers.
    let body = "{\"key\":\"k\\u0000\u{2028}𝄞\",\"__proto__\":null,\"groupId\":\"98213457\",\"timeStamp\":\"1791969697412\",\"message\":\"𝄞 \\u2028\"}";
    let n = deliver(kommunicate::VENDOR, body.as_bytes()).unwrap();
    assert_eq!(n.dedup_key, "k\u{0}\u{2028}𝄞");
    assert_eq!(n.subject.as_deref(), Some("98213457"));
    assert_eq!(
        n.time.map(hookrelay_common::event::rfc3339).as_deref(),
        Some("2026-10-14T09:21:37.412Z")
    );
    assert_eq!(n.message.unwrap().text.as_deref(), Some("𝄞 \u{2028}"));
}

#[test]
fn unmapped_events_are_relayed() {
    // Chatwoot automation webhook: a conversation snapshot under a rule-defined name.
    let mut v: Value =
        serde_json::from_slice(&fixture("chatwoot/conversation_created.json")).unwrap();
    v["event"] = json!("automation_event.conversation_created");
    let body = serde_json::to_vec(&v).unwrap();
    let n = deliver(chatwoot::VENDOR, &body).unwrap();
    assert_eq!(
        routing_key("chatwoot", &n.event),
        "chatwoot.unmapped.automation_event_conversation_created"
    );
    assert_eq!(n.vendor_event, "automation_event.conversation_created");
    assert_eq!(n.subject.as_deref(), Some("4821"));
    // Unsigned and without a delivery id, as automation webhooks arrive.
    let n =
        hookrelay_vendors::chatwoot::normalize(&hookrelay_vendors::Headers::new(), &body, now())
            .unwrap();
    assert_eq!(
        n.dedup_key,
        "automation_event.conversation_created\u{1f}\u{1f}4821"
    );

    let n = deliver(chatwoot::VENDOR, br#"{"event":"Some.New-Event"}"#).unwrap();
    assert_eq!(n.event, "unmapped.some_new_event");
    assert!(n.dedup_key.starts_with("sha256:") || n.dedup_key.starts_with("delivery"));

    let body = br#"{"trigger":"call_ended","type":"call","data":{"call":{"sessionId":"v1.us.x"}},"appId":"a","region":"us"}"#;
    let n = deliver(cometchat::VENDOR, body).unwrap();
    assert_eq!(
        routing_key("cometchat", &n.event),
        "cometchat.unmapped.call_ended"
    );
    assert_eq!(n.vendor_event, "call_ended");
    assert_eq!(n.dedup_key, hookrelay_vendors::util::body_hash(body));
    assert_eq!(n.reply, None);

    let n = deliver(
        kommunicate::VENDOR,
        br#"{"key":"k","eventName":"WELCOME","groupId":"98213457","botId":"bot"}"#,
    )
    .unwrap();
    assert_eq!(
        routing_key("kommunicate", &n.event),
        "kommunicate.unmapped.welcome"
    );
    assert_eq!(n.vendor_event, "WELCOME");
}

#[test]
fn dedup_by_body_is_stable_and_sensitive() {
    let a = br#"{"trigger":"meeting_started","data":{"x":1}}"#;
    let b = br#"{"trigger":"meeting_started","data":{"x":2}}"#;
    let ka = deliver(cometchat::VENDOR, a).unwrap().dedup_key;
    assert_eq!(ka, deliver(cometchat::VENDOR, a).unwrap().dedup_key);
    assert_ne!(ka, deliver(cometchat::VENDOR, b).unwrap().dedup_key);
}
