//! The relay's own configuration, read the way the relay reads it (`config/default.toml`
//! → `--config` → `HOOKRELAY__*`), for the broker URI, the exchange and each source's
//! vendor and credentials. The load generator signs with exactly what the relay checks.

use hookrelay_common::amqp::AmqpSettings;
use hookrelay_common::settings::SettingsError;
use hookrelay_common::Secret;
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
    pub token: Option<Secret>,
    pub secret: Option<Secret>,
    pub username: Option<Secret>,
    pub password: Option<Secret>,
    #[serde(default)]
    pub allow_unauthenticated: bool,
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
        let need = |key: &str, v: &Option<Secret>| {
            v.clone()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("sources.{name}.{key} is missing"))
        };
        let credentials = if s.allow_unauthenticated {
            Credentials::None
        } else {
            match configured {
                Vendor::Kommunicate => Credentials::Token(need("token", &s.token)?),
                Vendor::Chatwoot => Credentials::Hmac {
                    secret: need("secret", &s.secret)?,
                    tolerance: None,
                },
                Vendor::Cometchat => Credentials::Basic {
                    username: need("username", &s.username)?,
                    password: need("password", &s.password)?,
                },
            }
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

    #[test]
    fn default_config_has_the_three_demo_sources() {
        let cfg: RelayConfig = hookrelay_common::settings::load_with_env(None, vec![]).unwrap();
        for v in Vendor::ALL {
            let s = cfg.source(v.name(), Some(v)).unwrap();
            assert_eq!(s.vendor, v);
            assert!(!matches!(s.credentials, Credentials::None));
        }
        assert!(cfg.source("kommunicate", Some(Vendor::Chatwoot)).is_err());
        assert!(cfg.source("nope", None).is_err());
    }
}
