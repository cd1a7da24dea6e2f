//! `[durability]` and `[spool]`: when a 200 is given, and the local spool.

use serde::Deserialize;
use std::path::PathBuf;

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

pub(super) fn d_true() -> bool {
    true
}

pub(super) fn d_spool_max() -> u64 {
    1 << 30
}

pub(super) fn d_drain_inflight() -> usize {
    256
}
