//! `[server]`: the listener, HTTP limits, trusted proxies and TLS.

use hookrelay_common::settings::{string_or_list, SettingsError};
use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

pub(super) fn d_client_request_timeout() -> u64 {
    5000
}

pub(super) fn d_client_disconnect_timeout() -> u64 {
    0
}

pub(super) fn d_max_connections() -> usize {
    25_000
}

pub(super) fn d_shutdown_timeout() -> u64 {
    10
}

pub(super) fn d_body_read_timeout() -> u64 {
    10_000
}

pub(super) fn d_max_inflight_body_bytes() -> u64 {
    128 << 20
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

pub(crate) fn parse_cidrs(key: &str, list: &[String]) -> Result<Vec<IpNet>, SettingsError> {
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

pub(super) fn load_tls(
    t: &TlsSettings,
) -> Result<Option<Arc<rustls::ServerConfig>>, SettingsError> {
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
