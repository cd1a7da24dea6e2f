//! The relay's settings tree: loaded once through `hookrelay_common::settings`, then
//! validated and typed at the edge, before anything connects. Errors name the key.

use hookrelay_common::amqp::AmqpSettings;
use hookrelay_common::logging::LogSettings;
use hookrelay_common::settings::{string_or_list, SettingsError};
use hookrelay_common::topology::HistorySettings;
use hookrelay_common::Secret;
use hookrelay_vendors::keys::{self, Given};
use hookrelay_vendors::{Credentials, Vendor};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub amqp: AmqpSettings,
    #[serde(default)]
    pub durability: DurabilitySettings,
    pub spool: SpoolSettings,
    #[serde(default)]
    pub dedup: DedupSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceSettings>,
    /// `[history]`: the stream every event is also kept on.
    #[serde(default)]
    pub history: HistorySettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub bind: String,
    pub max_body_bytes: usize,
    #[serde(default)]
    pub workers: usize,
    #[serde(default = "d_client_request_timeout")]
    pub client_request_timeout_ms: u64,
    #[serde(default = "d_client_disconnect_timeout")]
    pub client_disconnect_timeout_ms: u64,
    #[serde(default = "d_max_connections")]
    pub max_connections: usize,
    #[serde(default = "d_shutdown_timeout")]
    pub shutdown_timeout_secs: u64,
    /// How long the whole body may take to arrive once the head is in (slow-body guard).
    #[serde(default = "d_body_read_timeout")]
    pub body_read_timeout_ms: u64,
    /// Most bytes of request bodies held at once, all requests together (flood guard).
    #[serde(default = "d_max_inflight_body_bytes")]
    pub max_inflight_body_bytes: u64,
    /// CIDRs of reverse proxies whose forwarded header is believed. Empty (the default):
    /// forwarded headers are never believed and the TCP peer is the client.
    #[serde(default, deserialize_with = "string_or_list")]
    pub trusted_proxies: Vec<String>,
    /// Which header a trusted proxy writes the client address into.
    #[serde(default)]
    pub forwarded_header: ForwardedHeader,
    #[serde(default)]
    pub tls: TlsSettings,
}

/// The header a trusted proxy reports the client address in. Only the configured one is
/// read: believing both would let a client send the one its proxy does not overwrite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, Traefik, Envoy, ELB).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for=proxy1`.
    Forwarded,
}

/// `server.tls`: both files, or neither (plain HTTP, e.g. behind a TLS-terminating proxy).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

fn d_client_request_timeout() -> u64 {
    5000
}
fn d_client_disconnect_timeout() -> u64 {
    0
}
fn d_max_connections() -> usize {
    25_000
}
fn d_shutdown_timeout() -> u64 {
    10
}
fn d_body_read_timeout() -> u64 {
    10_000
}
fn d_max_inflight_body_bytes() -> u64 {
    128 << 20
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// 200 after the broker's confirm (the spool only while the broker is away).
    #[default]
    Broker,
    /// 200 after the fsync in the local spool; a background publisher moves it on.
    Spool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DurabilitySettings {
    #[serde(default)]
    pub ack: AckMode,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    #[serde(default = "d_true")]
    pub enabled: bool,
    #[serde(default = "d_spool_max")]
    pub max_bytes: u64,
    #[serde(default = "d_drain_inflight")]
    pub drain_inflight: usize,
}

fn d_true() -> bool {
    true
}
fn d_spool_max() -> u64 {
    1 << 30
}
fn d_drain_inflight() -> usize {
    256
}

#[derive(Debug, Clone, Deserialize)]
pub struct DedupSettings {
    #[serde(default = "d_window")]
    pub window_secs: u64,
    #[serde(default = "d_max_entries")]
    pub max_entries: usize,
    #[serde(default)]
    pub backend: DedupBackend,
    /// Secret: a Redis URL may carry a password.
    #[serde(default = "d_redis_url")]
    pub redis_url: Secret,
    #[serde(default = "d_redis_prefix")]
    pub redis_key_prefix: String,
    #[serde(default = "d_redis_timeout")]
    pub redis_timeout_ms: u64,
}

/// Where the dedup window lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DedupBackend {
    /// This process only.
    #[default]
    Memory,
    /// Shared by every relay through Redis (`dedup.redis_url`).
    Redis,
}

impl Default for DedupSettings {
    fn default() -> Self {
        Self {
            window_secs: d_window(),
            max_entries: d_max_entries(),
            backend: DedupBackend::default(),
            redis_url: d_redis_url(),
            redis_key_prefix: d_redis_prefix(),
            redis_timeout_ms: d_redis_timeout(),
        }
    }
}

fn d_redis_url() -> Secret {
    Secret::new("redis://127.0.0.1:6379/0")
}
fn d_redis_prefix() -> String {
    "hookrelay:dedup:".to_owned()
}
fn d_redis_timeout() -> u64 {
    1000
}

fn d_window() -> u64 {
    600
}
fn d_max_entries() -> usize {
    100_000
}

/// One configured sender, as written in the configuration: the keys every source takes,
/// and its vendor's own (credentials, options), which the vendor's contract reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SourceSettings {
    pub vendor: Option<String>,
    #[serde(default, deserialize_with = "bool_or_text")]
    pub allow_unauthenticated: bool,
    /// CIDRs (or single addresses) allowed to post to this source; empty: any address.
    #[serde(default, deserialize_with = "string_or_list")]
    pub allowed_ips: Vec<String>,
    /// Sustained requests per second this source may send; unset: no limit.
    #[serde(default, deserialize_with = "opt_number")]
    pub rate_limit_per_sec: Option<f64>,
    /// Requests that may arrive at once above the sustained rate (default: one second's worth).
    #[serde(default, deserialize_with = "opt_number")]
    pub rate_limit_burst: Option<f64>,
    /// Every other key: the vendor's (see `hookrelay_vendors::Contract::keys`).
    #[serde(flatten)]
    pub vendor_keys: BTreeMap<String, Given>,
}

/// A boolean as TOML gives it or as text (the environment's form; the flattened source
/// table loses `config`'s own conversion).
fn bool_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Given::deserialize(d)? {
        Given::Bool(b) => Ok(b),
        Given::Text(t) => match t.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" | "" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "{other:?} is not true or false"
            ))),
        },
        Given::Int(i) => Ok(i != 0),
        _ => Err(serde::de::Error::custom("must be true or false")),
    }
}

/// A number given as a TOML number or as text (the environment's form); empty text
/// counts as unset, like every other empty value.
fn opt_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrText {
        Num(f64),
        Text(String),
    }
    match Option::<NumOrText>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrText::Num(n)) => Ok(Some(n)),
        Some(NumOrText::Text(t)) if t.trim().is_empty() => Ok(None),
        Some(NumOrText::Text(t)) => t
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{t:?} is not a number"))),
    }
}

/// A token bucket's shape: `per_sec` tokens refill each second, up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_sec: f64,
    pub burst: u32,
}

/// A source after validation: its vendor, usable credentials and access limits.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: Arc<str>,
    pub vendor: Vendor,
    pub credentials: Credentials,
    /// Networks allowed to post; empty means any address.
    pub allowed_ips: Vec<IpNet>,
    /// `None`: no rate limit (the default: Chatwoot never retries a refused delivery).
    pub rate_limit: Option<RateLimit>,
}

impl Source {
    /// A source with no access limits (what tests, fuzz targets and tools build).
    pub fn new(name: &str, vendor: Vendor, credentials: Credentials) -> Self {
        Self {
            name: Arc::from(name),
            vendor,
            credentials,
            allowed_ips: Vec::new(),
            rate_limit: None,
        }
    }
}

/// Everything the relay needs, typed and checked.
#[derive(Debug, Clone)]
pub struct Validated {
    pub raw: Settings,
    pub bind: SocketAddr,
    pub sources: BTreeMap<String, Source>,
    /// `server.trusted_proxies`, parsed.
    pub trusted_proxies: Vec<IpNet>,
    /// `server.tls`, loaded and checked; `None` serves plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Settings {
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_with_env(file, std::env::vars().collect())
    }

    pub fn load_with_env(
        file: Option<&Path>,
        env: Vec<(String, String)>,
    ) -> Result<Self, SettingsError> {
        // The workers' sections are theirs; any other key nothing reads is refused.
        hookrelay_common::settings::load_strict(file, env, hookrelay_common::settings::WORKERS_ONLY)
    }

    /// Type and check every key; the first problem found is returned, naming its key.
    pub fn validate(self) -> Result<Validated, SettingsError> {
        let bind: SocketAddr = self.server.bind.parse().map_err(|e| {
            SettingsError::key(
                "server.bind",
                format!("is not an address like 127.0.0.1:8080 ({e})"),
            )
        })?;
        if self.server.max_body_bytes == 0 {
            return Err(SettingsError::key(
                "server.max_body_bytes",
                "must be above 0",
            ));
        }
        self.amqp.validate()?;
        self.history.validate()?;
        if self.spool.dir.as_os_str().is_empty() {
            return Err(SettingsError::key("spool.dir", "is missing"));
        }
        if self.spool.drain_inflight == 0 {
            return Err(SettingsError::key(
                "spool.drain_inflight",
                "must be above 0",
            ));
        }
        if self.amqp.publish_channels == 0 {
            return Err(SettingsError::key(
                "amqp.publish_channels",
                "must be above 0",
            ));
        }
        if self.durability.ack == AckMode::Spool && !self.spool.enabled {
            return Err(SettingsError::key(
                "durability.ack",
                "is \"spool\" but spool.enabled is false",
            ));
        }
        if self.server.body_read_timeout_ms == 0 {
            return Err(SettingsError::key(
                "server.body_read_timeout_ms",
                "must be above 0",
            ));
        }
        if self.dedup.backend == DedupBackend::Redis {
            crate::dedup::check_redis_url(self.dedup.redis_url.expose())
                .map_err(|reason| SettingsError::key("dedup.redis_url", reason))?;
            if self.dedup.redis_timeout_ms == 0 {
                return Err(SettingsError::key(
                    "dedup.redis_timeout_ms",
                    "must be above 0",
                ));
            }
        }
        if self.server.max_inflight_body_bytes < self.server.max_body_bytes as u64 {
            return Err(SettingsError::key(
                "server.max_inflight_body_bytes",
                "must be at least server.max_body_bytes (or no body of the largest size fits)",
            ));
        }
        let trusted_proxies = parse_cidrs("server.trusted_proxies", &self.server.trusted_proxies)?;
        let tls = load_tls(&self.server.tls)?;
        if self.sources.is_empty() {
            return Err(SettingsError::key("sources", "no source is configured"));
        }
        let mut sources = BTreeMap::new();
        for (name, s) in &self.sources {
            let (source, demo) = validate_source(name, s)?;
            if !bind.ip().is_loopback() {
                if let Some(key) = demo {
                    return Err(SettingsError::key(
                        format!("sources.{name}.{key}"),
                        format!(
                            "still holds the demo value from config/default.toml while \
                             server.bind ({bind}) is not loopback: set a real credential"
                        ),
                    ));
                }
            }
            sources.insert(name.clone(), source);
        }
        Ok(Validated {
            raw: self,
            bind,
            sources,
            trusted_proxies,
            tls,
        })
    }
}

/// One CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a single address (`192.0.2.7`, a /32 or
/// /128). IPv4-mapped IPv6 forms are turned into IPv4, as peer addresses are.
pub fn parse_cidr(text: &str) -> Option<IpNet> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(match net {
            IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
                Some(v4) if v6.prefix_len() >= 96 => {
                    IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).ok()?
                }
                _ => net,
            },
            IpNet::V4(_) => net,
        });
    }
    text.parse::<IpAddr>()
        .ok()
        .map(|ip| IpNet::from(ip.to_canonical()))
}

fn parse_cidrs(key: &str, list: &[String]) -> Result<Vec<IpNet>, SettingsError> {
    list.iter()
        .map(|item| {
            parse_cidr(item).ok_or_else(|| {
                SettingsError::key(
                    key,
                    format!("{item:?} is not a CIDR like 10.0.0.0/8 or an IP address"),
                )
            })
        })
        .collect()
}

fn load_tls(t: &TlsSettings) -> Result<Option<Arc<rustls::ServerConfig>>, SettingsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let given = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
    let (cert_file, key_file) = match (given(&t.cert_file), given(&t.key_file)) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(SettingsError::key(
                "server.tls.key_file",
                "is missing: TLS needs both server.tls.cert_file and server.tls.key_file",
            ))
        }
        (None, Some(_)) => {
            return Err(SettingsError::key(
                "server.tls.cert_file",
                "is missing: TLS needs both server.tls.cert_file and server.tls.key_file",
            ))
        }
        (Some(c), Some(k)) => (c, k),
    };
    let unreadable = |key: &str, path: &Path, e: &dyn std::fmt::Display| {
        SettingsError::key(key, format!("{}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(&cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| unreadable("server.tls.cert_file", &cert_file, &e))?;
    if certs.is_empty() {
        return Err(SettingsError::key(
            "server.tls.cert_file",
            format!("{}: holds no PEM certificate", cert_file.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&key_file)
        .map_err(|e| unreadable("server.tls.key_file", &key_file, &e))?;
    // The ring provider explicitly: the process-wide default would depend on which
    // rustls features other crates happen to switch on.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| {
            SettingsError::key(
                "server.tls.key_file",
                format!(
                    "cannot be used with server.tls.cert_file ({e}): is it the certificate's key?"
                ),
            )
        })?;
    Ok(Some(Arc::new(config)))
}

fn valid_source_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The source, and the key of a demo credential it still holds (if any).
fn validate_source(
    name: &str,
    s: &SourceSettings,
) -> Result<(Source, Option<&'static str>), SettingsError> {
    if !valid_source_name(name) {
        return Err(SettingsError::key(
            format!("sources.{name}"),
            "a source name may hold only a-z, 0-9, '_' and '-' (it is a URL segment)",
        ));
    }
    let vendor_name = s
        .vendor
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| SettingsError::key(format!("sources.{name}.vendor"), "is missing"))?;
    let vendor = Vendor::from_name(vendor_name).ok_or_else(|| {
        SettingsError::key(
            format!("sources.{name}.vendor"),
            format!(
                "unknown vendor {vendor_name:?} (known: {})",
                Vendor::ALL
                    .iter()
                    .map(|v| v.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    // The vendor's keys are read (and unknown ones refused) even for an unauthenticated
    // source, so a typo there is never silently ignored.
    let key_error =
        |e: keys::KeyError| SettingsError::key(format!("sources.{name}.{}", e.key), e.reason);
    let values = keys::resolve(vendor.keys(), &s.vendor_keys, keys::COMMON, &|p| {
        std::fs::read_to_string(p)
    })
    .map_err(key_error)?;
    let (credentials, demo) = if s.allow_unauthenticated {
        (Credentials::NONE, None)
    } else {
        (
            vendor.credentials(&values).map_err(key_error)?,
            values.demo_key(vendor.keys()),
        )
    };
    let allowed_ips = parse_cidrs(&format!("sources.{name}.allowed_ips"), &s.allowed_ips)?;
    let rate_limit = rate_limit(name, s)?;
    Ok((
        Source {
            name: Arc::from(name),
            vendor,
            credentials,
            allowed_ips,
            rate_limit,
        },
        demo,
    ))
}

fn rate_limit(name: &str, s: &SourceSettings) -> Result<Option<RateLimit>, SettingsError> {
    let Some(per_sec) = s.rate_limit_per_sec else {
        if s.rate_limit_burst.is_some() {
            return Err(SettingsError::key(
                format!("sources.{name}.rate_limit_burst"),
                "is set but rate_limit_per_sec is not",
            ));
        }
        return Ok(None);
    };
    if !(per_sec.is_finite() && per_sec > 0.0) {
        return Err(SettingsError::key(
            format!("sources.{name}.rate_limit_per_sec"),
            "must be a number above 0 (leave it unset for no limit)",
        ));
    }
    let burst = match s.rate_limit_burst {
        None => per_sec.ceil().clamp(1.0, f64::from(u32::MAX)) as u32,
        Some(b) if b.fract() == 0.0 && (1.0..=f64::from(u32::MAX)).contains(&b) => b as u32,
        Some(_) => {
            return Err(SettingsError::key(
                format!("sources.{name}.rate_limit_burst"),
                "must be a whole number of requests, at least 1",
            ))
        }
    };
    Ok(Some(RateLimit { per_sec, burst }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn default_configuration_is_valid() {
        let v = Settings::load_with_env(None, vec![])
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(v.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(v.sources.len(), 3);
        assert_eq!(v.raw.server.max_body_bytes, 2_097_152);
        assert_eq!(v.raw.durability.ack, AckMode::Broker);
    }

    #[test]
    fn history_defaults_env_overrides_and_a_bad_max_age_names_its_key() {
        let v = Settings::load_with_env(None, vec![])
            .unwrap()
            .validate()
            .unwrap();
        let h = &v.raw.history;
        assert!(h.enabled);
        assert_eq!(
            h.stream_name("hookrelay.events"),
            "hookrelay.events.history"
        );
        assert_eq!((h.max_age.as_str(), h.max_bytes), ("7D", 5_000_000_000));
        let v = Settings::load_with_env(
            None,
            env(&[
                ("HOOKRELAY__HISTORY__ENABLED", "false"),
                ("HOOKRELAY__HISTORY__STREAM", "kept"),
                ("HOOKRELAY__HISTORY__MAX_BYTES", "123"),
            ]),
        )
        .unwrap()
        .validate()
        .unwrap();
        assert!(!v.raw.history.enabled);
        assert_eq!(v.raw.history.stream_name("x"), "kept");
        assert_eq!(v.raw.history.max_bytes, 123);
        let e = Settings::load_with_env(None, env(&[("HOOKRELAY__HISTORY__MAX_AGE", "7days")]))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("history.max_age"), "{e}");
    }

    #[test]
    fn empty_credential_counts_as_missing_and_names_the_key() {
        let e =
            Settings::load_with_env(None, env(&[("HOOKRELAY__SOURCES__KOMMUNICATE__TOKEN", "")]))
                .unwrap()
                .validate()
                .unwrap_err();
        assert!(e.to_string().contains("sources.kommunicate.token"), "{e}");
    }

    #[test]
    fn demo_credentials_refused_on_public_bind() {
        let e = Settings::load_with_env(None, env(&[("HOOKRELAY__SERVER__BIND", "0.0.0.0:8080")]))
            .unwrap()
            .validate()
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("sources.") && text.contains("demo"), "{text}");
        assert!(
            !text.contains("abcdef"),
            "the message must not echo the secret: {text}"
        );
    }

    #[test]
    fn public_bind_with_real_credentials_is_fine() {
        let v = Settings::load_with_env(
            None,
            env(&[
                ("HOOKRELAY__SERVER__BIND", "0.0.0.0:8080"),
                ("HOOKRELAY__SOURCES__KOMMUNICATE__TOKEN", "t0k3n-real"),
                ("HOOKRELAY__SOURCES__CHATWOOT__SECRET", "real-secret"),
                ("HOOKRELAY__SOURCES__COMETCHAT__PASSWORD", "realpass"),
            ]),
        )
        .unwrap()
        .validate();
        assert!(v.is_ok(), "{v:?}");
    }

    #[test]
    fn new_source_from_env_and_unknown_vendor_named() {
        let v = Settings::load_with_env(
            None,
            env(&[
                ("HOOKRELAY__SOURCES__ACME_CHAT__VENDOR", "kommunicate"),
                ("HOOKRELAY__SOURCES__ACME_CHAT__TOKEN", "zzz"),
            ]),
        )
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(
            v.sources["acme_chat"].vendor,
            hookrelay_vendors::kommunicate::VENDOR
        );
        let e = Settings::load_with_env(None, env(&[("HOOKRELAY__SOURCES__ODD__VENDOR", "slack")]))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("sources.odd.vendor"), "{e}");
    }

    #[test]
    fn a_standard_webhooks_source_takes_a_list_of_secrets_and_refuses_the_demo_one_in_public() {
        let demo = hookrelay_vendors::standard_webhooks::DEMO_SECRET;
        let pairs = [
            ("HOOKRELAY__SOURCES__BILLING__VENDOR", "standard-webhooks"),
            (
                "HOOKRELAY__SOURCES__BILLING__SECRET",
                "whsec_b2xkLWtleQ==, whsec_bmV3LWtleQ==",
            ),
        ];
        let v = Settings::load_with_env(None, env(&pairs))
            .unwrap()
            .validate()
            .unwrap();
        let keys = v.sources["billing"]
            .credentials
            .get::<hookrelay_vendors::standard_webhooks::SigningKeys>()
            .expect("signing keys");
        assert_eq!(keys.tolerance, Some(std::time::Duration::from_secs(300)));
        let e = invalid(&[
            ("HOOKRELAY__SOURCES__BILLING__VENDOR", "standard-webhooks"),
            ("HOOKRELAY__SOURCES__BILLING__SECRET", "whsec_!!"),
        ]);
        assert!(
            e.contains("sources.billing.secret") && !e.contains("!!"),
            "{e}"
        );
        let e = invalid(&[
            ("HOOKRELAY__SERVER__BIND", "0.0.0.0:8080"),
            ("HOOKRELAY__SOURCES__KOMMUNICATE__TOKEN", "t0k3n-real"),
            ("HOOKRELAY__SOURCES__CHATWOOT__SECRET", "real-secret"),
            ("HOOKRELAY__SOURCES__COMETCHAT__PASSWORD", "realpass"),
            ("HOOKRELAY__SOURCES__BILLING__VENDOR", "standard-webhooks"),
            (
                "HOOKRELAY__SOURCES__BILLING__SECRET",
                &format!("whsec_bmV3LWtleQ==,{demo}"),
            ),
        ]);
        assert!(
            e.contains("sources.billing.secret") && e.contains("demo"),
            "{e}"
        );
    }

    #[test]
    fn a_typo_anywhere_is_refused_naming_the_key_and_the_nearest_one() {
        let e = Settings::load_with_env(None, env(&[("HOOKRELAY__SERVER__BNID", "0.0.0.0:1")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("server.bnid")
                && e.contains("set by HOOKRELAY__SERVER__BNID")
                && e.contains("did you mean `server.bind`?"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("hookrelay-typo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("relay.toml");
        std::fs::write(&file, "[spool]\nmax_byte = 5\n").unwrap();
        let e = Settings::load_with_env(Some(&file), vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `spool.max_bytes`?"), "{e}");
        std::fs::write(&file, "[servr]\nbind = \"x\"\n").unwrap();
        let e = Settings::load_with_env(Some(&file), vec![])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("servr") && e.contains("did you mean `server`?"),
            "{e}"
        );
        // The workers' sections are theirs to check.
        assert!(
            Settings::load_with_env(None, env(&[("HOOKRELAY__FORWARD__URL", "http://x")])).is_ok()
        );
    }

    #[test]
    fn a_typo_in_a_source_key_is_refused_naming_the_nearest_key() {
        let e = invalid(&[("HOOKRELAY__SOURCES__CHATWOOT__SECRET_FLIE", "/run/secret")]);
        assert!(
            e.contains("sources.chatwoot.secret_flie") && e.contains("did you mean `secret_file`"),
            "{e}"
        );
        let e = invalid(&[("HOOKRELAY__SOURCES__KOMMUNICATE__ALLOWED_IP", "10.0.0.0/8")]);
        assert!(e.contains("did you mean `allowed_ips`"), "{e}");
        // Another vendor's key is not this vendor's.
        let e = invalid(&[("HOOKRELAY__SOURCES__KOMMUNICATE__PASSWORD", "x")]);
        assert!(e.contains("sources.kommunicate.password"), "{e}");
    }

    #[test]
    fn allow_unauthenticated_needs_no_credentials() {
        let v = Settings::load_with_env(
            None,
            env(&[
                ("HOOKRELAY__SOURCES__OPEN__VENDOR", "chatwoot"),
                ("HOOKRELAY__SOURCES__OPEN__ALLOW_UNAUTHENTICATED", "true"),
            ]),
        )
        .unwrap()
        .validate()
        .unwrap();
        assert!(v.sources["open"].credentials.is_none());
    }

    #[test]
    fn secret_from_file() {
        let dir = std::env::temp_dir().join(format!("hookrelay-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("token");
        std::fs::write(&f, "from-file\n").unwrap();
        let v = Settings::load_with_env(
            None,
            env(&[
                ("HOOKRELAY__SOURCES__KOMMUNICATE__TOKEN", ""),
                (
                    "HOOKRELAY__SOURCES__KOMMUNICATE__TOKEN_FILE",
                    f.to_str().unwrap(),
                ),
            ]),
        )
        .unwrap()
        .validate()
        .unwrap();
        let token = v.sources["kommunicate"]
            .credentials
            .get::<hookrelay_vendors::kommunicate::Token>()
            .expect("a Kommunicate token");
        assert_eq!(token.0.expose(), "from-file");
    }

    fn invalid(pairs: &[(&str, &str)]) -> String {
        Settings::load_with_env(None, env(pairs))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn allowlists_and_trusted_proxies_parse_from_lists_and_name_bad_entries() {
        let v = Settings::load_with_env(
            None,
            env(&[
                (
                    "HOOKRELAY__SOURCES__CHATWOOT__ALLOWED_IPS",
                    "203.0.113.0/24, 2001:db8::/32,198.51.100.7",
                ),
                ("HOOKRELAY__SERVER__TRUSTED_PROXIES", "10.0.0.0/8"),
                ("HOOKRELAY__SERVER__FORWARDED_HEADER", "forwarded"),
            ]),
        )
        .unwrap()
        .validate()
        .unwrap();
        let nets: Vec<String> = v.sources["chatwoot"]
            .allowed_ips
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["203.0.113.0/24", "2001:db8::/32", "198.51.100.7/32"]);
        assert!(v.sources["kommunicate"].allowed_ips.is_empty());
        assert_eq!(v.trusted_proxies.len(), 1);
        assert_eq!(v.raw.server.forwarded_header, ForwardedHeader::Forwarded);
        // Defaults: nothing trusted, no allowlist, no rate limit, no TLS.
        let d = Settings::load_with_env(None, vec![])
            .unwrap()
            .validate()
            .unwrap();
        assert!(d.trusted_proxies.is_empty() && d.tls.is_none());
        assert!(d
            .sources
            .values()
            .all(|s| s.allowed_ips.is_empty() && s.rate_limit.is_none()));

        let e = invalid(&[("HOOKRELAY__SOURCES__CHATWOOT__ALLOWED_IPS", "10.0.0.0/33")]);
        assert!(
            e.contains("sources.chatwoot.allowed_ips") && e.contains("10.0.0.0/33"),
            "{e}"
        );
        let e = invalid(&[("HOOKRELAY__SERVER__TRUSTED_PROXIES", "proxy.internal")]);
        assert!(e.contains("server.trusted_proxies"), "{e}");
        assert_eq!(
            parse_cidr("::ffff:10.0.0.0/104").map(|n| n.to_string()),
            Some("10.0.0.0/8".into())
        );
    }

    #[test]
    fn rate_limit_is_off_by_default_and_checked_when_set() {
        let v = Settings::load_with_env(
            None,
            env(&[
                ("HOOKRELAY__SOURCES__CHATWOOT__RATE_LIMIT_PER_SEC", "2.5"),
                ("HOOKRELAY__SOURCES__COMETCHAT__RATE_LIMIT_PER_SEC", "5"),
                ("HOOKRELAY__SOURCES__COMETCHAT__RATE_LIMIT_BURST", "20"),
                ("HOOKRELAY__SOURCES__KOMMUNICATE__RATE_LIMIT_PER_SEC", ""),
            ]),
        )
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(
            v.sources["chatwoot"].rate_limit,
            Some(RateLimit {
                per_sec: 2.5,
                burst: 3
            })
        );
        assert_eq!(
            v.sources["cometchat"].rate_limit,
            Some(RateLimit {
                per_sec: 5.0,
                burst: 20
            })
        );
        assert_eq!(v.sources["kommunicate"].rate_limit, None);
        let e = invalid(&[("HOOKRELAY__SOURCES__CHATWOOT__RATE_LIMIT_PER_SEC", "0")]);
        assert!(e.contains("sources.chatwoot.rate_limit_per_sec"), "{e}");
        let e = invalid(&[("HOOKRELAY__SOURCES__CHATWOOT__RATE_LIMIT_BURST", "4")]);
        assert!(e.contains("sources.chatwoot.rate_limit_burst"), "{e}");
        let e = invalid(&[
            ("HOOKRELAY__SOURCES__CHATWOOT__RATE_LIMIT_PER_SEC", "1"),
            ("HOOKRELAY__SOURCES__CHATWOOT__RATE_LIMIT_BURST", "1.5"),
        ]);
        assert!(e.contains("sources.chatwoot.rate_limit_burst"), "{e}");
        let e = Settings::load_with_env(
            None,
            env(&[("HOOKRELAY__SOURCES__CHATWOOT__RATE_LIMIT_PER_SEC", "fast")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sources.chatwoot.rate_limit_per_sec"), "{e}");
    }

    #[test]
    fn cometchat_username_with_a_colon_is_refused_naming_the_key() {
        let e = invalid(&[("HOOKRELAY__SOURCES__COMETCHAT__USERNAME", "relay:user")]);
        assert!(e.contains("sources.cometchat.username"), "{e}");
        assert!(
            !e.contains("relay:user"),
            "the message must not echo the secret: {e}"
        );
    }

    #[test]
    fn tls_needs_both_files_and_names_the_missing_or_bad_one() {
        let e = invalid(&[("HOOKRELAY__SERVER__TLS__CERT_FILE", "/nonexistent/cert.pem")]);
        assert!(
            e.contains("server.tls.key_file") && e.contains("missing"),
            "{e}"
        );
        let e = invalid(&[("HOOKRELAY__SERVER__TLS__KEY_FILE", "/nonexistent/key.pem")]);
        assert!(
            e.contains("server.tls.cert_file") && e.contains("missing"),
            "{e}"
        );
        let e = invalid(&[
            ("HOOKRELAY__SERVER__TLS__CERT_FILE", "/nonexistent/cert.pem"),
            ("HOOKRELAY__SERVER__TLS__KEY_FILE", "/nonexistent/key.pem"),
        ]);
        assert!(
            e.contains("server.tls.cert_file") && e.contains("/nonexistent/cert.pem"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("hookrelay-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = invalid(&[
            ("HOOKRELAY__SERVER__TLS__CERT_FILE", junk.to_str().unwrap()),
            ("HOOKRELAY__SERVER__TLS__KEY_FILE", junk.to_str().unwrap()),
        ]);
        assert!(
            e.contains("server.tls.cert_file") && e.contains("no PEM certificate"),
            "{e}"
        );
        // Empty values count as missing: plain HTTP.
        let v = Settings::load_with_env(
            None,
            env(&[
                ("HOOKRELAY__SERVER__TLS__CERT_FILE", ""),
                ("HOOKRELAY__SERVER__TLS__KEY_FILE", ""),
            ]),
        )
        .unwrap()
        .validate()
        .unwrap();
        assert!(v.tls.is_none());
    }
}
