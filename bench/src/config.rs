//! The relay's own configuration, read the way the relay reads it (`config/default.toml`
//! → `--config` → `HOOKRELAY__*`), for the broker URI, the exchange and each source's
//! vendor and credentials. The load generator signs with exactly what the relay checks.

use hookrelay_common::amqp::AmqpSettings;
use hookrelay_common::settings::SettingsError;
use hookrelay_vendors::keys::{self, Given};
use hookrelay_vendors::{Credentials, Vendor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct RelayConfig {
    pub amqp: AmqpSettings,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SourceConfig {
    pub vendor: Option<String>,
    /// Every other key (the vendor's own, and the relay's access limits).
    #[serde(flatten)]
    pub keys: BTreeMap<String, Given>,
}

/// A source as the load generator needs it.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub vendor: Vendor,
    pub credentials: Credentials,
}

impl RelayConfig {
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        hookrelay_common::settings::load(file)
    }

    /// The source called `name`. Its vendor must be `vendor` when one is given.
    pub fn source(&self, name: &str, vendor: Option<Vendor>) -> Result<Source, String> {
        let s = self
            .sources
            .get(name)
            .ok_or_else(|| format!("no source named {name:?} in the relay's configuration"))?;
        let configured = s
            .vendor
            .as_deref()
            .and_then(Vendor::from_name)
            .ok_or_else(|| format!("sources.{name}.vendor is missing or unknown"))?;
        if let Some(v) = vendor {
            if v != configured {
                return Err(format!(
                    "source {name:?} is a {} source, not {}",
                    configured.name(),
                    v.name()
                ));
            }
        }
        let unauthenticated = matches!(
            s.keys.get("allow_unauthenticated"),
            Some(Given::Bool(true))
        ) || matches!(s.keys.get("allow_unauthenticated"), Some(Given::Text(t)) if t == "true");
        let credentials = if unauthenticated {
            Credentials::NONE
        } else {
            keys::resolve(configured.keys(), &s.keys, keys::COMMON, &|p| {
                std::fs::read_to_string(p)
            })
            .and_then(|v| configured.credentials(&v))
            .map_err(|e| format!("sources.{name}.{} {}", e.key, e.reason))?
        };
        Ok(Source {
            name: name.to_owned(),
            vendor: configured,
            credentials,
        })
    }
}

/// The first AMQP URI of the configuration (the bench talks to one node).
pub fn amqp_uri(cfg: &RelayConfig) -> String {
    cfg.amqp
        .uri
        .first()
        .map(|s| s.expose().to_owned())
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookrelay_vendors::chatwoot;

    #[test]
    fn default_config_has_the_three_demo_sources() {
        let cfg: RelayConfig = hookrelay_common::settings::load_with_env(None, vec![]).unwrap();
        // standard-webhooks is only a commented example there (its sources are named by
        // their senders).
        for name in ["kommunicate", "chatwoot", "cometchat"] {
            let v = Vendor::from_name(name).unwrap();
            let s = cfg.source(v.name(), Some(v)).unwrap();
            assert_eq!(s.vendor, v);
            assert!(!s.credentials.is_none());
        }
        assert_eq!(cfg.sources.len(), 3);
        assert!(cfg.source("kommunicate", Some(chatwoot::VENDOR)).is_err());
        assert!(cfg.source("nope", None).is_err());
    }
}
