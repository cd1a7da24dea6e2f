//! The forward worker: POST each event (the message body, byte for byte) to a downstream
//! URL, signed per Standard Webhooks; a 2xx acks, anything else or a timeout retries.

use crate::cli::ForwardArgs;
use crate::consume::{self, Failure, Handler, Incoming};
use crate::settings::Settings;
use crate::signing;
use crate::WorkerError;
use hookrelay_common::settings::SettingsError;
use hookrelay_common::Secret;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The forward worker's queue when neither `--queue` nor `worker.queue` is set.
pub const DEFAULT_QUEUE: &str = "hookrelay.forward";
/// How much of a failing response's body goes into the error (and a parked message's header).
const MAX_ERROR_BODY: usize = 200;

/// Run the forward worker until `shutdown`.
pub async fn run<S>(settings: &Settings, args: ForwardArgs, shutdown: S) -> Result<(), WorkerError>
where
    S: Future<Output = ()> + Send,
{
    let url = args
        .url
        .or_else(|| settings.forward.url.clone())
        .unwrap_or_default();
    let forwarder = Forwarder::new(
        &url,
        &settings.forward.secret,
        Duration::from_millis(settings.forward.timeout_ms),
    )?;
    let queue = settings
        .worker
        .queue_name(args.queue.as_deref(), DEFAULT_QUEUE);
    let bindings = settings.worker.bindings(&args.bind);
    tracing::info!(url = %forwarder.url_for_logs(), queue = %queue, ?bindings, "forward worker starting");
    let cfg = settings
        .worker
        .consume_config(settings.amqp.clone(), "forward", queue, bindings);
    consume::run(cfg, Arc::new(forwarder), shutdown).await;
    Ok(())
}

pub struct Forwarder {
    client: reqwest::Client,
    url: reqwest::Url,
    key: Vec<u8>,
    timeout: Duration,
}

impl Forwarder {
    /// Validate the URL and secret (errors name the key, never the secret) and build the client.
    // Start-up only: the shared SettingsError's size costs nothing here.
    #[allow(clippy::result_large_err)]
    pub fn new(url: &str, secret: &Secret, timeout: Duration) -> Result<Self, SettingsError> {
        let url = url.trim();
        if url.is_empty() {
            return Err(SettingsError::key(
                "forward.url",
                "is missing (give --url URL)",
            ));
        }
        let url = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| SettingsError::key("forward.url", "is not an http(s) URL"))?;
        let key = signing::decode_secret(secret.expose())
            .map_err(|e| SettingsError::key("forward.secret", e))?;
        if timeout.is_zero() {
            return Err(SettingsError::key(
                "forward.timeout_ms",
                "must be at least 1",
            ));
        }
        let client = reqwest::Client::builder()
            // The whole request, connect to last body byte: a stuck downstream is a failed
            // attempt (retried later), not a delivery held forever.
            .timeout(timeout)
            .build()
            .map_err(|e| {
                SettingsError::key("forward", format!("cannot build the HTTP client: {e}"))
            })?;
        Ok(Self {
            client,
            url,
            key,
            timeout,
        })
    }

    /// The URL without credentials or query (either may carry a token).
    fn url_for_logs(&self) -> String {
        format!(
            "{}://{}{}",
            self.url.scheme(),
            self.url
                .host_str()
                .map(|h| match self.url.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_owned(),
                })
                .unwrap_or_default(),
            self.url.path()
        )
    }
}

impl Handler for Forwarder {
    async fn handle(&self, msg: &Incoming) -> Result<(), Failure> {
        // Signed per attempt: the timestamp is when this request is sent, so a receiver's
        // replay window applies to each attempt, not to the first one.
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let signature = signing::sign(&self.key, &msg.event.id, timestamp, &msg.body);
        let sent = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", msg.event.id.as_str())
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(msg.body.clone())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Err(Failure::Retry(format!(
                    "downstream did not answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
            // `without_url`: the URL may carry a token; the log and the parked header must not.
            Err(e) => {
                return Err(Failure::Retry(format!(
                    "request failed: {}",
                    error_chain(&e.without_url())
                )))
            }
        };
        let status = response.status();
        // Read the body either way: it frees the connection for reuse, and on failure a
        // little of it says why.
        let body = response.bytes().await;
        if status.is_success() {
            tracing::debug!(event_id = %msg.event.id, %status, "forwarded");
            return Ok(());
        }
        let detail = body
            .map(|b| {
                let text = String::from_utf8_lossy(&b);
                consume::truncate(text.trim(), MAX_ERROR_BODY)
            })
            .unwrap_or_default();
        Err(Failure::Retry(if detail.is_empty() {
            format!("downstream answered {status}")
        } else {
            format!("downstream answered {status}: {detail}")
        }))
    }
}

/// An error and its sources, `: `-joined (reqwest's top-level text alone is vague).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_key_and_hide_the_secret() {
        let ok = Secret::new("whsec_c2VjcmV0");
        let t = Duration::from_secs(1);
        let e = Forwarder::new("", &ok, t).err().unwrap();
        assert!(e.to_string().contains("forward.url"));
        let e = Forwarder::new("ftp://x/", &ok, t).err().unwrap();
        assert!(e.to_string().contains("forward.url"));
        let bad = Secret::new("whsec_%%%hunter2");
        let e = Forwarder::new("http://127.0.0.1:1/x", &bad, t)
            .err()
            .unwrap();
        assert!(e.to_string().contains("forward.secret"));
        assert!(!e.to_string().contains("hunter2"));
        let f = Forwarder::new("http://user:pw@127.0.0.1:9/in?token=t", &ok, t).unwrap();
        assert_eq!(f.url_for_logs(), "http://127.0.0.1:9/in");
    }
}
