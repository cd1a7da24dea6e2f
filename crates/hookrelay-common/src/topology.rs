//! Exchanges, queues, the history stream and bindings, declared by code.
//! `config/rabbitmq/definitions.json` mirrors exactly this; a test compares the two so
//! they cannot drift.

use crate::settings::SettingsError;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};
use serde::Deserialize;

/// The alternate exchange of `exchange`, and the name of the queue that keeps what it gets.
pub fn unrouted_name(exchange: &str) -> String {
    format!("{exchange}.unrouted")
}
/// Where a worker's failed message waits out its retry delay.
pub fn retry_queue(queue: &str) -> String {
    format!("{queue}.retry")
}
/// Where a worker's message goes after `max_attempts` failures.
pub fn parked_queue(queue: &str) -> String {
    format!("{queue}.parked")
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn string(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

/// The events exchange (durable topic) with its alternate exchange (fanout) and the
/// durable queue that keeps messages no binding matched: nothing published is lost.
pub async fn declare_events(channel: &Channel, exchange: &str) -> lapin::Result<()> {
    let unrouted = unrouted_name(exchange);
    channel
        .exchange_declare(
            ShortString::from(unrouted.as_str()),
            ExchangeKind::Fanout,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            ShortString::from(unrouted.as_str()),
            durable_queue(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            ShortString::from(unrouted.as_str()),
            ShortString::from(unrouted.as_str()),
            ShortString::from(""),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            ShortString::from(exchange),
            ExchangeKind::Topic,
            durable_exchange(),
            events_exchange_arguments(exchange),
        )
        .await?;
    Ok(())
}

/// Arguments of the events exchange (also used by the definitions check).
pub fn events_exchange_arguments(exchange: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("alternate-exchange"),
        string(&unrouted_name(exchange)),
    );
    args
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

/// A worker's queue family: the work queue bound to the events exchange, its retry queue
/// (per-message TTL, dead-letters back to the work queue) and its parked queue.
#[derive(Debug, Clone)]
pub struct WorkerQueue {
    pub name: String,
    pub bindings: Vec<String>,
    pub queue_type: QueueType,
}

/// Arguments for the work and parked queues.
pub fn work_queue_arguments(queue_type: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        string(queue_type.as_str()),
    );
    args
}

/// Arguments for the retry queue: an expired message (its per-message TTL is the retry
/// delay) is dead-lettered through the default exchange straight back to the work queue.
pub fn retry_queue_arguments(queue: &str, queue_type: QueueType) -> FieldTable {
    let mut args = work_queue_arguments(queue_type);
    args.insert(ShortString::from("x-dead-letter-exchange"), string(""));
    args.insert(
        ShortString::from("x-dead-letter-routing-key"),
        string(queue),
    );
    args
}

pub async fn declare_worker_queue(
    channel: &Channel,
    exchange: &str,
    wq: &WorkerQueue,
) -> lapin::Result<()> {
    declare_events(channel, exchange).await?;
    channel
        .queue_declare(
            ShortString::from(wq.name.as_str()),
            durable_queue(),
            work_queue_arguments(wq.queue_type),
        )
        .await?;
    channel
        .queue_declare(
            ShortString::from(retry_queue(&wq.name).as_str()),
            durable_queue(),
            retry_queue_arguments(&wq.name, wq.queue_type),
        )
        .await?;
    channel
        .queue_declare(
            ShortString::from(parked_queue(&wq.name).as_str()),
            durable_queue(),
            work_queue_arguments(wq.queue_type),
        )
        .await?;
    for key in &wq.bindings {
        channel
            .queue_bind(
                ShortString::from(wq.name.as_str()),
                ShortString::from(exchange),
                ShortString::from(key.as_str()),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// The default name of the history stream of `exchange`.
pub fn history_name(exchange: &str) -> String {
    format!("{exchange}.history")
}

/// `[history]`: a RabbitMQ stream bound to the events exchange with `#`, so every event
/// is kept for `max_age` (or until the stream holds `max_bytes`), whatever consumers exist.
#[derive(Debug, Clone, Deserialize)]
pub struct HistorySettings {
    #[serde(default = "d_true")]
    pub enabled: bool,
    /// The stream's name; unset or empty means `<amqp.exchange>.history`.
    #[serde(default)]
    pub stream: Option<String>,
    /// Retention by age, in RabbitMQ's `x-max-age` syntax: a number and one of
    /// `Y`, `M`, `D`, `h`, `m`, `s` (`7D`, `36h`).
    #[serde(default = "d_max_age")]
    pub max_age: String,
    /// Retention by size (`x-max-length-bytes`): the oldest segments go first past it.
    #[serde(default = "d_max_bytes")]
    pub max_bytes: u64,
}

fn d_true() -> bool {
    true
}
fn d_max_age() -> String {
    "7D".to_owned()
}
fn d_max_bytes() -> u64 {
    5_000_000_000
}

impl Default for HistorySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            stream: None,
            max_age: d_max_age(),
            max_bytes: d_max_bytes(),
        }
    }
}

impl HistorySettings {
    /// The stream's name for the events exchange `exchange`.
    pub fn stream_name(&self, exchange: &str) -> String {
        match self.stream.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => s.to_owned(),
            _ => history_name(exchange),
        }
    }

    /// Checked before anything connects, so a typo is a start-up error naming the key
    /// rather than a broker refusing the declaration later.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if max_age_seconds(&self.max_age).is_none() {
            return Err(SettingsError::key(
                "history.max_age",
                format!(
                    "`{}` is not a RabbitMQ x-max-age: a positive number and one of Y, M, D, h, m, s (e.g. 7D, 36h)",
                    self.max_age
                ),
            ));
        }
        if self.max_bytes == 0 || i64::try_from(self.max_bytes).is_err() {
            return Err(SettingsError::key(
                "history.max_bytes",
                "must be between 1 and 9223372036854775807",
            ));
        }
        Ok(())
    }
}

/// `x-max-age` as seconds (`Y` = 365 days, `M` = 30 days, as RabbitMQ counts them), or
/// `None` when RabbitMQ would refuse it.
pub fn max_age_seconds(v: &str) -> Option<u64> {
    let v = v.trim();
    let unit = v.chars().last()?;
    let n: u64 = v[..v.len() - unit.len_utf8()].parse().ok()?;
    if n == 0
        || !v[..v.len() - unit.len_utf8()]
            .bytes()
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs = match unit {
        'Y' => 365 * 86_400,
        'M' => 30 * 86_400,
        'D' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return None,
    };
    n.checked_mul(secs)
}

/// Arguments of the history stream: the queue type and its two retention limits.
pub fn history_stream_arguments(h: &HistorySettings) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-queue-type"), string("stream"));
    args.insert(ShortString::from("x-max-age"), string(h.max_age.trim()));
    args.insert(
        ShortString::from("x-max-length-bytes"),
        AMQPValue::LongLongInt(i64::try_from(h.max_bytes).unwrap_or(i64::MAX)),
    );
    args
}

/// How declaring the history stream went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryDeclared {
    /// Declared (or already there with the same arguments) and bound with `#`.
    Ready { stream: String },
    /// `history.enabled = false`: nothing declared.
    Off,
    /// The broker refused the declaration, usually because a queue of that name exists
    /// with other arguments (another `max_age`, not a stream, ...). Publishing goes on;
    /// whatever binding that queue already has stays as it was.
    Refused { stream: String, reason: String },
}

/// Declare the history stream of `exchange` and bind it with `#` (on every (re)connect).
///
/// It runs on a channel of its own: a declaration the broker refuses (PRECONDITION_FAILED
/// for a stream declared earlier with other arguments) closes the channel it ran on, and
/// that must not be a publishing channel. A refusal is returned as
/// [`HistoryDeclared::Refused`], not an error: the relay keeps publishing. Only a
/// connection-level failure is an `Err`.
pub async fn declare_history(
    conn: &Connection,
    exchange: &str,
    h: &HistorySettings,
) -> lapin::Result<HistoryDeclared> {
    if !h.enabled {
        return Ok(HistoryDeclared::Off);
    }
    let stream = h.stream_name(exchange);
    let ch = conn.create_channel().await?;
    let declared = ch
        .queue_declare(
            ShortString::from(stream.as_str()),
            durable_queue(),
            history_stream_arguments(h),
        )
        .await;
    if let Err(e) = declared {
        if !conn.status().connected() {
            return Err(e);
        }
        return Ok(HistoryDeclared::Refused {
            stream,
            reason: e.to_string(),
        });
    }
    let bound = ch
        .queue_bind(
            ShortString::from(stream.as_str()),
            ShortString::from(exchange),
            ShortString::from("#"),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    if let Err(e) = bound {
        if !conn.status().connected() {
            return Err(e);
        }
        return Ok(HistoryDeclared::Refused {
            stream,
            reason: format!("binding it to {exchange}: {e}"),
        });
    }
    let _ = ch.close(200, ShortString::from("history declared")).await;
    Ok(HistoryDeclared::Ready { stream })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_follows_rabbitmq_syntax() {
        assert_eq!(max_age_seconds("7D"), Some(7 * 86_400));
        assert_eq!(max_age_seconds("36h"), Some(36 * 3_600));
        assert_eq!(max_age_seconds("1Y"), Some(365 * 86_400));
        assert_eq!(max_age_seconds("90s"), Some(90));
        for bad in ["", "7", "D", "7d", "0D", "-1D", "1.5h", "7 D", "7DD"] {
            assert_eq!(max_age_seconds(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stream_name_defaults_to_the_exchange_and_empty_counts_as_missing() {
        let mut h = HistorySettings::default();
        assert_eq!(h.stream_name("x.events"), "x.events.history");
        h.stream = Some("  ".into());
        assert_eq!(h.stream_name("x.events"), "x.events.history");
        h.stream = Some("kept".into());
        assert_eq!(h.stream_name("x.events"), "kept");
    }

    #[test]
    fn validation_names_the_key() {
        let h = HistorySettings {
            max_age: "7days".into(),
            ..Default::default()
        };
        assert!(h
            .validate()
            .unwrap_err()
            .to_string()
            .contains("history.max_age"));
        let h = HistorySettings {
            max_bytes: 0,
            ..Default::default()
        };
        assert!(h
            .validate()
            .unwrap_err()
            .to_string()
            .contains("history.max_bytes"));
        HistorySettings::default().validate().unwrap();
    }
}
