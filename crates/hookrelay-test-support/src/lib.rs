//! Test support, outside the relay: the webhook path's safety invariants as one
//! executable check, shared by the fuzz target (`fuzz/`), the property tests and the
//! regression corpus, so all of them assert exactly the same thing on exactly the code
//! the endpoint runs (`hookrelay::routes::webhook::process`), for every vendor of the
//! registry (`Vendor::ALL`):
//!
//! 1. no input panics (the caller notices);
//! 2. an accepted request had genuine credentials, judged here independently of the
//!    vendor code, and a JSON object as its body;
//! 3. an accepted request yields an envelope: valid JSON whose `data.raw` is the body's
//!    bytes exactly (JSON whitespace around it aside), whose `id` and `type` are the
//!    message's, and whose `id` is the same when the same request is processed again;
//! 4. a rejected request yields no envelope (by type) and one of 415, 401 or 400, with
//!    400 only for a request that was authenticated (payload details are never told to
//!    someone without credentials).
//!
//! The credential oracle of point 2 is each vendor's own (`Contract::genuine`, in the
//! vendor's file). It also decodes the fuzz target's byte format ([`decode`],
//! [`run_fuzz_bytes`]), so a crash file replays in the ordinary test suite, and makes the
//! seeds of the fuzz corpus and the regression corpus ([`seeds`]).

pub mod seeds;

use actix_web::ResponseError;
use hookrelay::error::ApiError;
use hookrelay::routes::webhook::{process, Accepted};
use hookrelay::settings::Source;
use hookrelay_vendors::{Credentials, Headers, Vendor};
use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;

/// The fuzz target's clock: the fixtures' world, 2026-10-14T09:21:37Z.
pub const FUZZ_NOW: i64 = 1_791_969_697;

/// Clock skews (seconds) between signing and checking that a fuzz input can pick: the
/// edges of the usual 300 s replay window and one far outside it.
const SKEWS: [i64; 8] = [0, 1, -1, 300, 301, -300, -301, 4_000_000_000];

/// What the relay answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 200, with this routing key.
    Accepted(String),
    /// This status.
    Rejected(u16),
}

/// A source of `vendor` named after it, with the vendor's demo credentials (the
/// fixtures' values) or none.
pub fn source(vendor: Vendor, authenticated: bool) -> Source {
    let credentials = if authenticated {
        vendor.demo_credentials()
    } else {
        Credentials::NONE
    };
    Source::new(vendor.name(), vendor, credentials)
}

/// One request as the fuzzers describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FuzzInput {
    /// Put the vendor's own (valid) credential headers first.
    pub sign: bool,
    /// The input's headers replace signed ones of the same name instead of repeating them.
    pub replace: bool,
    /// The source is `allow_unauthenticated`.
    pub unauthenticated: bool,
    /// Seconds between the signing clock and the checking clock.
    pub skew: i64,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// The fuzzers' byte format, chosen so a seed is a control byte, a newline and a
/// fixture file (see `fuzz/seed.sh`):
///
/// ```text
/// byte 0   control: bit 0 sign, bit 1 replace, bit 2 unauthenticated, bits 3-5 skew
/// then     header lines `name: value\n`, ended by an empty line
/// rest     the body, verbatim
/// ```
pub fn decode(data: &[u8]) -> FuzzInput {
    let Some((&control, mut rest)) = data.split_first() else {
        return FuzzInput::default();
    };
    let mut headers = Vec::new();
    loop {
        let (line, after) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        rest = after;
        if line.is_empty() {
            break;
        }
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &[][..]),
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        headers.push((
            String::from_utf8_lossy(name).trim().to_owned(),
            value.to_vec(),
        ));
        if rest.is_empty() {
            break;
        }
    }
    FuzzInput {
        sign: control & 1 != 0,
        replace: control & 2 != 0,
        unauthenticated: control & 4 != 0,
        skew: SKEWS[usize::from((control >> 3) & 7)],
        headers,
        body: rest.to_vec(),
    }
}

/// The fuzz target's input: the vendor's name and a newline, then [`decode`]'s format
/// for that vendor. An input naming no vendor of the registry is `Ok(None)` (nothing to
/// check); otherwise [`run_fuzz_input`]'s result.
pub fn run_fuzz_bytes(data: &[u8]) -> Result<Option<(Vendor, Verdict)>, String> {
    let Some(nl) = data.iter().position(|b| *b == b'\n') else {
        return Ok(None);
    };
    let Some(vendor) = std::str::from_utf8(&data[..nl])
        .ok()
        .and_then(Vendor::from_name)
    else {
        return Ok(None);
    };
    run_fuzz_input(vendor, &data[nl + 1..]).map(|v| Some((vendor, v)))
}

/// Frame `input` (in [`decode`]'s format) for [`run_fuzz_bytes`].
pub fn frame(vendor: Vendor, input: &[u8]) -> Vec<u8> {
    [vendor.name().as_bytes(), b"\n", input].concat()
}

/// Decode one fuzz input for `vendor`, assemble its headers and run [`check`].
pub fn run_fuzz_input(vendor: Vendor, data: &[u8]) -> Result<Verdict, String> {
    let input = decode(data);
    let source = source(vendor, !input.unauthenticated);
    let now = OffsetDateTime::from_unix_timestamp(FUZZ_NOW).expect("a valid time");
    let headers = assemble(&source, &input, now);
    check(&source, &headers, &input.body, now)
}

/// The request's header list: the vendor's signed headers (when asked for, signed at
/// `now + skew`), then the input's own.
pub fn assemble(source: &Source, input: &FuzzInput, now: OffsetDateTime) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    if input.sign {
        // An unauthenticated source still gets realistic headers.
        let signing_creds = if source.credentials.is_none() {
            source.vendor.demo_credentials()
        } else {
            source.credentials.clone()
        };
        let at = now
            .checked_add(time::Duration::seconds(input.skew))
            .unwrap_or(now);
        for (name, value) in source.vendor.sign(&signing_creds, &input.body, at) {
            let replaced = input.replace
                && input
                    .headers
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case(&name));
            if !replaced {
                out.push((name, value.into_bytes()));
            }
        }
    }
    out.extend(input.headers.iter().cloned());
    out
}

#[derive(Deserialize)]
struct Envelope<'a> {
    specversion: String,
    id: String,
    source: String,
    #[serde(rename = "type")]
    ty: String,
    vendor: String,
    #[serde(borrow)]
    data: EnvelopeData<'a>,
}

#[derive(Deserialize)]
struct EnvelopeData<'a> {
    vendor: String,
    source: String,
    #[serde(borrow)]
    raw: &'a RawValue,
}

/// Run the endpoint's pure path on one request and check every invariant (module doc).
/// `Ok` carries the verdict; `Err` says which invariant broke.
pub fn check(
    source: &Source,
    header_pairs: &[(String, Vec<u8>)],
    body: &[u8],
    now: OffsetDateTime,
) -> Result<Verdict, String> {
    let headers = Headers::from_pairs(header_pairs);
    let genuine = genuine(source, &headers, body, now);
    match process(source, &headers, body, now) {
        Err(e) => {
            let status = e.status_code().as_u16();
            match (&e, genuine) {
                (ApiError::UnsupportedMediaType, _) if headers.get("content-type").is_some() => {}
                (ApiError::Unauthorized { .. }, _) => {}
                // A JSON object can only lack a field the vendor always sends; any other
                // 400 for one (an envelope failure, say) would be a bug hiding as a 400.
                (ApiError::InvalidPayload(detail), true)
                    if !is_object(body)
                        || detail.starts_with("missing required field")
                        || detail.starts_with("field `") => {}
                _ => return Err(format!("rejected with {status} ({e}); genuine={genuine}")),
            }
            Ok(Verdict::Rejected(status))
        }
        Ok(Accepted { msg, .. }) => {
            if !genuine {
                return Err("accepted a request whose credentials are not genuine".into());
            }
            if !is_object(body) {
                return Err("accepted a body that is not one JSON object".into());
            }
            let env: Envelope<'_> = serde_json::from_slice(&msg.body)
                .map_err(|e| format!("the envelope is not the expected JSON: {e}"))?;
            let trimmed = trim_json_ws(body);
            if env.data.raw.get().as_bytes() != trimmed {
                return Err("data.raw is not the body's bytes".into());
            }
            let vendor = source.vendor.name();
            let expected_source = format!("/webhooks/{}", source.name);
            let key_ok = msg
                .routing_key
                .strip_prefix(source.vendor.routing_prefix(&source.name))
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|rest| {
                    !rest.is_empty()
                        && rest.bytes().all(|b| {
                            b.is_ascii_lowercase() || b.is_ascii_digit() || b"._".contains(&b)
                        })
                });
            if !key_ok
                || env.ty != msg.routing_key
                || env.id != msg.id
                || env.specversion != "1.0"
                || env.source != expected_source
                || env.vendor != vendor
                || env.data.vendor != vendor
                || env.data.source != *source.name
            {
                return Err(format!(
                    "envelope attributes are off: type {:?}, id {:?}",
                    env.ty, env.id
                ));
            }
            // The same delivery must get the same id (the dedup window relies on it).
            match process(source, &headers, body, now) {
                Ok(again) if again.msg.id == msg.id => {}
                _ => return Err("processing the same request twice changed its id".into()),
            }
            Ok(Verdict::Accepted(msg.routing_key))
        }
    }
}

fn is_object(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body).is_ok()
}

fn trim_json_ws(mut b: &[u8]) -> &[u8] {
    let ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r');
    while b.first().is_some_and(ws) {
        b = &b[1..];
    }
    while b.last().is_some_and(ws) {
        b = &b[..b.len() - 1];
    }
    b
}

/// Whether the request carries the source's credentials, decided by the vendor's own
/// oracle (from its contract and its `sign`, not from `verify`).
fn genuine(source: &Source, headers: &Headers<'_>, body: &[u8], now: OffsetDateTime) -> bool {
    source.credentials.is_none()
        || source
            .vendor
            .contract()
            .genuine(&source.credentials, headers, body, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookrelay_vendors::testing::signed_value;
    use hookrelay_vendors::{chatwoot, cometchat, kommunicate};

    #[test]
    fn decode_splits_control_headers_and_body() {
        let i = decode(b"\x0bX-A: 1\nb:\n\n{\"k\":1}\n");
        assert!(i.sign && i.replace && !i.unauthenticated);
        assert_eq!(i.skew, SKEWS[1]);
        assert_eq!(
            i.headers,
            vec![("X-A".to_owned(), b"1".to_vec()), ("b".to_owned(), vec![])]
        );
        assert_eq!(i.body, b"{\"k\":1}\n");
        assert_eq!(decode(b""), FuzzInput::default());
        assert_eq!(decode(b"\x01\n{}").body, b"{}");
        assert_eq!(decode(b"\x00no-newline").headers.len(), 1);
    }

    #[test]
    fn a_signed_fixture_is_accepted_and_a_forged_one_refused() {
        let body = br#"{"key":"k-1","groupId":7,"message":"hi"}"#;
        let mut data = b"\x01\n".to_vec();
        data.extend_from_slice(body);
        assert_eq!(
            run_fuzz_input(kommunicate::VENDOR, &data),
            Ok(Verdict::Accepted("kommunicate.message.created".into()))
        );
        let mut forged = b"\x00authentication: Basic d3Jvbmc=\n\n".to_vec();
        forged.extend_from_slice(body);
        assert_eq!(
            run_fuzz_input(kommunicate::VENDOR, &forged),
            Ok(Verdict::Rejected(401))
        );
        // A stale Chatwoot signature is refused; one at the window's edge passes.
        let cw = br#"{"event":"message_created","id":1}"#;
        let stale = [&[0x01 | (4 << 3), b'\n'][..], cw].concat();
        assert_eq!(
            run_fuzz_input(chatwoot::VENDOR, &stale),
            Ok(Verdict::Rejected(401))
        );
        let edge = [&[0x01 | (3 << 3), b'\n'][..], cw].concat();
        assert!(matches!(
            run_fuzz_input(chatwoot::VENDOR, &edge),
            Ok(Verdict::Accepted(_))
        ));
    }

    #[test]
    fn every_vendor_s_demo_credentials_sign_an_accepted_request() {
        for &vendor in Vendor::ALL {
            let (name, body) = seeds::minimal(vendor);
            let verdict = run_fuzz_input(vendor, &[&[0x01, b'\n'][..], body.as_bytes()].concat());
            assert!(
                matches!(verdict, Ok(Verdict::Accepted(_))),
                "{name}: {verdict:?}"
            );
            let verdict = run_fuzz_bytes(&frame(
                vendor,
                &[&[0x00, b'\n'][..], body.as_bytes()].concat(),
            ));
            assert_eq!(
                verdict,
                Ok(Some((vendor, Verdict::Rejected(401)))),
                "{name}"
            );
        }
        assert_eq!(run_fuzz_bytes(b"no-such-vendor\n\x01\n{}"), Ok(None));
    }

    #[test]
    fn the_credential_oracle_follows_the_vendor_contracts() {
        let now = OffsetDateTime::from_unix_timestamp(FUZZ_NOW).unwrap();
        let body = b"{}";
        let judge = |vendor: Vendor, pairs: &[(&str, &str)]| {
            let h = Headers::from_pairs(pairs);
            genuine(&source(vendor, true), &h, body, now)
        };
        let cw = source(chatwoot::VENDOR, true);
        let signed = cw.vendor.sign(&cw.credentials, body, now);
        let ts =
            String::from_utf8(signed_value(&signed, chatwoot::TIMESTAMP_HEADER).unwrap()).unwrap();
        let sig =
            String::from_utf8(signed_value(&signed, chatwoot::SIGNATURE_HEADER).unwrap()).unwrap();
        let ok = [
            ("x-chatwoot-timestamp", ts.as_str()),
            ("x-chatwoot-signature", sig.as_str()),
        ];
        assert!(judge(chatwoot::VENDOR, &ok));
        let upper = sig.to_uppercase();
        assert!(!judge(
            chatwoot::VENDOR,
            &[
                ("x-chatwoot-timestamp", &ts),
                ("x-chatwoot-signature", &upper)
            ]
        ));
        let zero_padded = format!("0{ts}");
        assert!(!judge(
            chatwoot::VENDOR,
            &[
                ("x-chatwoot-timestamp", &zero_padded),
                ("x-chatwoot-signature", &sig)
            ]
        ));
        // relayuser:s3cretPa55 -> cmVsYXl1c2VyOnMzY3JldFBhNTU= ; any case of "Basic",
        // padding optional; anything else is not genuine.
        assert!(judge(
            cometchat::VENDOR,
            &[("authorization", "bAsIc cmVsYXl1c2VyOnMzY3JldFBhNTU")]
        ));
        assert!(judge(
            cometchat::VENDOR,
            &[("authorization", "Basic cmVsYXl1c2VyOnMzY3JldFBhNTU=")]
        ));
        assert!(!judge(
            cometchat::VENDOR,
            &[("authorization", "Basic cmVsYXl1c2VyOnMzY3JldFBhNTV=")]
        ));
        assert!(!judge(
            cometchat::VENDOR,
            &[
                ("authorization", "Basic cmVsYXl1c2VyOnMzY3JldFBhNTU="),
                ("authorization", "Basic cmVsYXl1c2VyOnMzY3JldFBhNTU="),
            ]
        ));
        assert!(judge(
            kommunicate::VENDOR,
            &[("Authentication", "Basic YWJjZGVm")]
        ));
        assert!(!judge(
            kommunicate::VENDOR,
            &[("Authentication", "basic YWJjZGVm")]
        ));
        assert!(!judge(
            kommunicate::VENDOR,
            &[("Authorization", "Basic YWJjZGVm")]
        ));
    }
}
