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

/// Top-level sections only the relay reads (the workers leave them to it).
pub const RELAY_ONLY: &[&str] = &["server", "durability", "spool", "dedup", "sources"];

/// Top-level sections only the workers read (the relay leaves them to them).
pub const WORKERS_ONLY: &[&str] = &["worker", "archive", "forward"];

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
    let (cfg, _) = build(file, env)?;
    Ok(cfg.try_deserialize()?)
}

/// As [`load_with_env`], but a key nothing reads is an error naming it (and the
/// environment variable that set it, and the nearest known key), so a typo such as
/// `HOOKRELAY__DEDUP__BAKEND` or `bnid = ...` stops the start instead of being ignored.
/// `foreign` lists the top-level sections another program reads from the same files
/// (the relay and the workers share them); those are left to that program.
pub fn load_strict<T: DeserializeOwned>(
    file: Option<&Path>,
    env: Vec<(String, String)>,
    foreign: &[&str],
) -> Result<T, SettingsError> {
    let (cfg, env_map) = build(file, env)?;
    // The merged tree, for the names a typo is compared with.
    let tree: serde_json::Value = cfg
        .clone()
        .try_deserialize()
        .unwrap_or(serde_json::Value::Null);
    let mut unknown = Vec::new();
    let value: T = serde_ignored::deserialize(cfg, |path| unknown.push(path.to_string()))?;
    for path in unknown {
        let top = path.split('.').next().unwrap_or_default();
        if foreign.contains(&top) {
            continue;
        }
        return Err(SettingsError::key(
            path.clone(),
            unknown_key_reason(&path, &tree, &env_map, foreign),
        ));
    }
    Ok(value)
}

/// "is not a known key (set by HOOKRELAY__X__Y; did you mean `x.z`?)".
fn unknown_key_reason(
    path: &str,
    tree: &serde_json::Value,
    env: &config::Map<String, String>,
    foreign: &[&str],
) -> String {
    let (parent, leaf) = match path.rsplit_once('.') {
        Some((p, l)) => (Some(p), l),
        None => (None, path),
    };
    let mut node = tree;
    for part in parent.into_iter().flat_map(|p| p.split('.')) {
        node = node.get(part).unwrap_or(&serde_json::Value::Null);
    }
    let mut siblings: Vec<String> = node
        .as_object()
        .map(|m| m.keys().filter(|k| *k != leaf).cloned().collect())
        .unwrap_or_default();
    if parent.is_none() {
        siblings.extend(foreign.iter().map(|s| (*s).to_owned()));
    }
    let limit = (leaf.chars().count() / 3).max(1);
    let nearest = siblings
        .iter()
        .map(|k| (strsim::osa_distance(leaf, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| match parent {
            Some(p) => format!("{p}.{k}"),
            None => k.clone(),
        });
    let var = format!(
        "HOOKRELAY__{}",
        path.to_ascii_uppercase().replace('.', "__")
    );
    let set_by = env
        .keys()
        .any(|k| k.eq_ignore_ascii_case(&var))
        .then(|| format!("set by {var}"));
    let hints: Vec<String> = set_by
        .into_iter()
        .chain(nearest.map(|n| format!("did you mean `{n}`?")))
        .collect();
    if hints.is_empty() {
        "is not a known key".to_owned()
    } else {
        format!("is not a known key ({})", hints.join("; "))
    }
}

/// The layers, and the environment's `HOOKRELAY__*` variables.
fn build(
    file: Option<&Path>,
    env: Vec<(String, String)>,
) -> Result<(Config, config::Map<String, String>), SettingsError> {
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
            .source(Some(env_map.clone())),
    );
    Ok((builder.build()?, env_map))
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
    fn unknown_keys_are_refused_naming_the_variable_and_the_nearest_key() {
        let strict = |env: &[(&str, &str)]| {
            load_strict::<Probe>(
                None,
                env.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                &[RELAY_ONLY, WORKERS_ONLY, &["log", "history"]].concat(),
            )
        };
        let e = strict(&[("HOOKRELAY__AMQP__EXCHANGES", "x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("amqp.exchanges"), "{e}");
        assert!(e.contains("set by HOOKRELAY__AMQP__EXCHANGES"), "{e}");
        assert!(e.contains("did you mean `amqp.exchange`?"), "{e}");
        let e = strict(&[("HOOKRELAY__AMPQ__URI", "x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ampq`") || e.contains("ampq"), "{e}");
        // Another program's section is left to it.
        assert!(strict(&[("HOOKRELAY__WORKER__PREFETCH", "1")]).is_ok());
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
