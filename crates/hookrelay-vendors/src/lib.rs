//! Vendor code, pure and synchronous: raw bytes + headers + credentials in, a verdict and
//! a normalized event out. No I/O, no clock (callers pass `now`), so every rule here is
//! unit-tested without anything running and cannot get acks, retries or shutdown wrong.
//!
//! # Layout
//!
//! - this file: the shared types ([`Headers`], [`Credentials`], [`Verified`],
//!   [`Normalized`], the errors), the [`Contract`] every vendor implements and the
//!   registry ([`Vendor::ALL`]).
//! - [`keys`]: the per-vendor configuration keys of a source (credentials, options) and
//!   how their values are read (inline, `<key>_file`, lists).
//! - one file per vendor ([`kommunicate`], [`chatwoot`], [`cometchat`],
//!   [`standard_webhooks`]): everything about that vendor: its keys and demo values,
//!   `verify`, `normalize`, `sign` (what the vendor itself sends, for clients and tests),
//!   its routing prefix, its fixtures directory, and the independent credential oracle
//!   the property tests and fuzz targets judge it by.
//! - [`util`]: JSON field access, id and time conversions the vendors share.
//!
//! Adding a vendor: one new file implementing [`Contract`], one line in the
//! [`registry!`] call below. The relay, its settings, the property tests, the fixture
//! tests and the fuzz target all iterate over [`Vendor::ALL`], so the new vendor is
//! configured, served and tested without another edit (docs/vendors.md, "Adding a vendor").

pub mod keys;
pub mod util;

use hookrelay_common::event::{Contact, Conversation, Message};
use hookrelay_common::routing::Prefix;
use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
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

/// A source's credentials, typed by its vendor: each vendor file defines its own kind
/// (a token, an HMAC secret, a user and password, a list of keys) and reads it back
/// with [`Credentials::get`]. [`Credentials::NONE`] is `allow_unauthenticated = true`.
/// `Debug` never shows a value.
#[derive(Clone, Default)]
pub struct Credentials(Option<Arc<dyn Any + Send + Sync>>);

impl Credentials {
    /// `allow_unauthenticated = true`: every request passes.
    pub const NONE: Credentials = Credentials(None);

    pub fn new<T: Any + Send + Sync>(kind: T) -> Self {
        Self(Some(Arc::new(kind)))
    }

    pub fn is_none(&self) -> bool {
        self.0.is_none()
    }

    /// The credentials as kind `T`; `None` for another kind or none at all (which a
    /// vendor's `verify` answers with [`AuthError::WrongKind`]: fail closed).
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.as_ref().and_then(|c| c.downcast_ref::<T>())
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_none() {
            "Credentials(none)"
        } else {
            "Credentials([redacted])"
        })
    }
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
    /// The vendor's own id for this delivery, per its vendor's dedup rules (docs/vendors.md); the
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

/// Everything hookrelay knows about one vendor, implemented once in the vendor's file.
pub trait Contract: Send + Sync + 'static {
    /// The name used in config (`vendor = "..."`), routing keys and the `vendor`
    /// attribute.
    fn name(&self) -> &'static str;

    /// The keys a source of this vendor takes besides the common ones (`vendor`,
    /// `allow_unauthenticated`, `allowed_ips`, `rate_limit_*`): its credentials, with
    /// their demo values, and its options. A key the vendor does not list is refused.
    fn keys(&self) -> &'static [keys::Key];

    /// The typed credentials of a source, from its resolved [`keys`](Contract::keys).
    /// An error names the key it is about.
    fn credentials(&self, keys: &keys::KeyValues) -> Result<Credentials, keys::KeyError>;

    /// Check the credentials on the raw bytes, in constant time, before any parsing.
    /// Credentials of another kind are [`AuthError::WrongKind`].
    fn verify(
        &self,
        creds: &Credentials,
        headers: &Headers<'_>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), AuthError>;

    /// Turn a verified payload into the normalized event.
    fn normalize(
        &self,
        headers: &Headers<'_>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Normalized, PayloadError>;

    /// The headers this vendor would send with `body` (Content-Type included): what
    /// `hookrelay send`, the load generator and the tests use. With [`Credentials::NONE`],
    /// the headers without credentials.
    fn sign(&self, creds: &Credentials, body: &[u8], now: OffsetDateTime) -> Vec<(String, String)>;

    /// The event mapping, `(vendor event, normalized event)` (see [`Vendor::events`]).
    fn events(&self) -> &'static [(&'static str, &'static str)];

    /// The patterns outside [`Contract::events`] (see [`Vendor::event_patterns`]).
    fn event_patterns(&self) -> &'static [(&'static str, &'static str)];

    /// Whether a 401 for this vendor carries `WWW-Authenticate: Basic`.
    fn basic_auth_challenge(&self) -> bool;

    /// Whether the credentials cover the body (a MAC over it). `false`: `verify` never
    /// looks at the body, so the relay decides from the headers alone, before reading
    /// it. `true`: `verify` can fail on the headers alone in every way but
    /// [`AuthError::Mismatch`], which needs the body.
    fn signs_body(&self) -> bool;

    /// What the routing key starts with: the vendor's name, or the source's (for a
    /// generic vendor that many unrelated senders share).
    fn routing_prefix(&self) -> Prefix;

    /// Whether the event id names the vendor event besides the source and the vendor's
    /// delivery id (a vendor whose delivery ids are unique per source does without).
    fn id_names_vendor_event(&self) -> bool;

    /// This vendor's directory under `tests/fixtures/`.
    fn fixtures_dir(&self) -> &'static str;

    /// The credential oracle of the property tests and the fuzz target: whether the
    /// request carries the source's credentials, decided from the vendor's contract and
    /// [`sign`](Contract::sign), independently of [`verify`](Contract::verify).
    #[cfg(feature = "test-support")]
    fn genuine(
        &self,
        creds: &Credentials,
        headers: &Headers<'_>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> bool;

    /// How the property tests make plausible payloads of this vendor.
    #[cfg(feature = "test-support")]
    fn samples(&self) -> &'static testing::Samples;
}

/// One vendor: a copyable handle on its [`Contract`], compared by name.
#[derive(Clone, Copy)]
pub struct Vendor(&'static dyn Contract);

/// The registry. Each line declares a vendor's module and puts its contract into
/// [`Vendor::ALL`], in this order.
macro_rules! registry {
    ($($module:ident => $contract:ident,)+) => {
        $(pub mod $module;)+
        impl Vendor {
            /// Every vendor hookrelay knows.
            pub const ALL: &'static [Vendor] = &[$(Vendor(&$module::$contract)),+];
        }
    };
}

registry! {
    kommunicate => Kommunicate,
    chatwoot => Chatwoot,
    cometchat => Cometchat,
    standard_webhooks => StandardWebhooks,
}

impl PartialEq for Vendor {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Vendor {}

impl std::hash::Hash for Vendor {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl fmt::Debug for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Vendor({})", self.name())
    }
}

impl Vendor {
    /// The vendor configured as `vendor = "<name>"`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == name)
    }

    /// The contract itself, for what the handle does not wrap.
    pub fn contract(self) -> &'static dyn Contract {
        self.0
    }

    /// The name used in config, routing keys and the `vendor` attribute.
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// The vendor's event mapping, `(vendor event, normalized event)`: every routing key
    /// `<vendor>.<event>` it produces besides its [`Vendor::event_patterns`].
    /// `docs/asyncapi.yaml` is generated from these two (crates/hookrelay-contract). A
    /// vendor whose keys start with the source name instead (`<source>.<type>`) has none.
    pub fn events(self) -> &'static [(&'static str, &'static str)] {
        self.0.events()
    }

    /// The events outside [`Vendor::events`], as `(vendor event, normalized event)`
    /// patterns with the variable part in `<>`: the unmapped rule of
    /// `hookrelay_common::routing::unmapped_event`, and CometChat's other group triggers.
    pub fn event_patterns(self) -> &'static [(&'static str, &'static str)] {
        self.0.event_patterns()
    }

    /// Whether a 401 for this vendor carries `WWW-Authenticate: Basic`.
    pub fn uses_basic_auth(self) -> bool {
        self.0.basic_auth_challenge()
    }

    /// The source keys this vendor takes (see [`Contract::keys`]).
    pub fn keys(self) -> &'static [keys::Key] {
        self.0.keys()
    }

    /// Typed credentials from resolved keys (see [`Contract::credentials`]).
    pub fn credentials(self, keys: &keys::KeyValues) -> Result<Credentials, keys::KeyError> {
        self.0.credentials(keys)
    }

    /// The credentials made of the demo values `config/default.toml` ships (and the
    /// fixtures use).
    pub fn demo_credentials(self) -> Credentials {
        self.credentials(&keys::KeyValues::demo(self.keys()))
            .unwrap_or_else(|e| panic!("{}: the demo credentials are invalid: {e}", self.name()))
    }

    /// The routing-key prefix of a source of this vendor named `source`.
    pub fn routing_prefix(self, source: &str) -> &str {
        match self.0.routing_prefix() {
            Prefix::Vendor => self.name(),
            Prefix::Source => source,
        }
    }

    /// Whether this vendor's credentials cover the body (a MAC over it). `false`:
    /// [`Vendor::verify`] never looks at the body, so the relay decides from the headers
    /// alone, before reading it. `true`: `verify` can fail on the headers alone in every
    /// way but [`AuthError::Mismatch`], which needs the body.
    pub fn signs_body(self) -> bool {
        self.0.signs_body()
    }

    /// Check the credentials on the raw bytes, in constant time, before any parsing.
    pub fn verify<'a>(
        self,
        creds: &Credentials,
        headers: &'a Headers<'a>,
        body: &'a [u8],
        now: OffsetDateTime,
    ) -> Result<Verified<'a>, AuthError> {
        if !creds.is_none() {
            self.0.verify(creds, headers, body, now)?;
        }
        Ok(Verified { headers, body })
    }

    /// Turn a verified payload into the normalized event.
    pub fn normalize(
        self,
        verified: &Verified<'_>,
        now: OffsetDateTime,
    ) -> Result<Normalized, PayloadError> {
        self.0.normalize(verified.headers, verified.body, now)
    }

    /// The headers this vendor would send with `body` (see [`Contract::sign`]).
    pub fn sign(
        self,
        creds: &Credentials,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Vec<(String, String)> {
        self.0.sign(creds, body, now)
    }
}

/// What the property tests need to make payloads of a vendor (behind the
/// `test-support` feature).
#[cfg(feature = "test-support")]
pub mod testing {
    use crate::Headers;
    use serde_json::{Map, Value};

    /// The value of `name` when it appears exactly once.
    pub fn unique<'a>(headers: &Headers<'a>, name: &str) -> Option<&'a [u8]> {
        headers.get_unique(name).ok().flatten()
    }

    /// The value of header `name` among the headers a `sign` produced.
    pub fn signed_value(signed: &[(String, String)], name: &str) -> Option<Vec<u8>> {
        signed
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone().into_bytes())
    }

    /// Makes `obj` a complete payload of `event`, with the delivery id `id` and `data`
    /// where the vendor nests one.
    pub type Complete =
        fn(obj: &mut Map<String, Value>, event: &str, id: &str, data: Map<String, Value>);

    /// Plausible payload parts of one vendor.
    pub struct Samples {
        /// Vendor event names to try, mapped and unmapped, odd ones included.
        pub events: &'static [&'static str],
        /// Fields a payload must have to be accepted (a complete object has them).
        pub required: &'static [&'static str],
        /// The header a forged credential replaces.
        pub credential_header: &'static str,
        /// Make `obj` a complete payload of `event`, with the delivery id `id` and
        /// `data` where the vendor nests one.
        pub complete: Complete,
    }
}
