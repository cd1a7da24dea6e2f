//! Shared helpers for the integration tests: the fixture manifest, credentials and
//! running a body through `sign` → `Vendor::verify` → `Vendor::normalize`.
#![allow(dead_code)]

use hookrelay_vendors::{AuthError, Credentials, Headers, Normalized, PayloadError, Vendor};
use serde_json::Value;
use std::path::PathBuf;
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

/// The demo credentials of `vendor` (the fixtures' values; Chatwoot with a 300 s window).
pub fn creds(vendor: Vendor) -> Credentials {
    vendor.demo_credentials()
}

/// The first fixture file (by name) of `vendor`'s fixtures directory.
pub fn first_fixture(vendor: Vendor) -> Vec<u8> {
    let dir = PathBuf::from(FIXTURES).join(vendor.contract().fixtures_dir());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let first = files
        .first()
        .unwrap_or_else(|| panic!("{}: no fixtures", dir.display()));
    std::fs::read(first).unwrap()
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
