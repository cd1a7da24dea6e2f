//! Every fixture in the shared manifest: signed, verified, normalized, routed; plus
//! concrete normalized fields for several fixtures per vendor.

mod common;

use common::*;
use hookrelay_common::event::{rfc3339, Attachment, Direction, Party, Recipient};
use hookrelay_common::routing::routing_key;
use hookrelay_vendors::{chatwoot, cometchat, kommunicate, Headers, Normalized, Vendor};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};

fn time_of(n: &Normalized) -> Option<String> {
    n.time.map(rfc3339)
}

// ---------------------------------------------------------------------------------------
// The manifest

#[test]
fn every_manifest_fixture_routes_as_expected() {
    let manifest = manifest();
    let fixtures = manifest["fixtures"].as_array().expect("fixtures[]");
    let mut per_vendor: std::collections::BTreeMap<&str, usize> =
        Vendor::ALL.iter().map(|v| (v.name(), 0)).collect();
    for f in fixtures {
        let file = f["file"].as_str().unwrap();
        let vendor = Vendor::from_name(f["vendor"].as_str().unwrap()).expect(file);
        *per_vendor.get_mut(vendor.name()).unwrap() += 1;
        let n = deliver(vendor, &fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));

        assert_eq!(
            routing_key(vendor.routing_prefix(vendor.name()), &n.event),
            f["expected_routing_key"].as_str().unwrap(),
            "{file}"
        );
        assert_eq!(n.event, f["expected_type"].as_str().unwrap(), "{file}");
        if vendor == kommunicate::VENDOR {
            assert_eq!(n.vendor_event, "message", "{file}");
        } else {
            assert_eq!(
                n.vendor_event,
                f["vendor_event"].as_str().unwrap(),
                "{file}"
            );
        }
        assert!(!n.dedup_key.is_empty(), "{file}");
        if let Some(s) = &n.subject {
            assert!(!s.is_empty(), "{file}");
        }
        // Only `before_message` answers with a body of its own.
        let before = file.ends_with("legacy_before_message.json");
        assert_eq!(n.reply.is_some(), before, "{file}");
        // Every message event carries a message.
        if n.event.starts_with("message.") {
            assert!(n.message.is_some(), "{file}");
        }
        // Every fixture describes the 2026-10-14 world.
        if let Some(t) = n.time {
            assert_eq!(
                (t.year(), t.month() as u8, t.day()),
                (2026, 10, 14),
                "{file}"
            );
        }
    }
    // Every vendor of the registry has fixtures, and these are the counts on disk.
    for (vendor, n) in &per_vendor {
        assert!(*n > 0, "vendor {vendor} has no fixture in the manifest");
    }
    assert_eq!(per_vendor["kommunicate"], 5);
    assert_eq!(per_vendor["chatwoot"], 15);
    assert_eq!(per_vendor["cometchat"], 13);
    assert_eq!(per_vendor["standard-webhooks"], 3);
    assert_eq!(fixtures.len(), per_vendor.values().sum::<usize>());
}

#[test]
fn manifest_lists_every_fixture_file() {
    let manifest = manifest();
    let listed: BTreeSet<String> = manifest["fixtures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file"].as_str().unwrap().to_owned())
        .collect();
    let mut on_disk = BTreeSet::new();
    for &vendor in Vendor::ALL {
        let sub = vendor.contract().fixtures_dir();
        let dir = std::path::Path::new(FIXTURES).join(sub);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".json") {
                on_disk.insert(format!("{sub}/{name}"));
            }
        }
    }
    assert_eq!(listed, on_disk);
}

/// The manifest's literal headers verify as they are (entries with placeholders such as
/// `<uuid, generate per send>`, Chatwoot's and Standard Webhooks', are covered via
/// `sign` and the signature vectors).
#[test]
fn manifest_literal_headers_verify() {
    let manifest = manifest();
    let mut checked = 0;
    for f in manifest["fixtures"].as_array().unwrap() {
        let vendor = Vendor::from_name(f["vendor"].as_str().unwrap()).unwrap();
        let placeholders = f["headers"]
            .as_object()
            .unwrap()
            .values()
            .any(|v| v.as_str().is_some_and(|v| v.contains('<')));
        if placeholders {
            continue;
        }
        let body = fixture(f["file"].as_str().unwrap());
        let pairs: Vec<(String, String)> = f["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let headers = headers_from(&pairs);
        let verified = vendor
            .verify(&creds(vendor), &headers, &body, now())
            .expect("manifest headers verify");
        assert!(vendor.normalize(&verified, now()).is_ok());
        // And `sign` produces the same credential header.
        let signed = vendor.sign(&creds(vendor), &body, now());
        for (k, v) in &pairs {
            assert!(signed.contains(&(k.clone(), v.clone())), "{k}");
        }
        checked += 1;
    }
    assert_eq!(checked, 18);
}

#[test]
fn chatwoot_signature_test_vector() {
    let manifest = manifest();
    let v = &manifest["chatwoot_signature_test_vector"];
    let body = fixture(v["file"].as_str().unwrap());
    assert_eq!(
        hookrelay_vendors::util::sha256_hex(&body),
        v["body_sha256"].as_str().unwrap()
    );
    let secret = v["secret"].as_str().unwrap();
    let ts = v["X-Chatwoot-Timestamp"].as_str().unwrap();
    let sig = v["X-Chatwoot-Signature"].as_str().unwrap();
    assert_eq!(
        format!(
            "sha256={}",
            hookrelay_vendors::chatwoot::signature(secret.as_bytes(), ts, &body)
        ),
        sig
    );
    let no_window = hookrelay_vendors::Credentials::new(chatwoot::HmacSecret {
        secret: hookrelay_common::Secret::new(secret),
        tolerance: None,
    });
    let pairs = [("X-Chatwoot-Timestamp", ts), ("X-Chatwoot-Signature", sig)];
    // Long after the fact, with the window off.
    assert_eq!(
        verify_with(
            chatwoot::VENDOR,
            &no_window,
            &pairs,
            &body,
            at(2_000_000_000)
        ),
        Ok(())
    );
    // With the window on, one second away from the vector's timestamp.
    assert_eq!(
        verify_with(
            chatwoot::VENDOR,
            &creds(chatwoot::VENDOR),
            &pairs,
            &body,
            now()
        ),
        Ok(())
    );
    // Any byte of the body changed.
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    assert_eq!(
        verify_with(chatwoot::VENDOR, &no_window, &pairs, &tampered, now()),
        Err(hookrelay_vendors::AuthError::Mismatch)
    );
}

// ---------------------------------------------------------------------------------------
// Kommunicate

#[test]
fn kommunicate_one_to_one_legacy() {
    let n = norm(kommunicate::VENDOR, "kommunicate/message_one_to_one.json");
    assert_eq!(n.subject.as_deref(), Some("support@acme.example"));
    assert_eq!(time_of(&n).as_deref(), Some("2026-10-14T09:21:37.412Z"));
    assert_eq!(
        n.dedup_key,
        "5-4b8e2f7a-93c1-4d2e-b6a0-1f5c7d9e3a21-1791969697412"
    );
    let m = n.message.clone().unwrap();
    assert_eq!(m.id.as_deref(), Some(n.dedup_key.as_str()));
    assert_eq!(
        m.text.as_deref(),
        Some("Hi, I can't log into my account since this morning.")
    );
    assert_eq!(m.direction, Direction::Unknown);
    assert_eq!(m.created_at.as_deref(), Some("2026-10-14T09:21:37.412Z"));
    assert_eq!(
        m.sender,
        Some(Party {
            id: Some("u-20417".into()),
            ..Party::default()
        })
    );
    assert_eq!(
        m.recipient,
        Some(Recipient {
            id: Some("support@acme.example".into()),
            kind: Some("user".into())
        })
    );
    assert_eq!(m.conversation, None);
    assert!(m.attachments.is_empty());
    assert_eq!(m.metadata, None);
    assert_eq!(n.conversation, None);
    assert_eq!(n.contact, None);
}

#[test]
fn kommunicate_group_ids_are_strings() {
    let n = norm(kommunicate::VENDOR, "kommunicate/message_group.json");
    assert_eq!(n.subject.as_deref(), Some("98213457"));
    assert_eq!(time_of(&n).as_deref(), Some("2026-10-14T09:22:37.123Z"));
    let m = n.message.clone().unwrap();
    let conv = m.conversation.unwrap();
    assert_eq!(conv.id.as_deref(), Some("98213457"));
    assert_eq!(conv.name.as_deref(), Some("Conversation"));
    assert_eq!(m.recipient.unwrap().kind.as_deref(), Some("group"));
    assert_eq!(m.sender.unwrap().id.as_deref(), Some("visitor-7d41c0"));
}

#[test]
fn kommunicate_attachment_and_metadata() {
    let n = norm(
        kommunicate::VENDOR,
        "kommunicate/message_attachment_metadata.json",
    );
    let m = n.message.clone().unwrap();
    assert_eq!(m.created_at.as_deref(), Some("2026-10-14T09:23:38.87Z"));
    assert_eq!(
        m.attachments,
        vec![Attachment {
            name: Some("IMG_2041.jpg".into()),
            url: Some("https://applozic.appspot.com/rest/ws/aws/file/AMIfv94Qm3xT8kLr0bZcW5yN2pVdE7sHjG1aKf6uOiRtYe9wXqS4".into()),
            content_type: Some("image/jpeg".into()),
            size: Some(183_402),
            thumbnail_url: Some("https://applozic.appspot.com/rest/ws/aws/file/AMIfv96Tn1cR5dHs8gLm3vXzB7kWqP0eJyF2aUoNiCtGr4hVwDl9".into()),
        }]
    );
    let md = m.metadata.unwrap();
    assert_eq!(md["orderId"], json!("A-10293"));
    // JSON-in-string values stay strings.
    assert_eq!(
        md["KM_CHAT_CONTEXT"],
        json!("{\"plan\":\"pro\",\"page\":\"/orders/A-10293\"}")
    );
}

#[test]
fn kommunicate_contextual_and_bot() {
    let n = norm(kommunicate::VENDOR, "kommunicate/message_contextual.json");
    assert_eq!(n.subject.as_deref(), Some("98213501"));
    assert_eq!(time_of(&n).as_deref(), Some("2026-10-14T09:25:39.015Z"));
    assert_eq!(
        n.message
            .clone()
            .unwrap()
            .conversation
            .unwrap()
            .name
            .as_deref(),
        Some("Order A-10293")
    );

    let n = norm(
        kommunicate::VENDOR,
        "kommunicate/message_bot_rich_reply.json",
    );
    let m = n.message.clone().unwrap();
    assert_eq!(m.sender.unwrap().id.as_deref(), Some("acme-helper-bot"));
    assert_eq!(m.metadata.unwrap()["contentType"], json!("300"));
    assert_eq!(m.created_at.as_deref(), Some("2026-10-14T09:22:38.54Z"));
}

// ---------------------------------------------------------------------------------------
// Chatwoot

#[test]
fn chatwoot_incoming_message() {
    let n = norm(chatwoot::VENDOR, "chatwoot/message_created_incoming.json");
    assert_eq!(n.event, "message.created");
    assert_eq!(n.subject.as_deref(), Some("4821"));
    assert_eq!(time_of(&n).as_deref(), Some("2026-10-14T09:21:37.412Z"));
    let m = n.message.clone().unwrap();
    assert_eq!(m.id.as_deref(), Some("1093377"));
    assert_eq!(
        m.text.as_deref(),
        Some("Hi! My invoice INV-2026-0912 shows the wrong VAT number.")
    );
    assert_eq!(m.direction, Direction::Incoming);
    assert_eq!(m.created_at.as_deref(), Some("2026-10-14T09:21:37.412Z"));
    assert_eq!(
        m.sender,
        Some(Party {
            id: Some("88123".into()),
            name: Some("Maya Lindqvist".into()),
            email: Some("maya@example.com".into()),
            kind: Some("contact".into()),
        })
    );
    assert_eq!(m.conversation.unwrap().id.as_deref(), Some("4821"));
    assert_eq!(m.recipient, None);
    let md = m.metadata.unwrap();
    assert_eq!(md["private"], json!(false));
    assert_eq!(md["inbox_id"], json!("12"));
    let c = n.contact.clone().unwrap();
    assert_eq!(c.id.as_deref(), Some("88123"));
    assert_eq!(c.email.as_deref(), Some("maya@example.com"));
    assert_eq!(c.phone, None);
}

#[test]
fn chatwoot_outgoing_and_private() {
    let n = norm(chatwoot::VENDOR, "chatwoot/message_created_outgoing.json");
    let m = n.message.clone().unwrap();
    assert_eq!(m.direction, Direction::Outgoing);
    assert_eq!(m.created_at.as_deref(), Some("2026-10-14T09:23:12.881Z"));
    let s = m.sender.unwrap();
    assert_eq!(s.id.as_deref(), Some("7"));
    assert_eq!(s.kind.as_deref(), Some("user"));
    assert_eq!(s.email.as_deref(), Some("ravi@acme.example"));
    assert_eq!(n.contact, None, "an agent is not a contact");

    let n = norm(
        chatwoot::VENDOR,
        "chatwoot/message_created_private_note.json",
    );
    let m = n.message.clone().unwrap();
    assert_eq!(m.id.as_deref(), Some("1093386"));
    assert_eq!(m.metadata.unwrap()["private"], json!(true));
    assert_eq!(m.direction, Direction::Outgoing);
}

#[test]
fn chatwoot_attachment_message() {
    let n = norm(chatwoot::VENDOR, "chatwoot/message_created_attachment.json");
    let m = n.message.clone().unwrap();
    assert_eq!(m.text, None, "content: null stays None");
    assert_eq!(m.attachments.len(), 1);
    let a = &m.attachments[0];
    assert_eq!(a.content_type.as_deref(), Some("image"));
    assert_eq!(a.size, Some(183_402));
    assert!(a.url.as_deref().unwrap().ends_with("/IMG_2041.jpg"));
    assert!(a.url.as_deref().unwrap().contains("/blobs/redirect/"));
    assert!(a
        .thumbnail_url
        .as_deref()
        .unwrap()
        .contains("/representations/redirect/"));
    assert_eq!(a.name, None);
    assert_eq!(time_of(&n).as_deref(), Some("2026-10-14T09:25:07.077Z"));
}

#[test]
fn chatwoot_message_updated_template() {
    let n = norm(chatwoot::VENDOR, "chatwoot/message_updated.json");
    assert_eq!(n.event, "message.updated");
    assert_eq!(n.subject.as_deref(), Some("4821"));
    // No update time in a message payload: the relay uses the receipt time.
    assert_eq!(n.time, None);
    let m = n.message.clone().unwrap();
    assert_eq!(m.id.as_deref(), Some("1093379"));
    assert_eq!(m.sender, None);
    assert_eq!(m.direction, Direction::Outgoing);
    assert_eq!(
        m.metadata.unwrap()["content_attributes"]["submitted_email"],
        json!("maya@example.com")
    );
}

#[test]
fn chatwoot_message_deletion() {
    let mut v: Value = serde_json::from_slice(&fixture("chatwoot/message_updated.json")).unwrap();
    v["content_attributes"]["deleted"] = json!(true);
    v["content"] = json!("This message was deleted");
    let n = deliver(chatwoot::VENDOR, &serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(
        routing_key("chatwoot", &n.event),
        "chatwoot.message.deleted"
    );
    assert_eq!(n.vendor_event, "message_updated");
    assert_eq!(n.message.clone().unwrap().id.as_deref(), Some("1093379"));
}

#[test]
fn chatwoot_conversation_events() {
    let n = norm(chatwoot::VENDOR, "chatwoot/conversation_created.json");
    assert_eq!(n.subject.as_deref(), Some("4821"));
    assert_eq!(time_of(&n).as_deref(), Some("2026-10-14T09:20:58Z"));
    let c = n.conversation.clone().unwrap();
    assert_eq!(c.id.as_deref(), Some("4821"));
    assert_eq!(c.status.as_deref(), Some("open"));
    assert_eq!(c.extra["inbox_id"], json!("12"));
    assert_eq!(c.extra["assignee"], Value::Null);
    assert_eq!(c.extra["team"], Value::Null);
    assert_eq!(c.extra["channel"], json!("Channel::WebWidget"));
    assert!(!c.extra.contains_key("changed_attributes"));
    assert_eq!(n.contact.clone().unwrap().id.as_deref(), Some("88123"));
    assert_eq!(n.message, None);

    let n = norm(
        chatwoot::VENDOR,
        "chatwoot/conversation_status_changed.json",
    );
    assert_eq!(time_of(&n).as_deref(), Some("2026-10-14T09:36:37.221687Z"));
    let c = n.conversation.clone().unwrap();
    assert_eq!(c.status.as_deref(), Some("resolved"));
    assert_eq!(
        c.extra["changed_attributes"][0]["status"]["current_value"],
        json!("resolved")
    );
    assert_eq!(
        c.extra["assignee"],
        json!({"id": "7", "name": "Ravi Menon", "kind": "user"})
    );
    assert_eq!(c.extra["team"], json!({"id": "2", "name": "billing"}));
    assert_eq!(c.extra["labels"], json!(["billing"]));

    let n = norm(chatwoot::VENDOR, "chatwoot/conversation_updated.json");
    assert_eq!(time_of(&n).as_deref(), Some("2026-10-14T09:22:37.663196Z"));
    assert_eq!(
        n.conversation.clone().unwrap().extra["assignee"]["id"],
        json!("7")
    );

    let n = norm(
        chatwoot::VENDOR,
        "chatwoot/agent_bot_conversation_opened.json",
    );
    assert_eq!(n.event, "conversation.status_changed");
    assert_eq!(n.vendor_event, "conversation_opened");
    assert_eq!(n.subject.as_deref(), Some("4821"));
    assert_eq!(
        n.conversation.clone().unwrap().status.as_deref(),
        Some("open")
    );
    assert_eq!(time_of(&n).as_deref(), Some("2026-10-14T09:21:37.448341Z"));
}

#[test]
fn chatwoot_contact_events() {
    let n = norm(chatwoot::VENDOR, "chatwoot/contact_created.json");
    let c = n.contact.clone().unwrap();
    assert_eq!(c.id.as_deref(), Some("88130"));
    assert_eq!(c.name.as_deref(), Some("shy-meadow-482"));
    assert_eq!(c.email, None);
    assert_eq!(c.phone, None);
    assert_eq!(n.subject, None);
    assert_eq!(n.time, None, "contact payloads carry no time");

    let n = norm(chatwoot::VENDOR, "chatwoot/contact_updated.json");
    let c = n.contact.clone().unwrap();
    assert_eq!(c.email.as_deref(), Some("maya@example.com"));
    assert_eq!(c.name.as_deref(), Some("Maya Lindqvist"));
    assert_eq!(time_of(&n).as_deref(), Some("2026-10-14T09:21:18.009Z"));
}

#[test]
fn chatwoot_widget_typing_inbox() {
    let n = norm(chatwoot::VENDOR, "chatwoot/webwidget_triggered.json");
    assert_eq!(n.subject.as_deref(), Some("4821"));
    assert_eq!(n.contact.clone().unwrap().id.as_deref(), Some("88123"));
    let c = n.conversation.clone().unwrap();
    assert_eq!(c.extra["contact_inbox_id"], json!("90211"));
    assert_eq!(c.status.as_deref(), Some("resolved"));

    let n = norm(chatwoot::VENDOR, "chatwoot/conversation_typing_on.json");
    assert_eq!(n.subject.as_deref(), Some("4821"));
    assert_eq!(n.time, None);
    assert_eq!(n.contact, None);
    let c = n.conversation.clone().unwrap();
    assert_eq!(c.extra["user"]["id"], json!("7"));
    assert_eq!(c.extra["user"]["kind"], json!("user"));
    assert_eq!(c.extra["is_private"], json!(false));

    let n = norm(chatwoot::VENDOR, "chatwoot/conversation_typing_off.json");
    assert_eq!(n.contact.clone().unwrap().id.as_deref(), Some("88123"));

    let n = norm(chatwoot::VENDOR, "chatwoot/inbox_created.json");
    assert_eq!(n.subject, None);
    assert_eq!(time_of(&n).as_deref(), Some("2026-10-14T10:21:37.25Z"));
}

// ---------------------------------------------------------------------------------------
// CometChat

#[test]
fn cometchat_legacy_and_current_text() {
    for file in [
        "cometchat/legacy_after_message_text.json",
        "cometchat/message_sent_text.json",
    ] {
        let n = norm(cometchat::VENDOR, file);
        assert_eq!(n.event, "message.created", "{file}");
        assert_eq!(n.subject.as_deref(), Some("u_1042_user_u_4412"), "{file}");
        assert_eq!(
            time_of(&n).as_deref(),
            Some("2026-10-14T09:21:37Z"),
            "{file}"
        );
        let m = n.message.clone().unwrap();
        assert_eq!(m.id.as_deref(), Some("18233"));
        assert_eq!(
            m.text.as_deref(),
            Some("Olá! My subscription renewal failed, can you check?")
        );
        assert_eq!(m.direction, Direction::Unknown);
        assert_eq!(m.created_at.as_deref(), Some("2026-10-14T09:21:37Z"));
        assert_eq!(
            m.sender,
            Some(Party {
                id: Some("u_4412".into()),
                name: Some("Tomás Ferreira".into()),
                email: None,
                kind: Some("user".into()),
            })
        );
        assert_eq!(
            m.recipient,
            Some(Recipient {
                id: Some("u_1042".into()),
                kind: Some("user".into())
            })
        );
        let conv = m.conversation.unwrap();
        assert_eq!(conv.id.as_deref(), Some("u_1042_user_u_4412"));
        assert_eq!(conv.name, None);
        assert!(m.attachments.is_empty());
    }
    // Same message id, different trigger: different keys.
    let a = norm(
        cometchat::VENDOR,
        "cometchat/legacy_after_message_text.json",
    );
    let b = norm(cometchat::VENDOR, "cometchat/message_sent_text.json");
    assert_eq!(
        a.dedup_key,
        "2657146b0bd6f1e3\u{1f}after_message\u{1f}18233"
    );
    assert_eq!(b.dedup_key, "2657146b0bd6f1e3\u{1f}message_sent\u{1f}18233");
}

#[test]
fn cometchat_media_and_group() {
    let n = norm(
        cometchat::VENDOR,
        "cometchat/legacy_after_message_media.json",
    );
    let m = n.message.clone().unwrap();
    assert_eq!(m.text, None);
    assert_eq!(m.attachments.len(), 1);
    let a = &m.attachments[0];
    assert_eq!(a.name.as_deref(), Some("card-declined.jpg"));
    assert_eq!(a.content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(a.size, Some(96_211));
    assert!(a
        .url
        .as_deref()
        .unwrap()
        .ends_with("5f0c8e6d2a4b9c7e1f3a5d7b9c1e3f5a.jpg"));
    assert_eq!(
        a.thumbnail_url.as_deref(),
        Some("https://data-us.cometchat.io/2657146b0bd6f1e3/thumbnails/1791969772_1938451207_small.jpg")
    );
    assert!(m.metadata.unwrap().contains_key("@injected"));
    assert_eq!(time_of(&n).as_deref(), Some("2026-10-14T09:22:52Z"));

    let n = norm(
        cometchat::VENDOR,
        "cometchat/legacy_after_message_group.json",
    );
    assert_eq!(n.subject.as_deref(), Some("group_support-emea"));
    let m = n.message.clone().unwrap();
    assert_eq!(
        m.recipient,
        Some(Recipient {
            id: Some("support-emea".into()),
            kind: Some("group".into())
        })
    );
    assert_eq!(
        m.conversation.unwrap().name.as_deref(),
        Some("Support EMEA")
    );
    assert_eq!(m.metadata.unwrap()["ticket"], json!("OPS-7781"));

    let n = norm(cometchat::VENDOR, "cometchat/message_sent_group_file.json");
    let m = n.message.clone().unwrap();
    assert_eq!(m.id.as_deref(), Some("18245"));
    assert_eq!(m.sender.unwrap().id.as_deref(), Some("u_1042"));
    assert_eq!(
        m.attachments[0].content_type.as_deref(),
        Some("application/pdf")
    );
    assert_eq!(m.attachments[0].size, Some(412_377));
    assert_eq!(m.attachments[0].thumbnail_url, None);
    assert_eq!(time_of(&n).as_deref(), Some("2026-10-14T09:28:37Z"));
}

#[test]
fn cometchat_before_message() {
    let n = norm(cometchat::VENDOR, "cometchat/legacy_before_message.json");
    assert_eq!(n.event, "message.before_send");
    assert_eq!(n.reply, Some(json!({})));
    assert_eq!(n.subject.as_deref(), Some("u_1042_user_u_4412"));
    assert_eq!(time_of(&n).as_deref(), Some("2026-10-14T09:23:47Z"));
    let m = n.message.clone().unwrap();
    assert_eq!(m.id, None, "not yet persisted: no id");
    assert!(m.text.unwrap().starts_with("Here is my card number"));
    // No muid: the key includes a hash of the message.
    let parts: Vec<&str> = n.dedup_key.split('\u{1f}').collect();
    assert_eq!(
        &parts[..4],
        ["2657146b0bd6f1e3", "u_4412", "u_1042", "1791969827"]
    );
    assert!(parts[4].starts_with("data:sha256:"), "{}", parts[4]);
}

#[test]
fn cometchat_edit_and_delete_target_the_message() {
    let n = norm(cometchat::VENDOR, "cometchat/message_edited.json");
    assert_eq!(n.event, "message.updated");
    assert_eq!(time_of(&n).as_deref(), Some("2026-10-14T09:22:17Z"));
    let m = n.message.clone().unwrap();
    assert_eq!(m.id.as_deref(), Some("18233"));
    assert_eq!(
        m.text.as_deref(),
        Some("Olá! My subscription renewal failed yesterday, can you check?")
    );
    assert_eq!(m.created_at.as_deref(), Some("2026-10-14T09:21:37Z"));
    // The action message's own id is the delivery id.
    assert_eq!(
        n.dedup_key,
        "2657146b0bd6f1e3\u{1f}message_edited\u{1f}18236"
    );

    let n = norm(cometchat::VENDOR, "cometchat/message_deleted.json");
    assert_eq!(n.event, "message.deleted");
    assert_eq!(time_of(&n).as_deref(), Some("2026-10-14T09:24:57Z"));
    let m = n.message.clone().unwrap();
    assert_eq!(m.id.as_deref(), Some("18234"));
    assert_eq!(m.text, None);
    assert_eq!(m.sender.unwrap().id.as_deref(), Some("u_4412"));
    assert_eq!(
        n.dedup_key,
        "2657146b0bd6f1e3\u{1f}message_deleted\u{1f}18238"
    );
}

#[test]
fn cometchat_receipts() {
    let d = norm(cometchat::VENDOR, "cometchat/message_delivery_receipt.json");
    assert_eq!(d.event, "message.delivered");
    assert_eq!(time_of(&d).as_deref(), Some("2026-10-14T09:21:38Z"));
    assert_eq!(d.subject, None);
    let m = d.message.clone().unwrap();
    assert_eq!(m.id.as_deref(), Some("18233"));
    assert_eq!(m.sender.unwrap().id.as_deref(), Some("u_4412"));
    assert_eq!(
        m.recipient,
        Some(Recipient {
            id: Some("u_1042".into()),
            kind: Some("user".into())
        })
    );
    assert_eq!(
        d.dedup_key,
        "2657146b0bd6f1e3\u{1f}message_delivery_receipt\u{1f}18233\u{1f}u_1042\u{1f}1791969698"
    );

    let r = norm(cometchat::VENDOR, "cometchat/message_read_receipt.json");
    assert_eq!(r.event, "message.read");
    assert_eq!(time_of(&r).as_deref(), Some("2026-10-14T09:21:44Z"));
    assert_ne!(r.dedup_key, d.dedup_key);
}

#[test]
fn cometchat_reaction_mention_group() {
    let n = norm(cometchat::VENDOR, "cometchat/message_reaction_added.json");
    assert_eq!(n.message.clone().unwrap().id.as_deref(), Some("18240"));
    assert_eq!(time_of(&n).as_deref(), Some("2026-10-14T09:27:10Z"));
    assert_eq!(
        n.dedup_key,
        "2657146b0bd6f1e3\u{1f}message_reaction_added\u{1f}3391"
    );

    let n = norm(cometchat::VENDOR, "cometchat/user_mentioned.json");
    assert_eq!(n.subject.as_deref(), Some("group_support-emea"));
    assert_eq!(n.message.clone().unwrap().id.as_deref(), Some("18240"));
    assert_eq!(time_of(&n).as_deref(), Some("2026-10-14T09:26:37Z"));

    let n = norm(cometchat::VENDOR, "cometchat/group_created.json");
    assert_eq!(n.subject.as_deref(), Some("group_vip-renewals"));
    assert_eq!(time_of(&n).as_deref(), Some("2026-10-14T09:29:57Z"));
    let c = n.conversation.clone().unwrap();
    assert_eq!(c.id.as_deref(), Some("group_vip-renewals"));
    assert_eq!(c.extra["guid"], json!("vip-renewals"));
    assert_eq!(n.message, None);
    assert_eq!(
        n.dedup_key,
        "2657146b0bd6f1e3\u{1f}group_created\u{1f}vip-renewals\u{1f}1791970197\u{1f}u_1042"
    );
}

// ---------------------------------------------------------------------------------------
// Dedup keys across fixtures

/// The same delivery twice gives the same key; no two fixtures share one (as the relay
/// combines it: with the vendor and the vendor's event name).
#[test]
fn dedup_keys_are_stable_and_distinct() {
    let manifest = manifest();
    let mut seen = HashSet::new();
    for f in manifest["fixtures"].as_array().unwrap() {
        let file = f["file"].as_str().unwrap();
        let vendor = Vendor::from_name(f["vendor"].as_str().unwrap()).unwrap();
        let body = fixture(file);
        let a = deliver(vendor, &body).unwrap();
        let b = deliver(vendor, &body).unwrap();
        assert_eq!(a.dedup_key, b.dedup_key, "{file}");
        assert!(
            seen.insert((vendor, a.vendor_event.clone(), a.dedup_key.clone())),
            "{file} shares a key"
        );
    }
    assert_eq!(seen.len(), manifest["fixtures"].as_array().unwrap().len());
}

/// Chatwoot without `X-Chatwoot-Delivery` (old installs): keys derived from the payload
/// are still distinct per fixture and stable per body.
#[test]
fn chatwoot_dedup_without_delivery_header() {
    let manifest = manifest();
    let mut seen = HashSet::new();
    let empty = Headers::new();
    for f in manifest["fixtures"].as_array().unwrap() {
        if f["vendor"] != "chatwoot" {
            continue;
        }
        let body = fixture(f["file"].as_str().unwrap());
        let n = hookrelay_vendors::chatwoot::normalize(&empty, &body, now()).unwrap();
        assert!(!n.dedup_key.starts_with("delivery"));
        if !n.vendor_event.starts_with("conversation_typing_") {
            let again =
                hookrelay_vendors::chatwoot::normalize(&empty, &body, at(1_791_969_999)).unwrap();
            assert_eq!(n.dedup_key, again.dedup_key);
        }
        assert!(seen.insert((n.vendor_event, n.dedup_key)));
    }
    assert_eq!(seen.len(), 15);

    let body = fixture("chatwoot/message_created_incoming.json");
    let n = hookrelay_vendors::chatwoot::normalize(&empty, &body, now()).unwrap();
    assert_eq!(n.dedup_key, "message_created\u{1f}3\u{1f}1093377");
    let n = hookrelay_vendors::chatwoot::normalize(
        &empty,
        &fixture("chatwoot/conversation_status_changed.json"),
        now(),
    )
    .unwrap();
    assert_eq!(
        n.dedup_key,
        "conversation_status_changed\u{1f}\u{1f}4821\u{1f}updated_at:1791970597.2216873"
    );
}

#[test]
fn chatwoot_dedup_with_delivery_header() {
    let body = fixture("chatwoot/message_created_incoming.json");
    let mut h = Headers::new();
    h.push(
        "X-Chatwoot-Delivery",
        b"0d6a8f5e-3f7b-4c2a-9e11-7b5d2c9a4f10",
    );
    let with = hookrelay_vendors::chatwoot::normalize(&h, &body, now()).unwrap();
    assert_eq!(
        with.dedup_key,
        "delivery\u{1f}0d6a8f5e-3f7b-4c2a-9e11-7b5d2c9a4f10"
    );
    // The same event sent to another URL has another delivery id: another key.
    let mut h2 = Headers::new();
    h2.push(
        "X-Chatwoot-Delivery",
        b"5b1c0a2e-8d4f-4e6b-a7c9-2f3e4d5c6b7a",
    );
    let other = hookrelay_vendors::chatwoot::normalize(&h2, &body, now()).unwrap();
    assert_ne!(with.dedup_key, other.dedup_key);
    let without = hookrelay_vendors::chatwoot::normalize(&Headers::new(), &body, now()).unwrap();
    assert_ne!(with.dedup_key, without.dedup_key);
    // A retry (fresh timestamp and signature, same delivery id) is the same delivery.
    let retry = hookrelay_vendors::chatwoot::normalize(&h, &body, at(1_791_969_999)).unwrap();
    assert_eq!(with.dedup_key, retry.dedup_key);
}

#[test]
fn kommunicate_same_key_same_dedup() {
    let a = norm(kommunicate::VENDOR, "kommunicate/message_group.json");
    let mut v: Value = serde_json::from_slice(&fixture("kommunicate/message_group.json")).unwrap();
    v["receiverConnected"] = json!(false); // a re-send with a changed flag
    let b = deliver(kommunicate::VENDOR, &serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(a.dedup_key, b.dedup_key);
    let c = norm(kommunicate::VENDOR, "kommunicate/message_one_to_one.json");
    assert_ne!(a.dedup_key, c.dedup_key);
}
