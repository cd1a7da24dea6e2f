//! Authentication through the registry (`Vendor::verify`): what passes and every way
//! of failing.

mod common;

use common::*;
use hookrelay_common::Secret;
use hookrelay_vendors::chatwoot::HmacSecret;
use hookrelay_vendors::{chatwoot, cometchat, kommunicate, AuthError, Credentials, Vendor};
use std::time::Duration;

const CW_FILE: &str = "chatwoot/message_created_incoming.json";

fn cw_secret() -> Vec<u8> {
    let creds = creds(chatwoot::VENDOR);
    let hmac = creds.get::<HmacSecret>().expect("Chatwoot credentials");
    hmac.secret.expose().as_bytes().to_vec()
}

fn cw_sig(secret: &[u8], ts: &str, body: &[u8]) -> String {
    format!("sha256={}", chatwoot::signature(secret, ts, body))
}

fn cw_verify(pairs: &[(&str, &str)], body: &[u8]) -> Result<(), AuthError> {
    verify_with(
        chatwoot::VENDOR,
        &creds(chatwoot::VENDOR),
        pairs,
        body,
        now(),
    )
}

// ---------------------------------------------------------------------------------------
// Chatwoot

#[test]
fn chatwoot_accepts_what_sign_produces() {
    let body = fixture(CW_FILE);
    let pairs = chatwoot::VENDOR.sign(&creds(chatwoot::VENDOR), &body, now());
    let names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
    for h in [
        "Content-Type",
        "X-Chatwoot-Delivery",
        "X-Chatwoot-Timestamp",
        "X-Chatwoot-Signature",
    ] {
        assert!(names.contains(&h), "{h}");
    }
    let ts = &pairs
        .iter()
        .find(|(n, _)| n == "X-Chatwoot-Timestamp")
        .unwrap()
        .1;
    assert_eq!(ts, "1791969697");
    let headers = headers_from(&pairs);
    assert!(chatwoot::VENDOR
        .verify(&creds(chatwoot::VENDOR), &headers, &body, now())
        .is_ok());
}

#[test]
fn chatwoot_wrong_secret() {
    let body = fixture(CW_FILE);
    let ts = "1791969697";
    let sig = cw_sig(b"not-the-secret", ts, &body);
    assert_eq!(
        cw_verify(
            &[("X-Chatwoot-Timestamp", ts), ("X-Chatwoot-Signature", &sig)],
            &body
        ),
        Err(AuthError::Mismatch)
    );
}

#[test]
fn chatwoot_signature_binds_the_timestamp() {
    let body = fixture(CW_FILE);
    let sig = cw_sig(&cw_secret(), "1791969697", &body);
    assert_eq!(
        cw_verify(
            &[
                ("X-Chatwoot-Timestamp", "1791969698"),
                ("X-Chatwoot-Signature", &sig)
            ],
            &body
        ),
        Err(AuthError::Mismatch)
    );
}

#[test]
fn chatwoot_stale_and_future() {
    let body = fixture(CW_FILE);
    let now_s = now().unix_timestamp();
    for (offset, expected) in [
        (-300, Ok(())),
        (-301, Err(AuthError::Stale)),
        (-86_400, Err(AuthError::Stale)),
        (300, Ok(())),
        (301, Err(AuthError::Stale)),
        (86_400, Err(AuthError::Stale)),
    ] {
        let ts = (now_s + offset).to_string();
        let sig = cw_sig(&cw_secret(), &ts, &body);
        assert_eq!(
            cw_verify(
                &[
                    ("X-Chatwoot-Timestamp", &ts),
                    ("X-Chatwoot-Signature", &sig)
                ],
                &body
            ),
            expected,
            "offset {offset}"
        );
    }
    // A huge timestamp does not overflow anything.
    let ts = "99999999999999999999";
    let sig = cw_sig(&cw_secret(), ts, &body);
    assert_eq!(
        cw_verify(
            &[("X-Chatwoot-Timestamp", ts), ("X-Chatwoot-Signature", &sig)],
            &body
        ),
        Err(AuthError::Stale)
    );
    // Tolerance `None`: no window at all.
    let no_window = Credentials::new(HmacSecret {
        secret: Secret::new(String::from_utf8(cw_secret()).unwrap()),
        tolerance: None,
    });
    assert_eq!(
        verify_with(
            chatwoot::VENDOR,
            &no_window,
            &[("X-Chatwoot-Timestamp", ts), ("X-Chatwoot-Signature", &sig)],
            &body,
            now()
        ),
        Ok(())
    );
}

#[test]
fn chatwoot_signature_format_is_strict() {
    let body = fixture(CW_FILE);
    let ts = "1791969697";
    let good = cw_sig(&cw_secret(), ts, &body);
    assert_eq!(
        cw_verify(
            &[
                ("X-Chatwoot-Timestamp", ts),
                ("X-Chatwoot-Signature", &good)
            ],
            &body
        ),
        Ok(())
    );
    let hex = good.strip_prefix("sha256=").unwrap();
    let upper = format!("sha256={}", hex.to_uppercase());
    let truncated = good[..good.len() - 1].to_owned();
    let half = good[..7 + 32].to_owned();
    let extra = format!("{good}0");
    let no_prefix = hex.to_owned();
    let other_prefix = format!("sha1={hex}");
    let upper_prefix = format!("SHA256={hex}");
    for bad in [
        upper.as_str(),
        &truncated,
        &half,
        &extra,
        &no_prefix,
        &other_prefix,
        &upper_prefix,
        "sha256=",
        "",
    ] {
        assert_eq!(
            cw_verify(
                &[("X-Chatwoot-Timestamp", ts), ("X-Chatwoot-Signature", bad)],
                &body
            ),
            Err(AuthError::Malformed),
            "{bad:?}"
        );
    }
    // Well-formed but wrong.
    let mut flipped = good.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    assert_eq!(
        cw_verify(
            &[
                ("X-Chatwoot-Timestamp", ts),
                ("X-Chatwoot-Signature", &flipped)
            ],
            &body
        ),
        Err(AuthError::Mismatch)
    );
}

#[test]
fn chatwoot_timestamp_must_be_digits() {
    let body = fixture(CW_FILE);
    for ts in [
        "17919696a7",
        "-1791969697",
        "+1791969697",
        " 1791969697",
        "1791969697 ",
        "1791969697.0",
        "0x6ACD",
        "",
        "123456789012345678901",
    ] {
        // Even signed over exactly that text.
        let sig = cw_sig(&cw_secret(), ts, &body);
        assert_eq!(
            cw_verify(
                &[("X-Chatwoot-Timestamp", ts), ("X-Chatwoot-Signature", &sig)],
                &body
            ),
            Err(AuthError::Malformed),
            "{ts:?}"
        );
    }
}

#[test]
fn chatwoot_missing_and_repeated_headers() {
    let body = fixture(CW_FILE);
    let ts = "1791969697";
    let sig = cw_sig(&cw_secret(), ts, &body);
    assert_eq!(cw_verify(&[], &body), Err(AuthError::Missing));
    assert_eq!(
        cw_verify(&[("X-Chatwoot-Signature", &sig)], &body),
        Err(AuthError::Missing)
    );
    assert_eq!(
        cw_verify(&[("X-Chatwoot-Timestamp", ts)], &body),
        Err(AuthError::Missing)
    );
    assert_eq!(
        cw_verify(
            &[
                ("X-Chatwoot-Timestamp", ts),
                ("X-Chatwoot-Timestamp", ts),
                ("X-Chatwoot-Signature", &sig)
            ],
            &body
        ),
        Err(AuthError::Repeated)
    );
    assert_eq!(
        cw_verify(
            &[
                ("X-Chatwoot-Timestamp", ts),
                ("x-chatwoot-signature", &sig),
                ("X-CHATWOOT-SIGNATURE", &sig)
            ],
            &body
        ),
        Err(AuthError::Repeated)
    );
    // Header names are case-insensitive.
    assert_eq!(
        cw_verify(
            &[("x-chatwoot-timestamp", ts), ("X-CHATWOOT-SIGNATURE", &sig)],
            &body
        ),
        Ok(())
    );
}

#[test]
fn chatwoot_verifies_raw_bytes_before_parsing() {
    // Not JSON at all, but correctly signed: authentication passes, the payload check
    // (400, not 401) is what refuses it.
    let body = b"\xff\xfe not json";
    let pairs = chatwoot::VENDOR.sign(&creds(chatwoot::VENDOR), body, now());
    let headers = headers_from(&pairs);
    let verified = chatwoot::VENDOR
        .verify(&creds(chatwoot::VENDOR), &headers, body, now())
        .expect("raw bytes verify");
    assert!(matches!(
        chatwoot::VENDOR.normalize(&verified, now()),
        Err(hookrelay_vendors::PayloadError::NotJson(_))
    ));
    // Re-serializing changes the bytes and breaks the signature.
    let pretty = fixture(CW_FILE);
    let compact =
        serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(&pretty).unwrap()).unwrap();
    let sig = cw_sig(&cw_secret(), "1791969697", &pretty);
    assert_eq!(
        cw_verify(
            &[
                ("X-Chatwoot-Timestamp", "1791969697"),
                ("X-Chatwoot-Signature", &sig)
            ],
            &compact
        ),
        Err(AuthError::Mismatch)
    );
}

// ---------------------------------------------------------------------------------------
// Kommunicate

fn km(pairs: &[(&str, &str)]) -> Result<(), AuthError> {
    verify_with(
        kommunicate::VENDOR,
        &creds(kommunicate::VENDOR),
        pairs,
        b"{}",
        now(),
    )
}

#[test]
fn kommunicate_auth() {
    assert_eq!(km(&[("Authentication", "Basic YWJjZGVm")]), Ok(()));
    assert_eq!(km(&[]), Err(AuthError::Missing));
    assert_eq!(
        km(&[("Authorization", "Basic YWJjZGVm")]),
        Err(AuthError::Missing)
    );
    // Bare base64, wrong token, invalid base64, another scheme.
    assert_eq!(
        km(&[("Authentication", "YWJjZGVm")]),
        Err(AuthError::Mismatch)
    );
    assert_eq!(
        km(&[("Authentication", "Basic YWJjZGVn")]),
        Err(AuthError::Mismatch)
    );
    assert_eq!(
        km(&[("Authentication", "Basic ***")]),
        Err(AuthError::Mismatch)
    );
    assert_eq!(
        km(&[("Authentication", "Bearer YWJjZGVm")]),
        Err(AuthError::Mismatch)
    );
    // The token itself, not base64 of it.
    assert_eq!(
        km(&[("Authentication", "Basic abcdef")]),
        Err(AuthError::Mismatch)
    );
    // `user:pass`-style is not the contract.
    assert_eq!(
        km(&[("Authentication", "Basic YWJjZGVmOg==")]),
        Err(AuthError::Mismatch)
    );
    assert_eq!(
        km(&[
            ("Authentication", "Basic YWJjZGVm"),
            ("Authentication", "Basic eHl6")
        ]),
        Err(AuthError::Repeated)
    );
    // Both headers: `Authentication` decides.
    assert_eq!(
        km(&[
            ("Authorization", "Basic eHl6"),
            ("Authentication", "Basic YWJjZGVm")
        ]),
        Ok(())
    );
}

// ---------------------------------------------------------------------------------------
// CometChat

fn cc(pairs: &[(&str, &str)]) -> Result<(), AuthError> {
    verify_with(
        cometchat::VENDOR,
        &creds(cometchat::VENDOR),
        pairs,
        b"{}",
        now(),
    )
}

fn basic(user_info: &str) -> String {
    hookrelay_vendors::util::basic_header(user_info.as_bytes())
}

#[test]
fn cometchat_auth() {
    assert_eq!(
        cc(&[("Authorization", "Basic cmVsYXl1c2VyOnMzY3JldFBhNTU=")]),
        Ok(())
    );
    assert_eq!(cc(&[]), Err(AuthError::Missing));
    assert_eq!(
        cc(&[("Authentication", "Basic cmVsYXl1c2VyOnMzY3JldFBhNTU=")]),
        Err(AuthError::Missing)
    );
    assert_eq!(
        cc(&[("Authorization", "cmVsYXl1c2VyOnMzY3JldFBhNTU=")]),
        Err(AuthError::Malformed)
    );
    assert_eq!(
        cc(&[("Authorization", "Basic ###")]),
        Err(AuthError::Malformed)
    );
    assert_eq!(
        cc(&[("Authorization", &basic("relayuser"))]),
        Err(AuthError::Malformed)
    );
    assert_eq!(
        cc(&[("Authorization", &basic("relayuser:S3cretPa55"))]),
        Err(AuthError::Mismatch)
    );
    assert_eq!(
        cc(&[("Authorization", &basic("Relayuser:s3cretPa55"))]),
        Err(AuthError::Mismatch)
    );
    assert_eq!(
        cc(&[("Authorization", &basic("relayuser:"))]),
        Err(AuthError::Mismatch)
    );
    assert_eq!(
        cc(&[("Authorization", &basic(":s3cretPa55"))]),
        Err(AuthError::Mismatch)
    );
    // Colon games: split at the first colon.
    assert_eq!(
        cc(&[("Authorization", &basic("relayuser:s3cret:Pa55"))]),
        Err(AuthError::Mismatch)
    );
    assert_eq!(
        cc(&[("Authorization", &basic("relay:user:s3cretPa55"))]),
        Err(AuthError::Mismatch)
    );
    let ok = basic("relayuser:s3cretPa55");
    assert_eq!(
        cc(&[("Authorization", &ok), ("authorization", &ok)]),
        Err(AuthError::Repeated)
    );
    // Over-long values are not decoded.
    let long = format!("Basic {}", "A".repeat(10_000));
    assert_eq!(cc(&[("Authorization", &long)]), Err(AuthError::Malformed));
}

// ---------------------------------------------------------------------------------------
// Registry

#[test]
fn credentials_of_another_vendor_are_wrong_kind() {
    let body = b"{}";
    for &vendor in Vendor::ALL {
        let pairs = vendor.sign(&creds(vendor), body, now());
        let headers = headers_from(&pairs);
        for &other in Vendor::ALL {
            let result = vendor.verify(&creds(other), &headers, body, now());
            if other == vendor {
                assert!(result.is_ok(), "{vendor:?}");
            } else {
                assert_eq!(
                    result.err(),
                    Some(AuthError::WrongKind),
                    "{vendor:?} with {other:?} creds"
                );
            }
        }
    }
}

#[test]
fn allow_unauthenticated_passes_anything() {
    let headers = hookrelay_vendors::Headers::new();
    for &vendor in Vendor::ALL {
        assert!(vendor
            .verify(&Credentials::NONE, &headers, b"whatever", now())
            .is_ok());
        assert_eq!(
            vendor.sign(&Credentials::NONE, b"{}", now()),
            vec![("Content-Type".to_owned(), "application/json".to_owned())]
        );
    }
}

#[test]
fn empty_secrets_fail_closed() {
    let headers = hookrelay_vendors::Headers::new();
    let empty_hmac = Credentials::new(HmacSecret {
        secret: Secret::new(""),
        tolerance: Some(Duration::from_secs(300)),
    });
    assert_eq!(
        chatwoot::VENDOR
            .verify(&empty_hmac, &headers, b"{}", now())
            .err(),
        Some(AuthError::WrongKind)
    );
    let empty_token = Credentials::new(kommunicate::Token(Secret::new("")));
    let pairs = [("Authentication", "Basic ")];
    assert_eq!(
        verify_with(kommunicate::VENDOR, &empty_token, &pairs, b"{}", now()),
        Err(AuthError::WrongKind)
    );
}

#[test]
fn basic_vendors_are_flagged_for_www_authenticate() {
    assert!(kommunicate::VENDOR.uses_basic_auth());
    assert!(cometchat::VENDOR.uses_basic_auth());
    assert!(!chatwoot::VENDOR.uses_basic_auth());
}
