//! Shared helpers for the integration tests: the fixture manifest, credentials and
//! running a body through `sign` → `Vendor::verify` → `Vendor::normalize`.
#![allow(dead_code)]

use hookrelay_common::Secret;
use hookrelay_vendors::{AuthError, Credentials, Headers, Normalized, PayloadError, Vendor};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use time::OffsetDateTime;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");

/// The fixtures' world: 2026-10-14T09:21:37Z.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_791_969_697).unwrap()
}

pub fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap()
}

pub fn manifest() -> Value {
    let path = PathBuf::from(FIXTURES).join("manifest.json");
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).expect("manifest.json is JSON")
}

pub fn fixture(file: &str) -> Vec<u8> {
    let path = PathBuf::from(FIXTURES).join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn cred(name: &str) -> String {
    manifest()["test_credentials"][name]
        .as_str()
        .unwrap_or_else(|| panic!("test_credentials.{name}"))
        .to_owned()
}

/// The manifest's credentials for `vendor` (Chatwoot with a 300 s window).
pub fn creds(vendor: Vendor) -> Credentials {
    match vendor {
        Vendor::Kommunicate => Credentials::Token(Secret::new(cred("kommunicate_token"))),
        Vendor::Chatwoot => Credentials::Hmac {
            secret: Secret::new(cred("chatwoot_webhook_secret")),
            tolerance: Some(Duration::from_secs(300)),
        },
        Vendor::Cometchat => Credentials::Basic {
            username: Secret::new(cred("cometchat_basic_user")),
            password: Secret::new(cred("cometchat_basic_password")),
        },
    }
}

pub fn headers_from(pairs: &[(String, String)]) -> Headers<'_> {
    let h = Headers::from_pairs(pairs);
    h
}

/// Sign `body` as the vendor would at `when`, verify it, normalize it.
pub fn deliver_at(
    vendor: Vendor,
    body: &[u8],
    when: OffsetDateTime,
) -> Result<Normalized, PayloadError> {
    let creds = creds(vendor);
    let pairs = vendor.sign(&creds, body, when);
    let headers = headers_from(&pairs);
    let verified = vendor
        .verify(&creds, &headers, body, when)
        .expect("a body signed by `sign` verifies");
    vendor.normalize(&verified, when)
}

pub fn deliver(vendor: Vendor, body: &[u8]) -> Result<Normalized, PayloadError> {
    deliver_at(vendor, body, now())
}

/// Normalize a fixture file (signed, verified) and unwrap.
pub fn norm(vendor: Vendor, file: &str) -> Normalized {
    deliver(vendor, &fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Verify with the given header pairs (borrowed strs).
pub fn verify_with(
    vendor: Vendor,
    creds: &Credentials,
    pairs: &[(&str, &str)],
    body: &[u8],
    when: OffsetDateTime,
) -> Result<(), AuthError> {
    let h = Headers::from_pairs(pairs);
    vendor.verify(creds, &h, body, when).map(|_| ())
}
