//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`
//! with the key from a `whsec_<base64>` secret.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// The HMAC key of a `whsec_<base64 key>` secret. The prefix is optional (as in the
/// Standard Webhooks libraries); the key must be non-empty base64.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret.trim();
    let b64 = b64.strip_prefix(PREFIX).unwrap_or(b64);
    if b64.is_empty() {
        return Err("is missing (expected whsec_<base64 key>)".to_owned());
    }
    // Never echo the secret in the error.
    let key = STANDARD
        .decode(b64)
        .map_err(|_| "is not whsec_<base64 key> (the key is not valid base64)".to_owned())?;
    if key.is_empty() {
        return Err("has an empty key".to_owned());
    }
    Ok(key)
}

/// The `webhook-signature` header value for one delivery.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // The example from the Standard Webhooks specification / svix documentation.
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rejects_bad_secrets_without_echoing_them() {
        assert!(decode_secret("").is_err());
        assert!(decode_secret("whsec_").is_err());
        let e = decode_secret("whsec_not*base64!").unwrap_err();
        assert!(!e.contains("not*base64"));
        assert_eq!(decode_secret("c2VjcmV0").unwrap(), b"secret");
    }
}
