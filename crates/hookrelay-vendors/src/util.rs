//! What the vendors share: body parsing, JSON field access, id and time conversions,
//! hashing and constant-time comparison.
//!
//! Every accessor is total: a field that is absent, `null` or of another type gives
//! `None`, never a panic and never a guessed value.

use crate::PayloadError;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::format_description::well_known::{Iso8601, Rfc3339};
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// A JSON object.
pub type Object = Map<String, Value>;

/// Separator between the parts of a dedup key (ASCII unit separator). Parts are escaped
/// by [`join_key`] so that no two different part lists give the same key.
pub const KEY_SEP: char = '\u{1f}';

// ---------------------------------------------------------------------------------------
// Body

/// Parse a body that must be one JSON object. serde_json's recursion limit (128 levels)
/// turns absurdly nested input into an error instead of a stack overflow.
pub fn parse_object(body: &[u8]) -> Result<Object, PayloadError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| PayloadError::NotJson(e.to_string()))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(PayloadError::NotObject),
    }
}

/// A field the vendor always sends as a string.
pub fn require_str<'a>(obj: &'a Object, key: &'static str) -> Result<&'a str, PayloadError> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(PayloadError::Missing(key)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(PayloadError::WrongType(key, "a string")),
    }
}

/// A field the vendor always sends as an object.
pub fn require_obj<'a>(obj: &'a Object, key: &'static str) -> Result<&'a Object, PayloadError> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(PayloadError::Missing(key)),
        Some(Value::Object(o)) => Ok(o),
        Some(_) => Err(PayloadError::WrongType(key, "an object")),
    }
}

// ---------------------------------------------------------------------------------------
// Field access

/// An id as text: strings as they are, integers in decimal. Ids are always strings in
/// the output. Empty strings, floats, booleans, objects and `null` are no id.
pub fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(i.to_string())
            } else {
                n.as_u64().map(|u| u.to_string())
            }
        }
        _ => None,
    }
}

/// `obj[key]` as an id (see [`id_string`]).
pub fn get_id(obj: &Object, key: &str) -> Option<String> {
    obj.get(key).and_then(id_string)
}

/// `obj[key]` when it is a string.
pub fn get_str<'a>(obj: &'a Object, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

/// `obj[key]` when it is a string, owned.
pub fn get_string(obj: &Object, key: &str) -> Option<String> {
    get_str(obj, key).map(str::to_owned)
}

/// `obj[key]` when it is a non-empty string, owned (for URLs, where `""` means none).
pub fn get_nonempty_string(obj: &Object, key: &str) -> Option<String> {
    get_str(obj, key)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// `obj[key]` when it is an object.
pub fn get_obj<'a>(obj: &'a Object, key: &str) -> Option<&'a Object> {
    obj.get(key).and_then(Value::as_object)
}

/// `obj[key]` when it is an array.
pub fn get_array<'a>(obj: &'a Object, key: &str) -> Option<&'a Vec<Value>> {
    obj.get(key).and_then(Value::as_array)
}

/// `obj[key]` when it is a non-negative integer (or a string of digits).
pub fn get_u64(obj: &Object, key: &str) -> Option<u64> {
    match obj.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if is_digits(s) => s.parse().ok(),
        _ => None,
    }
}

/// Follow a path of object keys.
pub fn get_path<'a>(obj: &'a Object, path: &[&str]) -> Option<&'a Value> {
    let (last, init) = path.split_last()?;
    let mut cur = obj;
    for key in init {
        cur = get_obj(cur, key)?;
    }
    cur.get(*last)
}

/// Whether `s` is non-empty and all ASCII digits.
pub fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

// ---------------------------------------------------------------------------------------
// Time. Zero and negative epoch values mean "unset" (Chatwoot writes `0` for that), and
// values outside the representable range are `None`, never a panic.

fn epoch_integer(v: &Value) -> Option<i64> {
    let n = match v {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) if is_digits(s) => s.parse().ok()?,
        _ => return None,
    };
    (n > 0).then_some(n)
}

/// Integer epoch seconds (or a string of digits).
pub fn from_epoch_secs(v: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(epoch_integer(v)?).ok()
}

/// Integer epoch milliseconds (or a string of digits).
pub fn from_epoch_millis(v: &Value) -> Option<OffsetDateTime> {
    let ms = epoch_integer(v)?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// Epoch seconds with a fraction (Chatwoot's `updated_at: 1791969697.4483407`), kept to
/// the microsecond (an f64 holds no more precision than that at today's epoch). Integers
/// are accepted too.
pub fn from_float_secs(v: &Value) -> Option<OffsetDateTime> {
    let f = match v {
        Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    if !f.is_finite() || f <= 0.0 || f >= 253_402_300_800.0 {
        return None; // unset, or past 9999-12-31
    }
    let secs = f.trunc();
    let mut micros = ((f - secs) * 1_000_000.0).round() as i128;
    let mut secs = secs as i128;
    if micros >= 1_000_000 {
        secs += 1;
        micros -= 1_000_000;
    }
    OffsetDateTime::from_unix_timestamp_nanos(secs * 1_000_000_000 + micros * 1_000).ok()
}

/// An ISO-8601 / RFC 3339 string (`2026-10-14T09:21:37.412Z`), or the 2020-era Chatwoot
/// form `2020-03-03 13:05:57 UTC`.
pub fn parse_iso8601(s: &str) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    if let Ok(t) = OffsetDateTime::parse(s, &Iso8601::DEFAULT) {
        return Some(t);
    }
    let legacy = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    PrimitiveDateTime::parse(s, legacy)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

/// A string value in ISO-8601 (see [`parse_iso8601`]).
pub fn from_iso8601(v: &Value) -> Option<OffsetDateTime> {
    v.as_str().and_then(parse_iso8601)
}

/// A time whose unit follows from its JSON type, for vendors (Chatwoot) whose numbers are
/// always seconds: a string is ISO-8601, an integer is epoch seconds, a float is epoch
/// seconds with a fraction.
pub fn from_secs_or_iso(v: &Value) -> Option<OffsetDateTime> {
    match v {
        Value::String(_) => from_iso8601(v).or_else(|| from_epoch_secs(v)),
        Value::Number(n) if n.is_f64() => from_float_secs(v),
        Value::Number(_) => from_epoch_secs(v),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Hashing and keys

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The last-resort dedup key: `sha256:<hex of the raw body>`.
pub fn body_hash(body: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(body))
}

/// `sha256:<hex>` of a JSON value's compact serialization (deterministic for the same
/// input bytes).
pub fn value_hash(v: &Value) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    body_hash(&bytes)
}

/// Join dedup-key parts with [`KEY_SEP`]. A backslash or separator inside a part is
/// escaped, so the encoding is injective: different part lists never give the same key.
pub fn join_key<S: AsRef<str>>(parts: &[S]) -> String {
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(KEY_SEP);
        }
        for c in part.as_ref().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                KEY_SEP => out.push_str("\\x1f"),
                c => out.push(c),
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Credentials

/// Constant-time equality of two byte strings. A length mismatch is `false` (the length
/// of a credential is not treated as secret); equal lengths are compared without
/// short-circuiting on content.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// `Basic <base64(user_info)>`, the value of a Basic-scheme header.
pub fn basic_header(user_info: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_info)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookrelay_common::event::rfc3339;
    use serde_json::json;

    #[test]
    fn parse_object_errors() {
        assert!(matches!(parse_object(b""), Err(PayloadError::NotJson(_))));
        assert!(matches!(
            parse_object(b"{\"a\":"),
            Err(PayloadError::NotJson(_))
        ));
        assert_eq!(parse_object(b"[1]"), Err(PayloadError::NotObject));
        assert_eq!(parse_object(b"null"), Err(PayloadError::NotObject));
        assert_eq!(parse_object(b"\"x\""), Err(PayloadError::NotObject));
        assert_eq!(parse_object(b"{\"a\":1}").unwrap().len(), 1);
    }

    #[test]
    fn not_json_carries_serde_message() {
        match parse_object(b"{\"a\" 1}") {
            Err(PayloadError::NotJson(m)) => assert!(m.contains("line 1"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ids_are_strings() {
        assert_eq!(id_string(&json!(4821)).as_deref(), Some("4821"));
        assert_eq!(id_string(&json!(-3)).as_deref(), Some("-3"));
        assert_eq!(
            id_string(&json!(u64::MAX)).as_deref(),
            Some("18446744073709551615")
        );
        assert_eq!(id_string(&json!("18233")).as_deref(), Some("18233"));
        assert_eq!(id_string(&json!("")), None);
        assert_eq!(id_string(&json!(1.5)), None);
        assert_eq!(id_string(&json!(true)), None);
        assert_eq!(id_string(&json!(null)), None);
        assert_eq!(id_string(&json!({"id": 1})), None);
    }

    #[test]
    fn require_helpers() {
        let o = parse_object(br#"{"s":"x","n":1,"o":{},"z":null}"#).unwrap();
        assert_eq!(require_str(&o, "s"), Ok("x"));
        assert_eq!(
            require_str(&o, "n"),
            Err(PayloadError::WrongType("n", "a string"))
        );
        assert_eq!(require_str(&o, "q"), Err(PayloadError::Missing("q")));
        assert_eq!(require_str(&o, "z"), Err(PayloadError::Missing("z")));
        assert!(require_obj(&o, "o").is_ok());
        assert_eq!(
            require_obj(&o, "s"),
            Err(PayloadError::WrongType("s", "an object"))
        );
    }

    #[test]
    fn path_and_scalars() {
        let o = parse_object(br#"{"a":{"b":{"c":"d"}},"n":"42","m":-1}"#).unwrap();
        assert_eq!(get_path(&o, &["a", "b", "c"]), Some(&json!("d")));
        assert_eq!(get_path(&o, &["a", "x", "c"]), None);
        assert_eq!(get_path(&o, &[]), None);
        assert_eq!(get_u64(&o, "n"), Some(42));
        assert_eq!(get_u64(&o, "m"), None);
    }

    #[test]
    fn epoch_units() {
        let s = from_epoch_secs(&json!(1_791_969_697)).unwrap();
        assert_eq!(rfc3339(s), "2026-10-14T09:21:37Z");
        let ms = from_epoch_millis(&json!(1_791_969_697_412_i64)).unwrap();
        assert_eq!(rfc3339(ms), "2026-10-14T09:21:37.412Z");
        let f = from_float_secs(&json!(1_791_969_697.448_340_7)).unwrap();
        assert_eq!(rfc3339(f), "2026-10-14T09:21:37.448341Z");
        assert_eq!(from_epoch_secs(&json!(0)), None);
        assert_eq!(from_epoch_secs(&json!(-5)), None);
        assert_eq!(from_epoch_secs(&json!(i64::MAX)), None);
        assert_eq!(from_epoch_millis(&json!(i64::MAX)).map(|_| ()), None);
        assert_eq!(from_float_secs(&json!(1e300)), None);
        assert_eq!(from_epoch_secs(&json!("1791969697")), Some(s));
        assert_eq!(from_epoch_secs(&json!("17x")), None);
    }

    #[test]
    fn iso_strings() {
        let t = parse_iso8601("2026-10-14T09:21:37.123Z").unwrap();
        assert_eq!(rfc3339(t), "2026-10-14T09:21:37.123Z");
        let t = parse_iso8601("2026-10-14T11:21:37+02:00").unwrap();
        assert_eq!(rfc3339(t), "2026-10-14T09:21:37Z");
        let t = parse_iso8601("2020-03-03 13:05:57 UTC").unwrap();
        assert_eq!(rfc3339(t), "2020-03-03T13:05:57Z");
        assert_eq!(parse_iso8601("yesterday"), None);
        assert_eq!(
            from_secs_or_iso(&json!(1_791_969_658))
                .map(rfc3339)
                .as_deref(),
            Some("2026-10-14T09:20:58Z")
        );
        assert_eq!(
            from_secs_or_iso(&json!("2026-10-14T09:21:37.412Z"))
                .map(rfc3339)
                .as_deref(),
            Some("2026-10-14T09:21:37.412Z")
        );
    }

    #[test]
    fn hashes() {
        assert_eq!(
            body_hash(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_ne!(body_hash(b"a"), body_hash(b"b"));
    }

    #[test]
    fn join_key_is_injective() {
        assert_eq!(join_key(&["a", "b"]), "a\u{1f}b");
        assert_ne!(join_key(&["a\u{1f}b", "c"]), join_key(&["a", "b\u{1f}c"]));
        assert_ne!(join_key(&["a\\", "x1f"]), join_key(&["a\u{1f}", ""]));
        assert_ne!(join_key(&["ab"]), join_key(&["a", "b"]));
    }

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(!ct_eq(b"", b"a"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn basic_header_value() {
        assert_eq!(basic_header(b"abcdef"), "Basic YWJjZGVm");
        assert_eq!(
            basic_header(b"relayuser:s3cretPa55"),
            "Basic cmVsYXl1c2VyOnMzY3JldFBhNTU="
        );
    }
}
