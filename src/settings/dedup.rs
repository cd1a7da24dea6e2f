//! `[dedup]`: the dedup window, in process or shared through Redis.

use hookrelay_common::Secret;
use serde::Deserialize;

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

pub(super) fn d_redis_url() -> Secret {
    Secret::new("redis://127.0.0.1:6379/0")
}

pub(super) fn d_redis_prefix() -> String {
    "hookrelay:dedup:".to_owned()
}

pub(super) fn d_redis_timeout() -> u64 {
    1000
}

pub(super) fn d_window() -> u64 {
    600
}

pub(super) fn d_max_entries() -> usize {
    100_000
}
