//! Standard Webhooks against signatures hookrelay did not make: the vectors in
//! tests/fixtures/vectors/standard-webhooks.json were produced (and cross-checked) by the
//! official `standardwebhooks` library from PyPI (scripts/gen-standard-webhooks-vectors.py
//! regenerates them; this test reads the committed file and needs no Python). Also each
//! fixture through the registry: routing, event id inputs, nothing invented.

mod common;

use common::*;
use hookrelay_common::routing::routing_key;
use hookrelay_vendors::standard_webhooks::{self, SigningKeys};
use hookrelay_vendors::{AuthError, Credentials, Headers};
use serde_json::Value;
use std::time::Duration;

fn vectors() -> Value {
    serde_json::from_slice(&fixture("vectors/standard-webhooks.json")).expect("vectors are JSON")
}

#[test]
fn the_official_library_s_signatures_verify_and_its_refusals_are_refused() {
    let v = vectors();
    assert!(v["library"]
        .as_str()
        .unwrap()
        .starts_with("standardwebhooks "));
    let now = at(v["now"].as_i64().unwrap());
    let cases = v["cases"].as_array().unwrap();
    let (mut accepted, mut refused) = (0, 0);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let body = fixture(c["file"].as_str().unwrap());
        let secrets: Vec<&str> = c["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        let creds =
            Credentials::new(SigningKeys::new(&secrets, Some(Duration::from_secs(300))).unwrap());
        let pairs: Vec<(String, String)> = c["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let headers = Headers::from_pairs(&pairs);
        let result = standard_webhooks::VENDOR.verify(&creds, &headers, &body, now);
        if c["accept"].as_bool().unwrap() {
            let verified = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            let n = standard_webhooks::VENDOR
                .normalize(&verified, now)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            // The dedup key is the sender's id, in either spelling.
            assert!(n.dedup_key.starts_with("msg_"), "{name}");
            accepted += 1;
        } else {
            assert!(
                matches!(result, Err(AuthError::Mismatch | AuthError::Malformed)),
                "{name}: {result:?}"
            );
            refused += 1;
        }
    }
    assert!(
        accepted >= 12 && refused >= 12,
        "{accepted} accepted, {refused} refused"
    );
    // The same signatures are stale ten minutes later.
    let c = &cases[0];
    let body = fixture(c["file"].as_str().unwrap());
    let pairs: Vec<(String, String)> = c["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let later = at(v["now"].as_i64().unwrap() + 600);
    assert_eq!(
        verify_with(
            standard_webhooks::VENDOR,
            &creds(standard_webhooks::VENDOR),
            &pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
            &body,
            later
        ),
        Err(AuthError::Stale)
    );
}

#[test]
fn the_demo_secret_is_the_forward_worker_s_and_the_manifest_s() {
    let m = manifest();
    assert_eq!(
        m["test_credentials"]["standard_webhooks_secret"],
        standard_webhooks::DEMO_SECRET
    );
    let config = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/default.toml"
    ))
    .unwrap();
    assert!(
        config.contains(&format!("secret = \"{}\"", standard_webhooks::DEMO_SECRET)),
        "forward.secret's demo value is the standard-webhooks demo secret"
    );
}

#[test]
fn fixtures_route_by_source_and_carry_nothing_invented() {
    for (file, key) in [
        (
            "standard-webhooks/invoice_paid.json",
            "billing.invoice.paid",
        ),
        (
            "standard-webhooks/user_created.json",
            "billing.user.created_v2",
        ),
        (
            "standard-webhooks/forwarded_cloudevent.json",
            "billing.chatwoot.message.created",
        ),
    ] {
        let n = deliver(standard_webhooks::VENDOR, &fixture(file)).unwrap();
        let prefix = standard_webhooks::VENDOR.routing_prefix("billing");
        assert_eq!(routing_key(prefix, &n.event), key, "{file}");
        assert!(n.message.is_none() && n.conversation.is_none() && n.contact.is_none());
        assert!(n.subject.is_none() && n.reply.is_none());
        assert!(n.time.is_some(), "{file}: the payload's timestamp or time");
        assert!(
            n.dedup_key.starts_with("msg_"),
            "{file}: the signed webhook-id"
        );
    }
    assert!(!standard_webhooks::VENDOR.contract().id_names_vendor_event());
}
