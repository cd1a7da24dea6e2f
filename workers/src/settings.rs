//! The workers' view of the shared configuration: `[amqp]`, `[log]`, `[worker]`,
//! `[archive]`, `[forward]` and `[history]` (the relay's sections are ignored here).

use crate::consume::WorkerSettings;
use hookrelay_common::amqp::AmqpSettings;
use hookrelay_common::logging::LogSettings;
use hookrelay_common::settings::{self, SettingsError};
use hookrelay_common::topology::HistorySettings;
use hookrelay_common::Secret;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub amqp: AmqpSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub worker: WorkerSettings,
    #[serde(default)]
    pub archive: ArchiveSettings,
    #[serde(default)]
    pub forward: ForwardSettings,
    /// `[history]`: which stream `history` and `tail --since` read (`history.stream`).
    #[serde(default)]
    pub history: HistorySettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ArchiveSettings {
    /// Directory of the `<YYYY-MM-DD>.jsonl` files.
    #[serde(default = "d_archive_dir")]
    pub dir: PathBuf,
}

fn d_archive_dir() -> PathBuf {
    PathBuf::from("data/archive")
}

impl Default for ArchiveSettings {
    fn default() -> Self {
        Self {
            dir: d_archive_dir(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ForwardSettings {
    /// Downstream URL; `--url` wins.
    #[serde(default)]
    pub url: Option<String>,
    /// Standard Webhooks signing secret, `whsec_<base64 key>`.
    #[serde(default)]
    pub secret: Secret,
    /// Per-request timeout.
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
}

fn d_timeout() -> u64 {
    10_000
}

impl Default for ForwardSettings {
    fn default() -> Self {
        Self {
            url: None,
            secret: Secret::default(),
            timeout_ms: d_timeout(),
        }
    }
}

impl Settings {
    /// Load the layers (default file → `file` → `HOOKRELAY__*` env) and validate what every
    /// subcommand needs; kind-specific keys are checked by the kind.
    // Start-up only: the shared SettingsError's size costs nothing here.
    #[allow(clippy::result_large_err)]
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_with_env(file, std::env::vars().collect())
    }

    /// As [`Settings::load`] with the environment given (tests use this).
    // Start-up only: the shared SettingsError's size costs nothing here.
    #[allow(clippy::result_large_err)]
    pub fn load_with_env(
        file: Option<&Path>,
        env: Vec<(String, String)>,
    ) -> Result<Self, SettingsError> {
        // The relay's sections are its own; any other key nothing reads is refused.
        let s: Settings = settings::load_strict(file, env, settings::RELAY_ONLY)?;
        s.validate()?;
        Ok(s)
    }

    // Start-up only: the shared SettingsError's size costs nothing here.
    #[allow(clippy::result_large_err)]
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.amqp.validate()?;
        self.worker.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_is_refused_and_the_relay_s_sections_are_left_to_it() {
        let e = Settings::load_with_env(
            None,
            vec![("HOOKRELAY__WORKER__PREFECH".into(), "8".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("worker.prefech") && e.contains("did you mean `worker.prefetch`?"),
            "{e}"
        );
        assert!(Settings::load_with_env(
            None,
            vec![("HOOKRELAY__SERVER__BIND".into(), "0.0.0.0:9".into())]
        )
        .is_ok());
    }

    #[test]
    fn shipped_defaults_load() {
        let s = Settings::load_with_env(None, vec![]).unwrap();
        assert_eq!(s.worker.prefetch, 32);
        assert_eq!(s.archive.dir, PathBuf::from("data/archive"));
        assert!(s.forward.secret.expose().starts_with("whsec_"));
        assert_eq!(s.forward.timeout_ms, 10_000);
    }

    #[test]
    fn env_sets_forward_secret_and_an_invalid_prefetch_names_its_key() {
        let s = Settings::load_with_env(
            None,
            vec![("HOOKRELAY__FORWARD__SECRET".into(), "whsec_c2VjcmV0".into())],
        )
        .unwrap();
        assert_eq!(s.forward.secret.expose(), "whsec_c2VjcmV0");
        assert!(
            !format!("{s:?}").contains("c2VjcmV0"),
            "secret leaked in Debug"
        );
        let e = Settings::load_with_env(
            None,
            vec![("HOOKRELAY__WORKER__PREFETCH".into(), "0".into())],
        )
        .unwrap_err();
        assert!(e.to_string().contains("worker.prefetch"), "{e}");
    }
}
