//! `[worker]` settings and the description of what a worker consumes ([`ConsumeConfig`]).

use hookrelay_common::amqp::AmqpSettings;
use hookrelay_common::settings::{string_or_list, SettingsError};
use hookrelay_common::topology::{QueueType, WorkerQueue};
use serde::Deserialize;
use std::time::Duration;

/// `[worker]` in the configuration: what every durable worker kind shares.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    /// The durable queue; unset or empty means the kind's default (`hookrelay.archive`, ...).
    #[serde(default)]
    pub queue: Option<String>,
    /// Binding keys on the events exchange (a TOML array or a comma-separated string).
    #[serde(default = "d_bind", deserialize_with = "string_or_list")]
    pub bind: Vec<String>,
    /// Unacknowledged deliveries held at once (basic.qos).
    #[serde(default = "d_prefetch")]
    pub prefetch: u16,
    /// Attempts before a message is parked.
    #[serde(default = "d_max_attempts")]
    pub max_attempts: u32,
    /// Delay before a failed message is retried.
    #[serde(default = "d_retry_delay")]
    pub retry_delay_ms: u64,
    #[serde(default)]
    pub queue_type: QueueType,
}

fn d_bind() -> Vec<String> {
    vec!["#".to_owned()]
}
fn d_prefetch() -> u16 {
    32
}
fn d_max_attempts() -> u32 {
    5
}
fn d_retry_delay() -> u64 {
    5000
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            queue: None,
            bind: d_bind(),
            prefetch: d_prefetch(),
            max_attempts: d_max_attempts(),
            retry_delay_ms: d_retry_delay(),
            queue_type: QueueType::default(),
        }
    }
}

impl WorkerSettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.prefetch == 0 {
            // 0 means "unlimited" to AMQP: a worker would pull the whole queue into memory.
            return Err(SettingsError::key(
                "worker.prefetch",
                "must be between 1 and 65535",
            ));
        }
        if self.max_attempts == 0 {
            return Err(SettingsError::key(
                "worker.max_attempts",
                "must be at least 1",
            ));
        }
        if self.retry_delay_ms == 0 {
            return Err(SettingsError::key(
                "worker.retry_delay_ms",
                "must be at least 1 (0 would retry in a hot loop)",
            ));
        }
        Ok(())
    }

    /// The queue name: the `--queue` flag, else `worker.queue`, else the kind's default.
    /// An empty value counts as missing.
    pub fn queue_name(&self, flag: Option<&str>, kind_default: &str) -> String {
        flag.filter(|q| !q.trim().is_empty())
            .or(self.queue.as_deref().filter(|q| !q.trim().is_empty()))
            .unwrap_or(kind_default)
            .trim()
            .to_owned()
    }

    /// The binding keys: the `--bind` flags when any were given, else `worker.bind`,
    /// else `#` (everything).
    pub fn bindings(&self, flags: &[String]) -> Vec<String> {
        let flags: Vec<String> = flags
            .iter()
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect();
        if !flags.is_empty() {
            flags
        } else if !self.bind.is_empty() {
            self.bind.clone()
        } else {
            d_bind()
        }
    }

    /// A [`ConsumeConfig`] for a durable worker of kind `kind` (`archive`, `forward`).
    pub fn consume_config(
        &self,
        amqp: AmqpSettings,
        kind: &str,
        queue: String,
        bindings: Vec<String>,
    ) -> ConsumeConfig {
        ConsumeConfig {
            connection_name: connection_name(kind, &queue),
            amqp,
            queue: QueueSpec::Durable(WorkerQueue {
                name: queue,
                bindings,
                queue_type: self.queue_type,
            }),
            prefetch: self.prefetch,
            max_in_flight: usize::from(self.prefetch),
            max_attempts: self.max_attempts,
            retry_delay: Duration::from_millis(self.retry_delay_ms),
        }
    }
}

/// The connection name shown in the RabbitMQ management UI, so an operator sees which
/// worker consumes which queue: `hookrelay-worker archive (hookrelay.archive)`.
pub fn connection_name(kind: &str, what: &str) -> String {
    format!("hookrelay-worker {kind} ({what})")
}

/// Which queue a worker consumes.
#[derive(Debug, Clone)]
pub enum QueueSpec {
    /// A worker's own durable queue family (work, retry, parked), declared with
    /// [`topology::declare_worker_queue`].
    Durable(WorkerQueue),
    /// A server-named, exclusive, auto-delete queue bound with these keys: for people
    /// watching a stream (`tail`). Declares nothing durable but the events exchange, and
    /// has nowhere to retry or park, so every delivery is acked once handled.
    Ephemeral { bindings: Vec<String> },
}

/// Everything [`run`] needs.
#[derive(Debug, Clone)]
pub struct ConsumeConfig {
    pub amqp: AmqpSettings,
    pub connection_name: String,
    pub queue: QueueSpec,
    /// basic.qos prefetch count.
    pub prefetch: u16,
    /// Deliveries handled concurrently (at most `prefetch`; 1 keeps order, e.g. for tail).
    pub max_in_flight: usize,
    pub max_attempts: u32,
    pub retry_delay: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_config_and_empty_counts_as_missing() {
        let w = WorkerSettings {
            queue: Some(" ".into()),
            bind: vec!["chatwoot.#".into()],
            ..Default::default()
        };
        assert_eq!(w.queue_name(None, "hookrelay.archive"), "hookrelay.archive");
        assert_eq!(w.queue_name(Some("mine"), "hookrelay.archive"), "mine");
        assert_eq!(w.bindings(&[]), vec!["chatwoot.#".to_owned()]);
        assert_eq!(
            w.bindings(&["*.message.created".to_owned()]),
            vec!["*.message.created".to_owned()]
        );
        let none = WorkerSettings {
            bind: vec![],
            ..Default::default()
        };
        assert_eq!(none.bindings(&[]), vec!["#".to_owned()]);
    }

    #[test]
    fn validation_names_the_key() {
        let w = WorkerSettings {
            prefetch: 0,
            ..Default::default()
        };
        assert!(w
            .validate()
            .unwrap_err()
            .to_string()
            .contains("worker.prefetch"));
        let w = WorkerSettings {
            max_attempts: 0,
            ..Default::default()
        };
        assert!(w
            .validate()
            .unwrap_err()
            .to_string()
            .contains("worker.max_attempts"));
    }

    #[test]
    fn worker_settings_load_from_env() {
        #[derive(Deserialize)]
        struct Probe {
            worker: WorkerSettings,
        }
        let env = vec![
            ("HOOKRELAY__WORKER__QUEUE".to_owned(), "q.custom".to_owned()),
            (
                "HOOKRELAY__WORKER__BIND".to_owned(),
                "chatwoot.#, *.message.created".to_owned(),
            ),
            ("HOOKRELAY__WORKER__PREFETCH".to_owned(), "7".to_owned()),
            (
                "HOOKRELAY__WORKER__QUEUE_TYPE".to_owned(),
                "quorum".to_owned(),
            ),
        ];
        let p: Probe = hookrelay_common::settings::load_with_env(None, env).unwrap();
        assert_eq!(p.worker.queue.as_deref(), Some("q.custom"));
        assert_eq!(p.worker.bind, vec!["chatwoot.#", "*.message.created"]);
        assert_eq!(p.worker.prefetch, 7);
        assert_eq!(p.worker.queue_type, QueueType::Quorum);
    }
}
