//! Vendor code, pure and synchronous: raw bytes + headers + credentials in, a verdict and
//! a normalized event out. No I/O, no clock (callers pass `now`), so every rule here is
//! unit-tested without anything running and cannot get acks, retries or shutdown wrong.
//!
//! # Layout
//!
//! - this file: the shared types ([`Headers`], [`Credentials`], [`Verified`],
//!   [`Normalized`], the errors) and the registry ([`Vendor`]).
//! - [`kommunicate`], [`chatwoot`], [`cometchat`]: one file per vendor, each with
//!   `verify`, `normalize` and `sign` (what the vendor itself sends, for clients and tests).
//! - [`util`]: JSON field access, id and time conversions the vendors share.
//!
//! Adding a vendor: one new file with those three functions, one variant in [`Vendor`].

pub mod chatwoot;
pub mod cometchat;
pub mod kommunicate;
pub mod util;

use hookrelay_common::event::{Contact, Conversation, Message};
use hookrelay_common::Secret;
use std::borrow::Cow;
use std::time::Duration;
use time::OffsetDateTime;

/// Request headers as received: lower-case names, raw value bytes, repeats kept (a
/// repeated credential header is an attack, not something to pick from).
#[derive(Debug, Default, Clone)]
pub struct Headers<'a> {
    pairs: Vec<(Cow<'a, str>, &'a [u8])>,
}

/// A header that must appear at most once appeared more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeated;

impl<'a> Headers<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `n` headers without growing.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            pairs: Vec::with_capacity(n),
        }
    }

    /// Headers from (name, value) pairs, in order.
    pub fn from_pairs<N, V>(pairs: impl IntoIterator<Item = &'a (N, V)>) -> Self
    where
        N: AsRef<str> + 'a,
        V: AsRef<[u8]> + 'a,
    {
        let mut h = Self::new();
        for (n, v) in pairs {
            h.push(n, v.as_ref());
        }
        h
    }

    /// Add one header. A name that is already lower case (as every name from the HTTP
    /// server is) is borrowed, not copied.
    pub fn push<N: AsRef<str> + ?Sized>(&mut self, name: &'a N, value: &'a [u8]) {
        let name = name.as_ref();
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
        self.pairs.push((name, value));
    }

    /// The first value of `name` (case-insensitive), if any.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The value of `name` when it appears at most once.
    pub fn get_unique(&self, name: &str) -> Result<Option<&'a [u8]>, Repeated> {
        let mut found = None;
        for (n, v) in &self.pairs {
            if n.eq_ignore_ascii_case(name) {
                if found.is_some() {
                    return Err(Repeated);
                }
                found = Some(*v);
            }
        }
        Ok(found)
    }
}

/// A source's credentials, as its vendor uses them.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// Kommunicate: `Authentication: Basic base64(token)`.
    Token(Secret),
    /// Chatwoot: HMAC-SHA256 over `<timestamp>.<raw body>`, timestamp within `tolerance`
    /// of now (`None` turns the replay window off, for test vectors).
    Hmac {
        secret: Secret,
        tolerance: Option<Duration>,
    },
    /// CometChat: `Authorization: Basic base64(username:password)`.
    Basic { username: Secret, password: Secret },
    /// `allow_unauthenticated = true`: every request passes.
    None,
}

/// Why a request was not authenticated. All of these answer 401; the variant is for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("credentials missing")]
    Missing,
    #[error("credential header repeated")]
    Repeated,
    #[error("credentials malformed")]
    Malformed,
    #[error("credentials do not match")]
    Mismatch,
    #[error("signature timestamp outside the tolerance window")]
    Stale,
    #[error("this source's credentials do not fit its vendor")]
    WrongKind,
}

/// Why an authenticated body was refused. Answers 400 with the message as `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("body is not a JSON object")]
    NotObject,
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("field `{0}` must be {1}")]
    WrongType(&'static str, &'static str),
}

/// Proof that a request passed its source's check. Only [`Vendor::verify`] makes one, so
/// nothing unverified can be normalized, and so nothing unverified can be published.
#[derive(Debug)]
pub struct Verified<'a> {
    headers: &'a Headers<'a>,
    body: &'a [u8],
}

impl<'a> Verified<'a> {
    pub fn headers(&self) -> &'a Headers<'a> {
        self.headers
    }
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
}

/// What normalization produced. The relay adds the envelope (id, type, times, raw).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Normalized {
    /// Normalized event: `message.created`, ..., or `unmapped.<sanitized vendor event>`
    /// (see `hookrelay_common::routing::unmapped_event`).
    pub event: String,
    /// The vendor's own event name (`message_created`, `after_message`, `message` for
    /// Kommunicate, which has no event field).
    pub vendor_event: String,
    /// The vendor's own id for this delivery, per VENDORS.md's idempotency rules; the
    /// relay hashes it with the source and `vendor_event` into the event id. Fall back to
    /// `util::body_hash` (`sha256:<hex>`) where the vendor gives none.
    pub dedup_key: String,
    /// CloudEvents `subject`: the conversation id, when there is one.
    pub subject: Option<String>,
    /// When it happened, from the payload (the relay uses receipt time when `None`).
    pub time: Option<OffsetDateTime>,
    pub message: Option<Message>,
    pub conversation: Option<Conversation>,
    pub contact: Option<Contact>,
    /// A synchronous vendor's answer body (CometChat `before_message`: `{}`); `None` means
    /// the usual `{"id","type","duplicate"}`.
    pub reply: Option<serde_json::Value>,
}

/// The registry: one variant per vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vendor {
    Kommunicate,
    Chatwoot,
    Cometchat,
}

impl Vendor {
    pub const ALL: [Vendor; 3] = [Vendor::Kommunicate, Vendor::Chatwoot, Vendor::Cometchat];

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == name)
    }

    /// The name used in config, routing keys and the `vendor` attribute.
    pub fn name(self) -> &'static str {
        match self {
            Vendor::Kommunicate => "kommunicate",
            Vendor::Chatwoot => "chatwoot",
            Vendor::Cometchat => "cometchat",
        }
    }

    /// Whether a 401 for this vendor carries `WWW-Authenticate: Basic`.
    pub fn uses_basic_auth(self) -> bool {
        matches!(self, Vendor::Kommunicate | Vendor::Cometchat)
    }

    /// Whether this vendor's credentials cover the body (a MAC over it). `false`:
    /// [`Vendor::verify`] never looks at the body, so the relay decides from the headers
    /// alone, before reading it. `true`: `verify` can fail on the headers alone in every
    /// way but [`AuthError::Mismatch`], which needs the body.
    pub fn signs_body(self) -> bool {
        match self {
            Vendor::Kommunicate | Vendor::Cometchat => false,
            Vendor::Chatwoot => true,
        }
    }

    /// Check the credentials on the raw bytes, in constant time, before any parsing.
    pub fn verify<'a>(
        self,
        creds: &Credentials,
        headers: &'a Headers<'a>,
        body: &'a [u8],
        now: OffsetDateTime,
    ) -> Result<Verified<'a>, AuthError> {
        match creds {
            Credentials::None => {}
            _ => match self {
                Vendor::Kommunicate => kommunicate::verify(creds, headers, body, now)?,
                Vendor::Chatwoot => chatwoot::verify(creds, headers, body, now)?,
                Vendor::Cometchat => cometchat::verify(creds, headers, body, now)?,
            },
        }
        Ok(Verified { headers, body })
    }

    /// Turn a verified payload into the normalized event.
    pub fn normalize(
        self,
        verified: &Verified<'_>,
        now: OffsetDateTime,
    ) -> Result<Normalized, PayloadError> {
        match self {
            Vendor::Kommunicate => kommunicate::normalize(verified.headers, verified.body, now),
            Vendor::Chatwoot => chatwoot::normalize(verified.headers, verified.body, now),
            Vendor::Cometchat => cometchat::normalize(verified.headers, verified.body, now),
        }
    }

    /// The headers this vendor would send with `body` (Content-Type included): what
    /// `hookrelay send`, the load generator and the tests use.
    pub fn sign(
        self,
        creds: &Credentials,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Vec<(String, String)> {
        match self {
            Vendor::Kommunicate => kommunicate::sign(creds, body, now),
            Vendor::Chatwoot => chatwoot::sign(creds, body, now),
            Vendor::Cometchat => cometchat::sign(creds, body, now),
        }
    }
}
