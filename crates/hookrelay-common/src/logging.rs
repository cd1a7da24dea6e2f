//! `tracing` set-up shared by every binary: human-readable or JSON lines on stderr.

use serde::Deserialize;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    #[serde(default)]
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    #[serde(default = "default_level")]
    pub level: String,
}

fn default_level() -> String {
    "info".to_owned()
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: default_level(),
        }
    }
}

/// Install the global subscriber. Safe to call twice (the second call is a no-op).
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Whatever the filter asks for, never the AMQP client's trace events.
    let no_frame_dumps = filter_fn(|meta| !dumps_frames(meta));
    let layer = fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match settings.format {
        LogFormat::Json => registry
            .with(layer.json().flatten_event(true).with_filter(no_frame_dumps))
            .try_init(),
        LogFormat::Text => registry.with(layer.with_filter(no_frame_dumps)).try_init(),
    };
}

/// lapin traces every AMQP frame it writes, and the connection's StartOk frame carries
/// the SASL PLAIN response, password included (as a byte list). Secrets are never
/// logged, so those events are dropped even at `trace`.
fn dumps_frames(meta: &Metadata<'_>) -> bool {
    *meta.level() == Level::TRACE
        && ["lapin", "amq_protocol"]
            .iter()
            .any(|c| meta.target().starts_with(c))
}
