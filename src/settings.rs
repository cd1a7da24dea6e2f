//! The relay's settings tree: loaded once through `hookrelay_common::settings`, then
//! validated and typed at the edge, before anything connects. Errors name the key.

use hookrelay_common::amqp::AmqpSettings;
use hookrelay_common::logging::LogSettings;
use hookrelay_common::settings::SettingsError;
use hookrelay_common::Secret;
use hookrelay_vendors::{Credentials, Vendor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The demo credentials shipped in `config/default.toml` (the shared fixtures' test
/// values). Any of them on a non-loopback bind refuses start-up.
pub const DEMO_SECRETS: &[&str] = &["abcdef", "test-chatwoot-webhook-secret", "s3cretPa55"];

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
}

fn d_client_request_timeout() -> u64 {
    5000
}
fn d_client_disconnect_timeout() -> u64 {
    1000
}
fn d_max_connections() -> usize {
    25_000
}
fn d_shutdown_timeout() -> u64 {
    10
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
}

impl Default for DedupSettings {
    fn default() -> Self {
        Self {
            window_secs: d_window(),
            max_entries: d_max_entries(),
        }
    }
}

fn d_window() -> u64 {
    600
}
fn d_max_entries() -> usize {
    100_000
}

/// One configured sender, as written in the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SourceSettings {
    pub vendor: Option<String>,
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    pub secret: Option<Secret>,
    pub secret_file: Option<PathBuf>,
    pub signature_tolerance_secs: Option<u64>,
    pub username: Option<Secret>,
    pub username_file: Option<PathBuf>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub allow_unauthenticated: bool,
}

/// A source after validation: its vendor and usable credentials.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: Arc<str>,
    pub vendor: Vendor,
    pub credentials: Credentials,
}

/// Everything the relay needs, typed and checked.
#[derive(Debug, Clone)]
pub struct Validated {
    pub raw: Settings,
    pub bind: SocketAddr,
    pub sources: BTreeMap<String, Source>,
}

impl Settings {
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        hookrelay_common::settings::load(file)
    }

    pub fn load_with_env(
        file: Option<&Path>,
        env: Vec<(String, String)>,
    ) -> Result<Self, SettingsError> {
        hookrelay_common::settings::load_with_env(file, env)
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
        if self.sources.is_empty() {
            return Err(SettingsError::key("sources", "no source is configured"));
        }
        let mut sources = BTreeMap::new();
        for (name, s) in &self.sources {
            let source = validate_source(name, s)?;
            if !bind.ip().is_loopback() {
                if let Some(key) = demo_credential(name, s) {
                    return Err(SettingsError::key(
                        key,
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
        })
    }
}

fn valid_source_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A secret given inline or through `<key>_file` (Docker/Kubernetes secrets). Empty
/// counts as missing. The file's trailing newline is not part of the secret.
fn secret(
    source: &str,
    key: &str,
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
) -> Result<Option<Secret>, SettingsError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SettingsError::key(
                format!("sources.{source}.{key}_file"),
                format!("cannot be read ({e})"),
            )
        })?;
        let text = text.trim_end_matches(['\n', '\r']);
        if !text.is_empty() {
            return Ok(Some(Secret::new(text)));
        }
    }
    Ok(inline.clone().filter(|s| !s.is_empty()))
}

fn require(source: &str, key: &str, value: Option<Secret>) -> Result<Secret, SettingsError> {
    value.ok_or_else(|| {
        SettingsError::key(
            format!("sources.{source}.{key}"),
            "is missing: a source needs credentials (or allow_unauthenticated = true)",
        )
    })
}

fn validate_source(name: &str, s: &SourceSettings) -> Result<Source, SettingsError> {
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
                Vendor::ALL.map(|v| v.name()).join(", ")
            ),
        )
    })?;
    let credentials = if s.allow_unauthenticated {
        Credentials::None
    } else {
        match vendor {
            Vendor::Kommunicate => Credentials::Token(require(
                name,
                "token",
                secret(name, "token", &s.token, &s.token_file)?,
            )?),
            Vendor::Chatwoot => Credentials::Hmac {
                secret: require(
                    name,
                    "secret",
                    secret(name, "secret", &s.secret, &s.secret_file)?,
                )?,
                tolerance: Some(Duration::from_secs(
                    s.signature_tolerance_secs.unwrap_or(300),
                )),
            },
            Vendor::Cometchat => Credentials::Basic {
                username: require(
                    name,
                    "username",
                    secret(name, "username", &s.username, &s.username_file)?,
                )?,
                password: require(
                    name,
                    "password",
                    secret(name, "password", &s.password, &s.password_file)?,
                )?,
            },
        }
    };
    Ok(Source {
        name: Arc::from(name),
        vendor,
        credentials,
    })
}

/// The key of the first demo credential this source still uses, if any.
fn demo_credential(name: &str, s: &SourceSettings) -> Option<String> {
    let fields = [
        ("token", &s.token),
        ("secret", &s.secret),
        ("username", &s.username),
        ("password", &s.password),
    ];
    fields.into_iter().find_map(|(key, v)| {
        v.as_ref()
            .filter(|v| DEMO_SECRETS.contains(&v.expose()))
            .map(|_| format!("sources.{name}.{key}"))
    })
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
        assert_eq!(v.sources["acme_chat"].vendor, Vendor::Kommunicate);
        let e = Settings::load_with_env(None, env(&[("HOOKRELAY__SOURCES__ODD__VENDOR", "slack")]))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("sources.odd.vendor"), "{e}");
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
        assert!(matches!(v.sources["open"].credentials, Credentials::None));
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
        match &v.sources["kommunicate"].credentials {
            Credentials::Token(t) => assert_eq!(t.expose(), "from-file"),
            other => panic!("{other:?}"),
        }
    }
}
