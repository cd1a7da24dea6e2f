//! The relay's settings tree: loaded once through `hookrelay_common::settings`, then
//! validated and typed at the edge, before anything connects. Errors name the key.
//!
//! # Layout
//!
//! - [`server`] reads `[server]`: listener, HTTP limits, trusted proxies, TLS.
//! - [`durability`] reads `[durability]` and `[spool]`.
//! - [`dedup`] reads `[dedup]`.
//! - [`sources`] reads `[sources.<name>]`, per vendor through the registry.
//! - This file holds the whole tree, its loading, and the validation that ties the
//!   sections together.

mod dedup;
mod durability;
mod server;
mod sources;

pub use dedup::*;
pub use durability::*;
pub use server::*;
pub use sources::*;
// The helpers the sections share with this file (and its tests).
#[allow(unused_imports)]
use self::{dedup::*, durability::*, server::*, sources::*};

use hookrelay_common::amqp::AmqpSettings;
use hookrelay_common::logging::LogSettings;
use hookrelay_common::settings::SettingsError;
use hookrelay_common::topology::HistorySettings;
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
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

#[cfg(test)]
mod tests;
