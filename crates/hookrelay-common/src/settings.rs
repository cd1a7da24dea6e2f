//! Layered configuration, later wins: `config/default.toml` (or the copy built into the
//! binary) → the file named by `--config`/`HOOKRELAY_CONFIG` → `HOOKRELAY__<SECTION>__<KEY>`.

use config::{Config, Environment, File, FileFormat};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use std::path::Path;

/// The shipped defaults, built in so the binaries run from any directory.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Where the shipped defaults live in a checkout; read instead of the built-in copy when
/// present, so an edit there takes effect without a rebuild.
pub const DEFAULT_PATH: &str = "config/default.toml";

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: Box<config::ConfigError>,
    },
    #[error("configuration: {0}")]
    Invalid(Box<config::ConfigError>),
    #[error("configuration key `{key}`: {reason}")]
    Key { key: String, reason: String },
}

impl From<config::ConfigError> for SettingsError {
    fn from(e: config::ConfigError) -> Self {
        SettingsError::Invalid(Box::new(e))
    }
}

impl SettingsError {
    pub fn key(key: impl Into<String>, reason: impl Into<String>) -> Self {
        SettingsError::Key {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Load the layers into `T`. `file` is the `--config` path, if any.
pub fn load<T: DeserializeOwned>(file: Option<&Path>) -> Result<T, SettingsError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    load_with_env(file, env)
}

/// As [`load`], with the environment given (tests use this instead of mutating theirs).
pub fn load_with_env<T: DeserializeOwned>(
    file: Option<&Path>,
    env: Vec<(String, String)>,
) -> Result<T, SettingsError> {
    let mut builder = Config::builder();
    builder = match std::fs::read_to_string(DEFAULT_PATH) {
        Ok(text) => builder.add_source(File::from_str(&text, FileFormat::Toml)),
        Err(_) => builder.add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml)),
    };
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| SettingsError::File {
            path: path.display().to_string(),
            source: Box::new(config::ConfigError::Foreign(Box::new(e))),
        })?;
        builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
    }
    let env_map: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("HOOKRELAY__"))
        .collect();
    builder = builder.add_source(
        Environment::with_prefix("HOOKRELAY")
            .prefix_separator("__")
            .separator("__")
            // No parsing: a secret like "007" must stay "007"; typed keys convert on deserialize.
            .try_parsing(false)
            .source(Some(env_map)),
    );
    let cfg = builder.build()?;
    Ok(cfg.try_deserialize()?)
}

/// A list given either as a TOML array or as one comma-separated string (the form an
/// environment variable can carry).
pub fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        OneOrMany::Many(v) => v
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    struct Probe {
        amqp: crate::amqp::AmqpSettings,
    }

    #[test]
    fn env_overrides_default_and_lists_split_on_commas() {
        let env = vec![
            (
                "HOOKRELAY__AMQP__URI".to_owned(),
                "amqp://a:5672/%2f, amqp://b:5672/%2f".to_owned(),
            ),
            (
                "HOOKRELAY__AMQP__EXCHANGE".to_owned(),
                "x.events".to_owned(),
            ),
        ];
        let p: Probe = load_with_env(None, env).unwrap();
        assert_eq!(p.amqp.exchange, "x.events");
        assert_eq!(p.amqp.uri.len(), 2);
        assert_eq!(p.amqp.uri[1].expose(), "amqp://b:5672/%2f");
    }

    #[test]
    fn defaults_load_without_env() {
        let p: Probe = load_with_env(None, vec![]).unwrap();
        assert_eq!(p.amqp.exchange, "hookrelay.events");
        assert_eq!(
            p.amqp.uri[0].expose(),
            "amqp://guest:guest@127.0.0.1:5672/%2f"
        );
    }
}
