//! Test plumbing: a real RabbitMQ (never mocked), unique names per test, events published
//! as the relay publishes them, workers run in-process or as the real binary.

use hookrelay_common::event::{APP_ID, CONTENT_TYPE};
use hookrelay_worker::cli::Cli;
use hookrelay_worker::settings::Settings;
use hookrelay_worker::WorkerError;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{json, Value};
use std::future::Future;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The broker the tests use; `HOOKRELAY_TEST_AMQP_URI` overrides.
pub fn amqp_uri() -> String {
    std::env::var("HOOKRELAY_TEST_AMQP_URI")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Names no other test (or run) uses: `hrtest.<random>`.
pub fn unique() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("hrtest.{}", &id[..12])
}

/// One test's exchange and worker queue.
pub struct Names {
    pub exchange: String,
    pub queue: String,
}

impl Names {
    pub fn new(kind: &str) -> Self {
        let base = unique();
        Self {
            exchange: format!("{base}.events"),
            queue: format!("{base}.{kind}"),
        }
    }
    pub fn retry(&self) -> String {
        format!("{}.retry", self.queue)
    }
    pub fn parked(&self) -> String {
        format!("{}.parked", self.queue)
    }
}

/// A CloudEvent as the relay publishes it (README: The event).
pub fn event(id: &str, vendor: &str, event: &str, time: &str, text: &str) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": format!("/webhooks/{vendor}"),
        "type": format!("{vendor}.{event}"),
        "subject": "conv-1",
        "time": time,
        "datacontenttype": "application/json",
        "vendor": vendor,
        "data": {
            "vendor": vendor,
            "source": vendor,
            "event": event,
            "vendor_event": event.replace('.', "_"),
            "received_at": time,
            "message": {
                "id": format!("m-{id}"),
                "text": text,
                "direction": "incoming",
                "sender": {"id": "u-1", "name": "Ana Lima", "kind": "contact"},
                "conversation": {"id": "conv-1"},
                "attachments": []
            },
            "raw": {"vendor": "payload", "text": text, "n": [1, 2.5, "\u{2028}"]}
        }
    })
}

/// Settings as a deployment would have them, from env-style pairs (never the process env,
/// so parallel tests cannot disturb each other).
pub fn settings(exchange: &str, extra: &[(&str, &str)]) -> Settings {
    let mut env = vec![
        ("HOOKRELAY__AMQP__URI".to_owned(), amqp_uri()),
        ("HOOKRELAY__AMQP__EXCHANGE".to_owned(), exchange.to_owned()),
        (
            "HOOKRELAY__AMQP__RECONNECT_INITIAL_MS".to_owned(),
            "50".to_owned(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Settings::load_with_env(None, env).expect("test settings")
}

/// A worker running in-process; [`Running::stop`] is its SIGTERM.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), WorkerError>>,
}

pub fn start(args: &[&str], settings: Settings) -> Running {
    let cli = <Cli as clap::Parser>::try_parse_from(
        std::iter::once("hookrelay-worker").chain(args.iter().copied()),
    )
    .expect("worker arguments");
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(hookrelay_worker::run(cli.command, settings, async move {
        let _ = rx.await;
    }));
    Running {
        stop: Some(tx),
        handle,
    }
}

impl Running {
    /// Ask it to stop and wait until it has (drained, acked, closed).
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.handle)
            .await
            .expect("worker did not stop within 20 s")
            .expect("worker task panicked")
            .expect("worker returned an error");
    }

    /// Wait for a run that ends by itself (replay).
    pub async fn finished(self) -> Result<(), WorkerError> {
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("worker did not finish within 20 s")
            .expect("worker task panicked")
    }
}

/// Poll `check` until it returns `Some`, or fail the test naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The test's own connection to the broker, playing the relay and the operator.
pub struct Broker {
    conn: Connection,
    ch: Channel,
}

impl Broker {
    pub async fn connect() -> Self {
        let uri = amqp_uri();
        let conn = Connection::connect(
            &uri,
            ConnectionProperties::default().with_connection_name("hookrelay-worker tests".into()),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RabbitMQ is not reachable at {uri} ({e}); these tests need a real broker on \
                 127.0.0.1:5672 (guest/guest)"
            )
        });
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Self { conn, ch }
    }

    /// Publish events to `exchange` exactly as the relay does (README: AMQP message), confirmed.
    pub async fn publish_events(&self, exchange: &str, events: &[Value]) {
        for ev in events {
            let body = serde_json::to_vec(ev).unwrap();
            let id = ev["id"].as_str().unwrap();
            let ty = ev["type"].as_str().unwrap();
            let mut headers = FieldTable::default();
            for k in ["vendor", "source"] {
                headers.insert(
                    k.into(),
                    AMQPValue::LongString(LongString::from(ev[k].as_str().unwrap_or(""))),
                );
            }
            headers.insert(
                "event".into(),
                AMQPValue::LongString(LongString::from(ev["data"]["event"].as_str().unwrap_or(""))),
            );
            let props = BasicProperties::default()
                .with_content_type(CONTENT_TYPE.into())
                .with_delivery_mode(2)
                .with_message_id(id.into())
                .with_type(ty.into())
                .with_app_id(APP_ID.into())
                .with_timestamp(1_700_000_000)
                .with_headers(headers);
            // Pipelined: all published, then all confirms awaited below (an unawaited
            // confirm is kept for wait_for_confirms).
            drop(
                self.ch
                    .basic_publish(
                        ShortString::from(exchange),
                        ShortString::from(ty),
                        BasicPublishOptions::default(),
                        &body,
                        props,
                    )
                    .await
                    .unwrap(),
            );
        }
        let returned = self.ch.wait_for_confirms().await.unwrap();
        assert!(returned.is_empty(), "publishes were returned");
    }

    /// Publish arbitrary bytes (for the not-a-CloudEvent case).
    pub async fn publish_raw(&self, exchange: &str, routing_key: &str, body: &[u8]) {
        let confirm = self
            .ch
            .basic_publish(
                ShortString::from(exchange),
                ShortString::from(routing_key),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type(CONTENT_TYPE.into()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }

    /// `(ready messages, consumers)` of a queue, `None` if it does not exist.
    pub async fn queue_state(&self, queue: &str) -> Option<(u32, u32)> {
        // Own channel: a passive declare of a missing queue closes the channel it runs on.
        let ch = self.conn.create_channel().await.unwrap();
        let r = ch
            .queue_declare(
                ShortString::from(queue),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        match r {
            Ok(q) => {
                let _ = ch.close(200, "ok".into()).await;
                Some((q.message_count(), q.consumer_count()))
            }
            Err(_) => None,
        }
    }

    pub async fn ready(&self, queue: &str) -> u32 {
        self.queue_state(queue)
            .await
            .unwrap_or_else(|| panic!("queue {queue} does not exist"))
            .0
    }

    /// Wait until `queue` exists and has a consumer (the worker declared and bound it).
    pub async fn wait_consumer(&self, queue: &str) {
        eventually(
            &format!("a consumer on {queue}"),
            Duration::from_secs(15),
            || async {
                match self.queue_state(queue).await {
                    Some((_, c)) if c > 0 => Some(()),
                    _ => None,
                }
            },
        )
        .await
    }

    /// Take (and ack) every ready message of `queue`.
    pub async fn drain(&self, queue: &str) -> Vec<lapin::message::Delivery> {
        let mut out = Vec::new();
        while let Some(m) = self
            .ch
            .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
        {
            m.delivery.ack(BasicAckOptions::default()).await.unwrap();
            out.push(m.delivery);
        }
        out
    }

    /// The events exchange and its history stream, declared by the relay's own code
    /// (`<exchange>.history`, bound with `#`); returns the stream's name.
    pub async fn declare_history(&self, exchange: &str) -> String {
        let ch = self.conn.create_channel().await.unwrap();
        hookrelay_common::topology::declare_events(&ch, exchange)
            .await
            .unwrap();
        let _ = ch.close(200, "ok".into()).await;
        let declared = hookrelay_common::topology::declare_history(
            &self.conn,
            exchange,
            &hookrelay_common::topology::HistorySettings::default(),
        )
        .await
        .unwrap();
        match declared {
            hookrelay_common::topology::HistoryDeclared::Ready { stream } => stream,
            other => panic!("history stream not declared: {other:?}"),
        }
    }

    /// A fresh channel on the test's connection (for declarations that may fail).
    pub async fn channel(&self) -> Channel {
        self.conn.create_channel().await.unwrap()
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Delete what a test declared (best effort; names are unique anyway). Streams keep
    /// their disk on the shared broker until deleted, so the history stream goes too.
    pub async fn cleanup(&self, names: &Names) {
        let ch = self.conn.create_channel().await.unwrap();
        for q in [
            names.queue.clone(),
            names.retry(),
            names.parked(),
            format!("{}.unrouted", names.exchange),
            format!("{}.history", names.exchange),
        ] {
            let _ = ch
                .queue_delete(ShortString::from(q.as_str()), QueueDeleteOptions::default())
                .await;
        }
        for x in [
            names.exchange.clone(),
            format!("{}.unrouted", names.exchange),
        ] {
            let _ = ch
                .exchange_delete(
                    ShortString::from(x.as_str()),
                    ExchangeDeleteOptions::default(),
                )
                .await;
        }
    }
}

/// A string header of a message.
pub fn header(props: &BasicProperties, name: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::LongInt(n) => Some(n.to_string()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// A fresh directory under cargo's per-target temp dir.
pub fn temp_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique());
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every archived line, parsed, with its file name, in file-name then line order.
pub fn archived(dir: &Path) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{name} ends mid-line"
        );
        for line in text.lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {line}"));
            out.push((name.clone(), v));
        }
    }
    out
}

/// The real binary, with its stdout and stderr read line by line.
pub struct Bin {
    pub child: Child,
    pub stdout: mpsc::UnboundedReceiver<String>,
    pub stderr: mpsc::UnboundedReceiver<String>,
}

impl Bin {
    /// Run `hookrelay-worker <args>` with `env`, and nothing of ours (`HOOKRELAY*`) inherited.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hookrelay-worker"));
        cmd.args(args)
            .current_dir(env!("CARGO_TARGET_TMPDIR"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("HOOKRELAY") {
                cmd.env_remove(k);
            }
        }
        cmd.env("HOOKRELAY__AMQP__URI", amqp_uri());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("run hookrelay-worker");
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// The next stdout line, within `timeout`.
    pub async fn next_stdout(&mut self, timeout: Duration) -> String {
        tokio::time::timeout(timeout, self.stdout.recv())
            .await
            .unwrap_or_else(|_| panic!("no stdout line within {timeout:?}"))
            .expect("stdout closed")
    }

    /// Read stderr until a line contains `needle`; returns that line.
    pub async fn stderr_until(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let line = tokio::time::timeout_at(deadline, self.stderr.recv())
                .await
                .unwrap_or_else(|_| panic!("no stderr line with {needle:?} within {timeout:?}"))
                .unwrap_or_else(|| panic!("stderr closed before a line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Send SIGTERM (with `kill`, as an orchestrator would).
    pub fn sigterm(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Wait for the exit, bounded; kills it (and fails) if it hangs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("hookrelay-worker did not exit within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(r).lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    rx
}

/// Deletes a stream when dropped, also when the test failed before its clean-up: a
/// stream keeps its disk on the shared broker until deleted.
pub struct DeleteOnDrop(pub String);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let name = self.0.clone();
        // A thread of its own with its own runtime: works whether or not the test's
        // runtime is still running (a panic unwinds through it).
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(conn) =
                    Connection::connect(&amqp_uri(), ConnectionProperties::default()).await
                {
                    if let Ok(ch) = conn.create_channel().await {
                        let _ = ch
                            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                    let _ = conn.close(200, "bye".into()).await;
                }
            });
        })
        .join();
    }
}
