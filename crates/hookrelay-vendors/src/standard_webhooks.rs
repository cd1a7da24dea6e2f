//! Standard Webhooks: any sender that signs per the Standard Webhooks convention
//! (<https://www.standardwebhooks.com>), the scheme hookrelay's own `forward` worker
//! signs with, so one hookrelay can relay another's output.
//!
//! - `webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature`: a
//!   space-separated list of `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`;
//!   one matching entry suffices, entries of other versions are ignored. The `svix-id`,
//!   `svix-timestamp`, `svix-signature` spellings are accepted too (one spelling per
//!   request: the `webhook-*` one if any of its headers is present).
//! - The source's `secret` is `whsec_<base64 key>` (the prefix is optional, as in the
//!   official libraries), or several of them (a TOML array, or comma-separated) while a
//!   rotation is under way: any of them may have signed.
//! - The body is a JSON object with a string `type`. Since many unrelated senders share
//!   this vendor, the routing key is `<source>.<type>` (see [`event_type`] for how
//!   `type` is cleaned), and the event id is of the source name and `webhook-id`.
//!   Nothing else is mapped: `data` carries only the envelope fields and `raw`.
//!
//! See docs/vendors.md for the contract in full.

use crate::keys::{Key, KeyError, KeyKind, KeyValues};
use crate::util;
use crate::{AuthError, Contract, Credentials, Headers, Normalized, PayloadError, Vendor};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use hookrelay_common::routing::{event_type, Prefix};
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::Duration;
use time::OffsetDateTime;

type HmacSha256 = Hmac<Sha256>;

/// The vendor, for the registry and for code that names it.
pub struct StandardWebhooks;

/// This vendor's handle.
pub const VENDOR: Vendor = Vendor(&StandardWebhooks);

/// The two spellings of the three headers: (id, timestamp, signature).
pub const SPELLINGS: [(&str, &str, &str); 2] = [
    ("webhook-id", "webhook-timestamp", "webhook-signature"),
    ("svix-id", "svix-timestamp", "svix-signature"),
];

/// The demo secret (also the forward worker's), refused on a non-loopback bind.
pub const DEMO_SECRET: &str = "whsec_ZGVtby1mb3J3YXJkLXNpZ25pbmcta2V5LWNoYW5nZS1tZQ==";

/// Longest `webhook-id` accepted (bytes). Svix ids are 31 characters, UUIDs 36.
pub const MAX_ID_LEN: usize = 256;
/// Signature entries looked at; more are ignored (a bound on the work per request).
pub const MAX_SIGNATURES: usize = 16;
/// Longest `type` accepted (bytes), so a routing key stays far below AMQP's 255.
pub const MAX_TYPE_LEN: usize = 200;
/// Longest timestamp header accepted (digits).
const MAX_TIMESTAMP_DIGITS: usize = 20;

/// Standard alphabet; padding optional (the official libraries pad, some senders strip).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A source's credentials: every key it accepts (one, or several during a rotation) and
/// the replay window (`None` turns it off, for fixed test vectors).
#[derive(Clone)]
pub struct SigningKeys {
    keys: Vec<Vec<u8>>,
    pub tolerance: Option<Duration>,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKeys({} key(s), [redacted])", self.keys.len())
    }
}

impl SigningKeys {
    /// Keys from `whsec_<base64>` secrets. The error says which entry is bad (by
    /// position), never its value.
    pub fn new<S: AsRef<str>>(secrets: &[S], tolerance: Option<Duration>) -> Result<Self, String> {
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                decode_secret(s.as_ref()).ok_or_else(|| {
                    format!(
                        "entry {} is not whsec_<base64 key> (a non-empty base64 key)",
                        i + 1
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("holds no secret".to_owned());
        }
        Ok(Self { keys, tolerance })
    }
}

/// The key of a `whsec_<base64>` secret (the prefix optional); `None` if not base64 or
/// empty.
pub fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret.trim();
    let b64 = b64.strip_prefix("whsec_").unwrap_or(b64);
    BASE64.decode(b64).ok().filter(|k| !k.is_empty())
}

/// `secret` (one or several, or `secret_file`) and `signature_tolerance_secs`.
const KEYS: &[Key] = &[
    Key {
        name: "secret",
        kind: KeyKind::SecretList,
        demo: Some(DEMO_SECRET),
    },
    Key {
        name: "signature_tolerance_secs",
        kind: KeyKind::Seconds { default: 300 },
        demo: None,
    },
];

impl Contract for StandardWebhooks {
    fn name(&self) -> &'static str {
        "standard-webhooks"
    }
    fn keys(&self) -> &'static [Key] {
        KEYS
    }
    fn credentials(&self, keys: &KeyValues) -> Result<Credentials, KeyError> {
        let secrets = keys.secrets("secret")?;
        let tolerance = keys.seconds("signature_tolerance_secs")?;
        let exposed: Vec<&str> = secrets.iter().map(|s| s.expose()).collect();
        SigningKeys::new(&exposed, Some(Duration::from_secs(tolerance)))
            .map(Credentials::new)
            .map_err(|reason| KeyError::new("secret", reason))
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
    /// None: its routing keys start with the source's name (`<source>.<type>`).
    fn events(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    fn event_patterns(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    fn signs_body(&self) -> bool {
        true
    }
    fn routing_prefix(&self) -> Prefix {
        Prefix::Source
    }
    fn id_names_vendor_event(&self) -> bool {
        false
    }
    fn fixtures_dir(&self) -> &'static str {
        "standard-webhooks"
    }
    /// One spelling's three headers, each once; a canonical decimal timestamp within the
    /// window; an id of 1 to 256 bytes; and among the first 16 space-separated entries
    /// one that is `v1,` + the base64 [`signature`] of some configured key (padding
    /// optional).
    #[cfg(feature = "test-support")]
    fn genuine(
        &self,
        creds: &Credentials,
        headers: &Headers<'_>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> bool {
        use crate::testing::unique;
        let Some(keys) = creds.get::<SigningKeys>() else {
            return false;
        };
        let Some((id_h, ts_h, sig_h)) = SPELLINGS.into_iter().find(|(i, t, s)| {
            [i, t, s].iter().any(|n| headers.get(n).is_some())
        }) else {
            return false;
        };
        let (Some(id), Some(ts), Some(sig)) = (
            unique(headers, id_h),
            unique(headers, ts_h),
            unique(headers, sig_h),
        ) else {
            return false;
        };
        let (Ok(id), Ok(ts_text)) = (std::str::from_utf8(id), std::str::from_utf8(ts)) else {
            return false;
        };
        let Some(secs) = ts_text
            .parse::<i64>()
            .ok()
            .filter(|s| s.to_string() == ts_text && *s >= 0)
        else {
            return false;
        };
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return false;
        }
        if let Some(tol) = keys.tolerance {
            if (i128::from(now.unix_timestamp()) - i128::from(secs)).abs()
                > i128::from(tol.as_secs())
            {
                return false;
            }
        }
        let entries: Vec<&[u8]> = sig.split(|b| *b == b' ').take(MAX_SIGNATURES).collect();
        keys.keys.iter().any(|key| {
            let expected = signature(key, id, ts_text, body);
            let unpadded = expected.trim_end_matches('=');
            entries.iter().any(|e| {
                e.strip_prefix(b"v1,")
                    .is_some_and(|b| b == expected.as_bytes() || b == unpadded.as_bytes())
            })
        })
    }
    #[cfg(feature = "test-support")]
    fn samples(&self) -> &'static crate::testing::Samples {
        static SAMPLES: crate::testing::Samples = crate::testing::Samples {
            events: &[
                "invoice.paid",
                "user.created",
                "Order-Shipped V2",
                "chatwoot.message.created",
                "ünïcode/type",
            ],
            required: &["type"],
            credential_header: "webhook-signature",
            complete: |obj, event, _id, data| {
                obj.insert("type".into(), event.into());
                obj.insert("data".into(), serde_json::Value::Object(data));
            },
        };
        &SAMPLES
    }
}

// ---------------------------------------------------------------------------------------
// Authentication

/// `webhook-id`, `webhook-timestamp`, `webhook-signature` (in either spelling).
type Signed<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// The spelling in use and its three headers (each at most once): the `webhook-*`
/// spelling if any of its headers is present, else `svix-*`.
fn signed_headers<'a>(headers: &Headers<'a>) -> Result<Signed<'a>, AuthError> {
    for (id, ts, sig) in SPELLINGS {
        let found = [id, ts, sig].map(|n| headers.get_unique(n));
        if found.iter().any(Result::is_err) {
            return Err(AuthError::Repeated);
        }
        let [id, ts, sig] = found.map(|r| r.ok().flatten());
        if id.is_none() && ts.is_none() && sig.is_none() {
            continue;
        }
        return match (id, ts, sig) {
            (Some(id), Some(ts), Some(sig)) => Ok((id, ts, sig)),
            _ => Err(AuthError::Missing),
        };
    }
    Err(AuthError::Missing)
}

/// Check `webhook-signature` over `<webhook-id>.<webhook-timestamp>.<raw body>` against
/// every configured key, and the replay window. Each candidate is compared with
/// `verify_slice` (constant time).
pub fn verify(
    creds: &Credentials,
    headers: &Headers,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<(), AuthError> {
    let Some(keys) = creds.get::<SigningKeys>() else {
        return Err(AuthError::WrongKind);
    };
    if keys.keys.is_empty() {
        return Err(AuthError::WrongKind);
    }
    let (id, ts, sig) = signed_headers(headers)?;
    if id.is_empty() || id.len() > MAX_ID_LEN || std::str::from_utf8(id).is_err() {
        return Err(AuthError::Malformed);
    }
    if ts.is_empty()
        || ts.len() > MAX_TIMESTAMP_DIGITS
        || !ts.iter().all(u8::is_ascii_digit)
        || (ts.len() > 1 && ts[0] == b'0')
    {
        return Err(AuthError::Malformed);
    }
    if let Some(tolerance) = keys.tolerance {
        // At most 20 digits, so this fits an i128 without overflow.
        let ts_secs = ts
            .iter()
            .fold(0_i128, |acc, d| acc * 10 + i128::from(d - b'0'));
        if (i128::from(now.unix_timestamp()) - ts_secs).abs() > i128::from(tolerance.as_secs()) {
            return Err(AuthError::Stale);
        }
    }
    let candidates: Vec<Vec<u8>> = sig
        .split(|b| *b == b' ')
        .take(MAX_SIGNATURES)
        .filter_map(|entry| entry.strip_prefix(b"v1,"))
        .filter_map(|b64| BASE64.decode(b64).ok())
        .collect();
    if candidates.is_empty() {
        return Err(AuthError::Malformed);
    }
    for key in &keys.keys {
        let mut mac = HmacSha256::new_from_slice(key).map_err(|_| AuthError::WrongKind)?;
        mac.update(id);
        mac.update(b".");
        mac.update(ts);
        mac.update(b".");
        mac.update(body);
        for candidate in &candidates {
            if mac.clone().verify_slice(candidate).is_ok() {
                return Ok(());
            }
        }
    }
    Err(AuthError::Mismatch)
}

/// `base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>"))`, padded.
pub fn signature(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(), // unreachable: HMAC takes keys of any length
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The headers a Standard Webhooks sender sends: `webhook-id` (`msg_` and a hash of the
/// timestamp and body: pure, no randomness), `webhook-timestamp` (`now`) and a
/// `webhook-signature` entry per configured key (as a sender mid-rotation does).
pub fn sign(creds: &Credentials, body: &[u8], now: OffsetDateTime) -> Vec<(String, String)> {
    let mut out = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    if let Some(keys) = creds.get::<SigningKeys>() {
        let ts = now.unix_timestamp().to_string();
        let mut h = Sha256::new();
        h.update(ts.as_bytes());
        h.update(b".");
        h.update(body);
        let id = format!("msg_{}", &hex::encode(h.finalize())[..24]);
        let sigs: Vec<String> = keys
            .keys
            .iter()
            .map(|k| format!("v1,{}", signature(k, &id, &ts, body)))
            .collect();
        out.push((SPELLINGS[0].0.to_owned(), id));
        out.push((SPELLINGS[0].1.to_owned(), ts));
        out.push((SPELLINGS[0].2.to_owned(), sigs.join(" ")));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Normalization

/// `type` (a non-empty string of at most [`MAX_TYPE_LEN`] bytes) is required. The event
/// is the cleaned type; the dedup key the `webhook-id` (either spelling), or the body's
/// hash from a sender without one; the time the body's `timestamp` or `time` (RFC 3339),
/// when there is one.
pub fn normalize(
    headers: &Headers,
    body: &[u8],
    _now: OffsetDateTime,
) -> Result<Normalized, PayloadError> {
    let root = util::parse_object(body)?;
    let ty = util::require_str(&root, "type")?;
    if ty.is_empty() {
        return Err(PayloadError::WrongType("type", "a non-empty string"));
    }
    if ty.len() > MAX_TYPE_LEN {
        return Err(PayloadError::WrongType(
            "type",
            "a string of at most 200 bytes",
        ));
    }
    let id = SPELLINGS
        .iter()
        .find_map(|(id, _, _)| headers.get(id))
        .and_then(|id| std::str::from_utf8(id).ok())
        .filter(|id| !id.is_empty() && id.len() <= MAX_ID_LEN);
    let dedup_key = match id {
        Some(id) => id.to_owned(),
        None => util::body_hash(body),
    };
    let time = ["timestamp", "time"]
        .iter()
        .find_map(|k| util::get_str(&root, k).and_then(util::parse_iso8601));
    Ok(Normalized {
        event: event_type(ty),
        vendor_event: ty.to_owned(),
        dedup_key,
        subject: None,
        time,
        message: None,
        conversation: None,
        contact: None,
        reply: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_791_969_697).unwrap()
    }

    fn creds(secrets: &[&str]) -> Credentials {
        Credentials::new(SigningKeys::new(secrets, Some(Duration::from_secs(300))).unwrap())
    }

    fn check(creds: &Credentials, pairs: &[(&str, String)], body: &[u8]) -> Result<(), AuthError> {
        let h = Headers::from_pairs(pairs);
        verify(creds, &h, body, now())
    }

    /// The reference example of the Standard Webhooks specification.
    #[test]
    fn the_specification_s_example_verifies() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn one_matching_entry_of_any_key_suffices_and_spellings_do_not_mix() {
        let body = br#"{"type":"a.b"}"#;
        let old = "whsec_b2xkLWtleQ==";
        let new = "whsec_bmV3LWtleQ==";
        let signed = sign(&creds(&[old, new]), body, now());
        let h = |name: &str| signed.iter().find(|(n, _)| n == name).unwrap().1.clone();
        let (id, ts, sig) = (h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"));
        assert_eq!(sig.split(' ').count(), 2);
        for held in [&[old][..], &[new], &[new, old]] {
            let pairs = [
                ("webhook-id", id.clone()),
                ("webhook-timestamp", ts.clone()),
                ("webhook-signature", sig.clone()),
            ];
            assert_eq!(check(&creds(held), &pairs, body), Ok(()));
        }
        let svix = [
            ("svix-id", id.clone()),
            ("svix-timestamp", ts.clone()),
            ("svix-signature", sig.clone()),
        ];
        assert_eq!(check(&creds(&[new]), &svix, body), Ok(()));
        let mixed = [
            ("webhook-id", id.clone()),
            ("svix-timestamp", ts.clone()),
            ("svix-signature", sig.clone()),
        ];
        assert_eq!(check(&creds(&[new]), &mixed, body), Err(AuthError::Missing));
        let repeated = [
            ("webhook-id", id.clone()),
            ("webhook-id", id.clone()),
            ("webhook-timestamp", ts.clone()),
            ("webhook-signature", sig.clone()),
        ];
        assert_eq!(check(&creds(&[new]), &repeated, body), Err(AuthError::Repeated));
        let stranger = creds(&["whsec_c3RyYW5nZXI="]);
        let pairs = [
            ("webhook-id", id.clone()),
            ("webhook-timestamp", ts.clone()),
            ("webhook-signature", sig.clone()),
        ];
        assert_eq!(check(&stranger, &pairs, body), Err(AuthError::Mismatch));
    }

    #[test]
    fn stale_malformed_and_missing_are_refused() {
        let body = b"{}";
        let c = creds(&[DEMO_SECRET]);
        let at = |secs: i64| {
            let s = sign(&c, body, OffsetDateTime::from_unix_timestamp(secs).unwrap());
            s.into_iter().skip(1).collect::<Vec<_>>()
        };
        let to_pairs = |v: &[(String, String)]| {
            v.iter()
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect::<Vec<(String, String)>>()
        };
        let run = |pairs: &[(String, String)]| {
            let h = Headers::from_pairs(pairs);
            verify(&c, &h, body, now())
        };
        assert_eq!(run(&to_pairs(&at(1_791_969_697 + 300))), Ok(()));
        assert_eq!(run(&to_pairs(&at(1_791_969_697 - 301))), Err(AuthError::Stale));
        let mut p = to_pairs(&at(1_791_969_697));
        p[2].1 = "v1,!!!".into();
        assert_eq!(run(&p), Err(AuthError::Malformed));
        p[2].1 = "v2,abc".into();
        assert_eq!(run(&p), Err(AuthError::Malformed));
        let mut p = to_pairs(&at(1_791_969_697));
        p[1].1 = format!("0{}", p[1].1);
        assert_eq!(run(&p), Err(AuthError::Malformed));
        let p = to_pairs(&at(1_791_969_697));
        assert_eq!(run(&p[..2]), Err(AuthError::Missing));
        assert_eq!(run(&[]), Err(AuthError::Missing));
        let h = Headers::new();
        let other = Credentials::new(crate::kommunicate::Token(hookrelay_common::Secret::new("x")));
        assert_eq!(verify(&other, &h, body, now()), Err(AuthError::WrongKind));
    }

    #[test]
    fn bad_secrets_are_named_by_position_never_echoed() {
        let e = SigningKeys::new(&["whsec_b2s=", "whsec_not*base64"], None).unwrap_err();
        assert!(e.contains("entry 2") && !e.contains("not*base64"), "{e}");
        assert!(SigningKeys::new(&["whsec_"], None).is_err());
        assert!(SigningKeys::new::<&str>(&[], None).is_err());
        // Prefix optional, padding optional (as the official libraries take them).
        assert_eq!(decode_secret("b2s"), decode_secret("whsec_b2s="));
    }

    #[test]
    fn type_routes_and_the_id_comes_from_the_header() {
        let mut h = Headers::new();
        h.push("svix-id", b"msg_1");
        let n = normalize(&h, br#"{"type":"Invoice.Paid-Now","timestamp":"2026-10-14T09:21:37Z"}"#, now())
            .unwrap();
        assert_eq!(n.event, "invoice.paid_now");
        assert_eq!(n.vendor_event, "Invoice.Paid-Now");
        assert_eq!(n.dedup_key, "msg_1");
        assert_eq!(n.time, Some(now()));
        assert!(n.message.is_none() && n.conversation.is_none() && n.contact.is_none());
        let none = Headers::new();
        let n = normalize(&none, br#"{"type":"x"}"#, now()).unwrap();
        assert!(n.dedup_key.starts_with("sha256:"));
        assert_eq!(n.time, None);
        assert_eq!(normalize(&none, b"{}", now()), Err(PayloadError::Missing("type")));
        assert_eq!(
            normalize(&none, br#"{"type":7}"#, now()),
            Err(PayloadError::WrongType("type", "a string"))
        );
        assert_eq!(
            normalize(&none, br#"{"type":""}"#, now()),
            Err(PayloadError::WrongType("type", "a non-empty string"))
        );
        let long = format!(r#"{{"type":"{}"}}"#, "a".repeat(201));
        assert!(normalize(&none, long.as_bytes(), now()).is_err());
        assert_eq!(normalize(&none, b"[]", now()), Err(PayloadError::NotObject));
    }
}
