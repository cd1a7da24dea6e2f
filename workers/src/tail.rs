//! The tail worker: print matching events live, one line each, from a server-named,
//! exclusive, auto-delete queue. For people watching a stream; it keeps nothing.

use crate::cli::TailArgs;
use crate::consume::{self, ConsumeConfig, Failure, Handler, Incoming, QueueSpec};
use crate::settings::Settings;
use crate::WorkerError;
use hookrelay_common::event::CloudEvent;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Characters of message text shown per line.
const TEXT_CHARS: usize = 80;

/// Run tail until `shutdown`, or until stdout is closed (`| head`).
pub async fn run<S>(settings: &Settings, args: TailArgs, shutdown: S) -> Result<(), WorkerError>
where
    S: Future<Output = ()> + Send,
{
    let bindings = if args.bind.iter().any(|k| !k.trim().is_empty()) {
        args.bind
            .iter()
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect()
    } else {
        vec!["#".to_owned()]
    };
    if let Some(since) = &args.since {
        let patterns = crate::topic::Patterns::new(&bindings);
        return Ok(crate::history::follow(settings, since, patterns, args.json, shutdown).await?);
    }
    let cfg = ConsumeConfig {
        amqp: settings.amqp.clone(),
        connection_name: consume::connection_name("tail", &bindings.join(" ")),
        queue: QueueSpec::Ephemeral { bindings },
        prefetch: settings.worker.prefetch,
        // One at a time: lines come out in the order the broker delivered them.
        max_in_flight: 1,
        max_attempts: 1,
        retry_delay: Duration::from_millis(settings.worker.retry_delay_ms),
    };
    let closed = Arc::new(Notify::new());
    let handler = Arc::new(Tail {
        json: args.json,
        closed: closed.clone(),
    });
    let stop = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = closed.notified() => tracing::info!("stdout closed, stopping"),
        }
    };
    consume::run(cfg, handler, stop).await;
    Ok(())
}

struct Tail {
    json: bool,
    closed: Arc<Notify>,
}

impl Handler for Tail {
    async fn handle(&self, msg: &Incoming) -> Result<(), Failure> {
        let line = if self.json {
            json_line(&msg.body)
        } else {
            let mut l = summary(&msg.event).into_bytes();
            l.push(b'\n');
            l
        };
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(&line).and_then(|()| out.flush()) {
            // Nobody is reading any more: stop (the throw-away queue goes with us).
            self.closed.notify_one();
            return Err(Failure::Park(format!("stdout: {e}")));
        }
        Ok(())
    }
}

/// The event exactly as published, on one line ending in `\n` (a raw CR or LF inside
/// JSON can only be whitespace, so it becomes a space).
pub fn json_line(body: &[u8]) -> Vec<u8> {
    let mut line: Vec<u8> = body
        .iter()
        .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
        .collect();
    line.push(b'\n');
    line
}

/// `<time>  <routing key>  <id>  <sender>: <short text>`.
pub fn summary(ev: &CloudEvent) -> String {
    let (who, what) = describe(ev);
    format!(
        "{}  {}  {}  {}: {}",
        ev.time,
        ev.ty,
        ev.id,
        who.unwrap_or_else(|| "-".to_owned()),
        short(&what)
    )
}

/// Who did it and what, from whichever part of `data` the event has.
fn describe(ev: &CloudEvent) -> (Option<String>, String) {
    let d = &ev.data;
    if let Some(m) = &d.message {
        let who = m.sender.as_ref().and_then(|s| {
            s.name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .or_else(|| s.email.clone())
                .or_else(|| s.id.clone())
        });
        let mut text = m.text.clone().unwrap_or_default();
        if text.trim().is_empty() && !m.attachments.is_empty() {
            text = format!("[{} attachment(s)]", m.attachments.len());
        }
        return (who, text);
    }
    if let Some(c) = &d.conversation {
        return (
            None,
            format!(
                "conversation {} {}",
                c.id.as_deref().unwrap_or("?"),
                c.status.as_deref().unwrap_or("")
            ),
        );
    }
    if let Some(c) = &d.contact {
        return (
            c.name.clone().or_else(|| c.email.clone()),
            format!("contact {}", c.id.as_deref().unwrap_or("?")),
        );
    }
    (None, d.vendor_event.clone())
}

/// Whitespace collapsed to single spaces, at most [`TEXT_CHARS`] characters, `…` if cut.
fn short(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= TEXT_CHARS {
        return flat;
    }
    let mut s: String = flat.chars().take(TEXT_CHARS - 1).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_shows_time_key_id_sender_and_cut_text() {
        let long = "word ".repeat(40);
        let json = serde_json::json!({
            "specversion": "1.0", "id": "ev-1", "source": "/webhooks/chatwoot",
            "type": "chatwoot.message.created", "time": "2026-01-02T03:04:05Z",
            "datacontenttype": "application/json", "vendor": "chatwoot",
            "data": {"vendor": "chatwoot", "source": "chatwoot", "event": "message.created",
                     "vendor_event": "message_created", "received_at": "2026-01-02T03:04:05Z",
                     "message": {"text": format!("line one\n{long}"), "sender": {"name": "Ana"}},
                     "raw": {}}
        });
        let ev: CloudEvent = serde_json::from_value(json).unwrap();
        let s = summary(&ev);
        assert!(
            s.starts_with(
                "2026-01-02T03:04:05Z  chatwoot.message.created  ev-1  Ana: line one word"
            ),
            "{s}"
        );
        assert!(s.ends_with('…'), "{s}");
        assert!(!s.contains('\n'));
        assert!(s.chars().count() < 160, "{s}");
    }
}
